"""Confirmation links in mail that asks its reader to prove they hold an address: SES identity
verification ("Amazon Web Services – Email Address Verification Request", a link to
``https://email-verification.<region>.amazonaws.com/…``), a registrar's or a certificate
authority's domain validation, a provider's sign-up confirmation.

Waypost only reads such a link out of the message so that the operator can see it; nothing here
or anywhere else in Waypost fetches it. Following it is the operator's decision: a link in mail
from a stranger may confirm something the operator never asked for.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser

# only https: an http link would be a confirmation anyone on the path could read or change
HTTPS_LINK = re.compile(r"https://[^\s<>\"'`{}|\\^\[\]]+", re.IGNORECASE)
# the words a confirmation mail uses for what it asks; without one, a link is just a link
ASKS_TO_CONFIRM = re.compile(r"verif|confirm|validat|activat", re.IGNORECASE)
TRAILING = ".,;:!?)'\""  # sentence punctuation after a link in plain text is not part of it
LINK_LIMIT = 5
LINK_LENGTH = 2048  # longer is no confirmation link a person could use (SES's are about 600)
TEXT_LIMIT = 256 * 1024  # characters of each part that are searched


class _Hrefs(HTMLParser):
    """The href of every <a> in an HTML part, and its visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value.strip() for name, value in attrs if name == "href" and value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def confirmation_links(raw: bytes) -> tuple[str, ...]:
    """The https links of a mail that asks to verify or confirm something, from its text/plain
    and text/html parts (attachments are not read), best first: links whose own address says
    verify/confirm/validate/activate lead. Empty when the subject and text never ask, or no part
    has an https link. Never raises on malformed input."""
    try:
        message = message_from_bytes(raw, policy=policy.default)
    except Exception:  # the parser's defects are many kinds; an unreadable mail has no link
        return ()
    if not isinstance(message, EmailMessage):
        return ()
    texts, links = [str(message.get("Subject", ""))], []
    for part in _text_parts(message):
        body = _content(part)
        if part.get_content_subtype() == "html":
            found, body = _html_links(body)
            links.extend(found)
        texts.append(body)
        links.extend(link.rstrip(TRAILING) for link in HTTPS_LINK.findall(body))
    if not ASKS_TO_CONFIRM.search(" ".join(texts)):
        return ()
    unique = list(dict.fromkeys(link for link in links if len(link) <= LINK_LENGTH and HTTPS_LINK.fullmatch(link)))
    unique.sort(key=lambda link: not ASKS_TO_CONFIRM.search(link))  # stable: mail order otherwise
    return tuple(unique[:LINK_LIMIT])


def _text_parts(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk()
            if part.get_content_maintype() == "text" and part.get_content_subtype() in ("plain", "html")
            and not part.is_attachment()]


def _content(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # unknown charset, broken transfer encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return str(content)[:TEXT_LIMIT]


def _html_links(html: str) -> tuple[list[str], str]:
    """(the https hrefs, the visible text) of an HTML part."""
    parser = _Hrefs()
    try:
        parser.feed(html)
        parser.close()
    except AssertionError:  # HTMLParser's own complaint about markup it cannot read
        pass
    return [href for href in parser.hrefs if href.lower().startswith("https://")], " ".join(parser.text)
