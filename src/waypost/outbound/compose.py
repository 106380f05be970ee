"""Build transactional messages from templates, with the headers every Waypost message
carries (invariant 5).

A message template is one file (``<app>/<name>.jinja``) rendered twice, as HTML and as plain
text, with the building blocks of ``templates/_blocks.jinja``; layouts nest base → stream →
message. Rendering happens before anything is queued, and a message that fails to render, or
links anywhere but our own base URL (no shorteners, no third-party links), never reaches the
outbox.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from waypost.config import Settings
from waypost.errors import PermanentError
from waypost.mail.addresses import AddressError, domain_of, format_mailbox
from waypost.outbound.control import OPERATOR_STREAM
from waypost.outbound.unsubscribe import UnsubscribeTokens
from waypost.store.models import utcnow

LAYOUTS = Path(__file__).with_name("templates")
TEXT_WIDTH = 72
# any scheme with slashes: the safety net for links a template itself writes
_URL_IN_TEXT = re.compile(r"""[a-z][a-z0-9+.-]{0,31}://[^\s<>"')\]]+""", re.IGNORECASE)


class RenderError(PermanentError):
    """A message could not be rendered, or would link somewhere it must not."""


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # "application/gpx+xml"
    data: bytes


@dataclass(frozen=True)
class InlineImage:
    """A picture the HTML part shows in place: sent beside it in a multipart/related part and
    referred to by a ``cid:`` URL (RFC 2392). A template finds that URL as ``inline[name]``."""

    name: str  # "route"
    content_type: str  # "image/png"
    data: bytes


@dataclass(frozen=True)
class Draft:
    template: str  # "<app>/<name>": renders <name>.jinja as HTML and as text
    to: str
    subject: str
    stream: str  # which kind of mail (the unsubscribe token and the pause switch use it)
    context: dict[str, Any] = field(default_factory=dict)
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    reply_to: str | None = None  # where the person's answer should go, when not to From
    attachments: tuple[Attachment, ...] = ()
    inline: tuple[InlineImage, ...] = ()  # pictures the HTML part shows (the text part goes without)


@dataclass(frozen=True)
class Composed:
    raw: bytes
    message_id: str
    subject: str


def reflow(value: str, indent: str = "") -> str:
    """One paragraph of plain text: whitespace joined, wrapped at 72 columns, URLs unbroken."""
    words = " ".join(str(value).split())
    return textwrap.fill(words, width=TEXT_WIDTH, initial_indent=indent, subsequent_indent=" " * len(indent),
                         break_long_words=False, break_on_hyphens=False)


# Invisible characters can hide a link from our checks (a zero-width space inside "b.ly",
# which browsers drop) or reorder what the person sees (U+202E turns "gpj.exe" around).
# The two joiners stay: emoji sequences and several scripts need them.
_KEPT_FORMAT = frozenset({"\u200c", "\u200d"})
# a scheme as RFC 3986 §3.1 spells it, with the slashes (or backslashes, which browsers
# read as slashes), wherever it starts; or, as a word of its own and right before what it
# acts on, one of the schemes clients act on without slashes ("Data: trip" stays)
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,31}:[/\\]+|(?<!\w)(?:mailto|javascript|vbscript|data|file|tel|sms|callto"
                     r"|blob):(?=\S)", re.IGNORECASE)
# A host name as mail clients autolink it is word characters with a dot before a letter
# ("evil.example", "evil.xn--p1ai"). Each word is looked at once and each dot by its two
# neighbours: a pattern that backtracks over a 4 KB word would make rendering quadratic.
_WORD = re.compile(r"[\w\u200c\u200d.-]+")
_HOST_DOT = re.compile(r"(?<=[\w\u200c\u200d-])\.(?=[^\W\d_])")
_WWW = re.compile(r"(?<!\w)www\.", re.IGNORECASE)  # clients link "www.x" whatever follows
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")  # "127.0.0.1" is linked too
# dots that IDNA reads as "." in a host name (UTS #46), when a host name could follow
_DOT_LOOKALIKES = re.compile(r"[\u3002\uff0e\uff61](?=[A-Za-z0-9])")
ONE_DOT_LEADER = "\u2024"  # looks like a full stop; no client reads it as part of a host name
# photo file extensions that are no top-level domain, so "IMG_0001.jpg" stays as it is
# (.zip and .mov are domains, and stay neutralised)
_FILE_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "heic", "heif", "png", "webp", "tif", "tiff", "avif", "gif",
                              "dng", "bmp", "jfif"})


def unlinked(value: object) -> str:
    """Text a person gave us (a subject, a file name, an EXIF string), echoed back so it cannot
    become a link or break the message: one line of visible characters, URL schemes gone, and
    the dots of host-like words become U+2024, which looks the same but is not autolinked ("see
    bit.ly/x" would otherwise be a link in a signed mail from us). Idempotent; never raises."""
    text = _without_schemes(_visible(str(value)))
    text = _WWW.sub(lambda match: match.group(0)[:3] + ONE_DOT_LEADER, _DOT_LOOKALIKES.sub(ONE_DOT_LEADER, text))
    text = _IPV4.sub(lambda match: match.group(0).replace(".", ONE_DOT_LEADER), text)
    return _WORD.sub(_neutralise_word, text)


def _visible(text: str) -> str:
    """Line breaks and other controls become spaces (a subject stays one header line);
    invisible format characters go."""
    return "".join(" " if _is_break(char) else char for char in text
                   if char in _KEPT_FORMAT or unicodedata.category(char) != "Cf")


def _is_break(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def _without_schemes(text: str) -> str:
    # again until nothing changes: taking one scheme out must not join the text around it into another
    while (shorter := _SCHEME.sub("", text)) != text:
        text = shorter
    return text


def _neutralise_word(match: re.Match[str]) -> str:
    word = match.group(0)
    if word.count(".") == 1 and word.rsplit(".", 1)[1].lower() in _FILE_EXTENSIONS:
        return word
    return _HOST_DOT.sub(ONE_DOT_LEADER, word)


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


class Composer:
    def __init__(self, settings: Settings, template_dirs: list[Path], tokens: UnsubscribeTokens,
                 filters: dict[str, Callable[..., str]] | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        loader = jinja2.FileSystemLoader([LAYOUTS, *template_dirs])
        # The templates ship with the code and change only with it (a restart): never checked
        # again once compiled. Jinja's default stats each template file and the files it
        # extends or includes on every render, some 15 stat calls a reply.
        self.text_env = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.StrictUndefined,
                                           keep_trailing_newline=True, auto_reload=False)
        self.html_env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                                           auto_reload=False)
        self.text_env.filters.update({"reflow": reflow, "unlinked": unlinked, **(filters or {})})
        self.html_env.filters.update({"reflow": _unflowed, "unlinked": unlinked, **(filters or {})})

    def load_templates(self) -> int:
        """Compile every template now, as text and as HTML, and answer how many there are: the
        first reply otherwise waits about 0.2 s for its templates (``Runtime.warm_up``)."""
        names = [name for name in self.text_env.list_templates() if name.endswith(".jinja")]
        for env in (self.text_env, self.html_env):
            for name in names:
                env.get_template(name)
        return len(names)

    def compose(self, draft: Draft) -> Composed:
        """Render and assemble; raises RenderError before anything is queued. Mail to the operator
        (stream ``operator``) carries no unsubscribe link: one click must not silence the alarms."""
        one_click: str | None = None
        mailto: str | None = None
        if draft.stream != OPERATOR_STREAM:
            one_click, mailto = self.tokens.links(draft.to, draft.stream, base_url=self.settings.public_base_url,
                                                  mailto=self.settings.unsubscribe_address)
        # the subject echoes what the person wrote (their own subject, their journey's title)
        subject = unlinked(draft.subject)
        cids = {image.name: make_msgid(idstring=image.name, domain=self.settings.mail_domain)[1:-1]
                for image in draft.inline}
        inline = {name: f"cid:{cid}" for name, cid in cids.items()}
        context = {**self._common_context(), **draft.context, "subject": subject, "unsubscribe_url": one_click,
                   "inline": inline}
        text, html = self._render(f"{draft.template}.jinja", context, frozenset(inline.values()))
        message = self._headers(draft, subject, one_click, mailto)
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        html_part = message.get_body(("html",))
        for image in draft.inline:  # the HTML part becomes multipart/related: the page and its pictures
            maintype, _, subtype = image.content_type.partition("/")
            html_part.add_related(image.data, maintype=maintype, subtype=subtype,  # type: ignore[union-attr]
                                  cid=f"<{cids[image.name]}>", disposition="inline", filename=f"{image.name}.{subtype}")
        for attachment in draft.attachments:
            maintype, _, subtype = attachment.content_type.partition("/")
            message.add_attachment(attachment.data, maintype=maintype, subtype=subtype or "octet-stream",
                                   filename=attachment.filename)
        # Header lines may be up to 998 characters (RFC 5322 §2.1.1). At the default 78 the
        # folder cannot break a long URI and RFC 2047-encodes the whole List-Unsubscribe value,
        # which receivers then do not read as URIs.
        raw = message.as_bytes(policy=message.policy.clone(max_line_length=998))
        return Composed(raw, str(message["Message-ID"]), subject)

    def _render(self, name: str, context: dict[str, Any], inline: frozenset[str] = frozenset()) -> tuple[str, str]:
        try:
            text = _tidy_text(self.text_env.get_template(name).render(context, fmt="text"))
            html = self.html_env.get_template(name).render(context, fmt="html")
        except jinja2.TemplateError as err:
            raise RenderError(f"template {name} did not render: {type(err).__name__}: {err}") from err
        self.check_links(text, html, inline)
        return text, html

    def _headers(self, draft: Draft, subject: str, one_click: str | None, mailto: str | None) -> EmailMessage:
        message = EmailMessage()
        message["From"] = format_mailbox(self.settings.reply_from_name, self.settings.reply_address)
        message["To"] = draft.to
        if draft.reply_to:
            message["Reply-To"] = draft.reply_to
        message["Subject"] = subject
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = make_msgid(domain=self.settings.mail_domain)
        if draft.in_reply_to:
            message["In-Reply-To"] = draft.in_reply_to
            message["References"] = " ".join((*draft.references, draft.in_reply_to)[-20:])
        # RFC 3834 §5: an automatic response says so, which stops auto-reply loops.
        message["Auto-Submitted"] = "auto-replied"
        if one_click is not None:
            # RFC 8058: an https URI (and a mailto one) that unsubscribes with one POST
            message["List-Unsubscribe"] = f"<{one_click}>, <{mailto}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return message

    def check_links(self, text: str, html: str, inline: frozenset[str] = frozenset()) -> None:
        """Every link points at our base URL, mails our own domain, or is one of the message's
        own ``inline`` pictures (``cid:`` URLs); else RenderError."""
        links = {link.rstrip(".,;:!?") for link in _URL_IN_TEXT.findall(text)}
        collector = _LinkCollector()
        collector.feed(html)
        collector.close()
        links.update(collector.links)
        links.update(link.rstrip(".,;:!?") for link in _URL_IN_TEXT.findall(collector.text))
        bad = sorted(link for link in links if link not in inline and not self._allowed(link))
        if bad:
            raise RenderError(f"links outside {self.settings.public_base_url}: {', '.join(bad[:5])}")

    def _allowed(self, link: str) -> bool:
        base = self.settings.public_base_url
        if link == base or link.startswith(base + "/") or link.startswith(base + "?") or link.startswith("#"):
            return True
        if link.lower().startswith("mailto:"):
            address = link[len("mailto:"):].split("?", 1)[0]
            try:
                return domain_of(address) in (self.settings.mail_domain, domain_of(self.settings.operator_address))
            except AddressError:
                return False
        return False

    def _common_context(self) -> dict[str, Any]:
        base = self.settings.public_base_url
        return {
            "operator_name": self.settings.operator_name,
            "operator_email": self.settings.operator_address,
            "privacy_url": f"{base}/privacy",
            "terms_url": f"{base}/terms",
            "base_url": base,
            "quote": quote,
        }


class _LinkCollector(HTMLParser):
    """Every URL-bearing attribute of rendered HTML, and its visible text."""

    URL_ATTRIBUTES = frozenset({"href", "src", "action", "background", "poster", "formaction", "srcset"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in self.URL_ATTRIBUTES and value:
                if name == "srcset":
                    self.links.extend(part.strip().split(" ", 1)[0] for part in value.split(",") if part.strip())
                else:
                    self.links.append(value.strip())

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    @property
    def text(self) -> str:
        return " ".join(self._text)


def _unflowed(value: str, indent: str = "") -> str:
    """HTML flows by itself: the text filter ``reflow`` leaves the HTML as it is."""
    return value


_REPLY_PREFIX = re.compile(r"^\s*re\s*:", re.IGNORECASE)


def reply_subject(subject: str) -> str:
    """``Re: <their subject>`` in every answer of a thread, as a person would reply: mail
    clients (Gmail among them) group a thread by its subject as well as by its headers."""
    if not subject.strip():
        return "Re: your photos"
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}"
