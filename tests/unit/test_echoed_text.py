"""Every message template the Composer knows, rendered with hostile text in every field that
echoes what a person (or a photo, or the outside world) gave us: issue 18, item 4.

Whatever the text, the render must not fail (a failed render dead-letters the mail and the
person never hears back), must link nowhere but our base URL, must carry no markup of its
own, must keep the Subject on one line, and must still show the person what they wrote, as
text that no mail client turns into a link."""

from __future__ import annotations

import email
import email.policy
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from waypost.apps.journeys.build import JourneyView, PhotoPoint, build_view, describe_moment
from waypost.apps.journeys.handler import TEMPLATES as JOURNEY_TEMPLATES
from waypost.apps.journeys.places import Place
from waypost.apps.journeys.story import reply_context
from waypost.config import load_settings
from waypost.outbound.compose import Composer, Draft, InlineImage, unlinked
from waypost.outbound.unsubscribe import UnsubscribeTokens
from waypost.reputation.alarms import Alarm
from waypost.reputation.digest import KINDS, Notice
from waypost.reputation.notify import TEMPLATES as OPERATOR_TEMPLATES

BASE_URL = "https://waypost.example.org"
OUR_DOMAINS = ("waypost.example.org", "example.org")
LISBON = timezone(timedelta(hours=1))
EVIL_HOSTS = ("evil.example", "maps.google.com", "bit.ly", "example.com", "evil.xn--p1ai", "127.0.0.1")

HOSTILE = (
    "Photos from https://maps.google.com/?q=lisbon, or bit.ly/abc",
    "http://evil.example/x https://evil.example:8443/p?q=1#f ftp://evil.example/f",
    "mailto:eve@evil.example javascript:alert(document.cookie) JAVASCRIPT:alert(1) vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg== file:///etc/passwd file://evil.example/share",
    "custom-scheme://evil.example/x web+app://x intent://evil.example#Intent;end tel:+15555550100 sms:+1555",
    "www.example.com and bare evil.example, evil.xn--p1ai, 127.0.0.1:8080, ann@evil.example.com",
    "https:/\\evil.example https:\\\\evil.example //evil.example/x htthttps://ps://evil.example",
    "evil\u3002example evil\uff0eexample evil\uff61example evil\u200b.example evil\u00ad.example e\u200dvil.example",
    '<script>alert(1)</script><a href="https://evil.example">x</a><img src=x onerror=alert(1)>',
    "&lt;script&gt; &#60;script&#62; &#x3c;a href=&#x22;https://evil.example&#x22;&#x3e; &amp;lt; ]]> <!-- -->",
    "\"'><svg/onload=alert(1)> {{ 7*7 }} {% raw %} ${7*7} `x`",
    "photo\u202egpj.exe \u202bRTL\u202c \u2066iso\u2069 \u200f\u200e \u061c \ufeffbom \U000e0041tag",
    "zero\u200bwidth\u200cjoin\u200djoin\u2060word\u180evowel",
    "line\r\nBcc: eve@evil.example\r\n\r\n<b>body</b> \n \r \x0b \x0c \x1c \x85 \u2028 \u2029 \x00 \x1b[31m",
    "non-BMP \U0001f600 \U0001f468\u200d\U0001f469\u200d\U0001f467 \U00010348 \U0001d54f \U0010fffd",
    "x" * 4096,
    "https://evil.example/" + "a" * 4096,
    ("evil.example " * 320)[:4096],
    "Sintra, Lisbon, Portugal — IMG_0001.jpg, 12.5 km, invoice.zip, Ærø, 東京。大阪, Zürich",
    "",
)

# pieces hypothesis mixes with arbitrary text, so a hostile fragment can land anywhere in a field
PIECES = st.sampled_from([
    "https://", "http://", "ftp://", "mailto:", "javascript:", "data:", "file://", "x-y+z.1://", "www.", ".", "。",
    "evil", "example", "com", "xn--p1ai", "@", "/", "\\", ":", "<", ">", "&", "&#", ";", '"', "'", "<script>",
    "<a href=", "\r\n", "\n", "\u202e", "\u200b", "\u200d", "\u2028", "\U0001f600", " ", "jpg", "127.0.0.1",
])
HOSTILE_TEXT = st.one_of(
    st.sampled_from(HOSTILE),
    st.lists(st.one_of(PIECES, st.text(max_size=12)), max_size=30).map("".join),
    st.tuples(st.sampled_from(HOSTILE), st.text(max_size=40)).map("".join),
)


@dataclass(frozen=True)
class Case:
    """One template's draft, and the echoed values its body must show (readably)."""

    draft: Draft
    shown: tuple[str, ...]


def journey_view(hostile: str) -> JourneyView:
    """A journey whose title, photo file names, EXIF-borne problems and place names are all ``hostile``."""
    start = datetime(2024, 7, 13, 9, 4, tzinfo=LISBON).astimezone(UTC)
    points = [
        _point("a", hostile, start, (38.6916, -9.2160)),
        _point("b", hostile + ".jpg", start + timedelta(hours=3), (38.7876, -9.3906)),
        _point("c", hostile, None, None,
               f"no location: the one in the photo is unusable (GPS latitude unreadable: {hostile!r})"),
        _point("d", "IMG_0004.jpg", None, None, f"could not read the image: {hostile}"),
    ]

    def locate(latitude: float, longitude: float) -> Place:
        return Place(name=hostile, region=hostile if latitude > 38.7 else None, country_code="PT", country="Portugal")

    return build_view(hostile, "token", start, points, locate=locate)


def _point(public_id: str, filename: str, taken_at: datetime | None, position: tuple[float, float] | None,
           problem: str | None = None) -> PhotoPoint:
    latitude, longitude = position or (None, None)
    return PhotoPoint(public_id=public_id, filename=filename, mail_position=ord(public_id), taken_at=taken_at,
                      utc_offset_minutes=60 if taken_at else None, time_source="exif" if taken_at else "none",
                      latitude=latitude, longitude=longitude, problem=problem)


def _journey_shown(view: JourneyView) -> tuple[str, ...]:
    photos = [text for photo in view.needs_attention for text in (photo.label, photo.issue or "")]
    return (view.title, *photos, *(visit.label for visit in view.visits[:12]))


def _updated_shown(view: JourneyView) -> tuple[str, ...]:
    """The update reply names only what the mail added: its photos to check, the stops they went to."""
    changes = reply_context(view, 2)["changes"]
    photos = [text for photo in changes.attention for text in (photo.label, photo.issue or "")]  # type: ignore[attr-defined]
    return (view.title, *photos, *(line.label for line in changes.stops))  # type: ignore[attr-defined]


def journey_reply(template: str) -> Callable[[str], Case]:
    def case(hostile: str) -> Case:
        view = journey_view(hostile)
        context = {"journey": view, "url": f"{BASE_URL}/j/token", "ignored": [hostile, f"text/{hostile}"],
                   "added": 2, "repeated": 1, "hidden": 1, "notes": [hostile, f"{hostile}: archives are not opened"],
                   **reply_context(view, 2)}
        shown = _updated_shown(view) if template.endswith("updated") else _journey_shown(view)
        draft = replace(_draft(template, f"Re: {hostile}", context), inline=(InlineImage("route", "image/png", PNG),))
        return Case(draft, (*shown, *context["ignored"], *context["notes"]))
    return case


def command_help(hostile: str) -> Case:
    context = {"asked": False, "commands": (("help", "this message"),), "ignored": [hostile, f"application/{hostile}"],
               "notes": [hostile]}
    return Case(_draft("journeys/help", f"No photos found in “{hostile}”", context),
                (*context["ignored"], *context["notes"]))


def command_list(hostile: str) -> Case:
    created = datetime(2024, 7, 13, 21, 0, tzinfo=UTC)
    entries = [{"title": hostile, "created": created, "photos": 3, "state": "live", "url": f"{BASE_URL}/j/token"},
               {"title": f"{hostile} 2", "created": created, "photos": 1, "state": "revoked", "url": None}]
    return Case(_draft("journeys/list", "Your journeys", {"entries": entries}), (hostile, f"{hostile} 2"))


def command_reply(template: str) -> Callable[[str], Case]:
    """The answers to rename, new link, revoke link, delete, stop, start and an unplaced command:
    the journey's title (and the old one) are the person's text."""

    def case(hostile: str) -> Case:
        context = {"title": hostile, "old_title": f"old {hostile}", "url": f"{BASE_URL}/j/token", "photos": 2,
                   "returned": True, "command": "rename"}
        shown = {"journeys/renamed": (hostile, f"old {hostile}"), "journeys/link_new": (hostile,),
                 "journeys/link_revoked": (hostile,), "journeys/deleted": (hostile,)}.get(template, ())
        return Case(_draft(template, f"Renamed: {hostile}", context), shown)
    return case


def people_request(template: str) -> Callable[[str], Case]:
    """The answers to export, delete my data and yes: nothing of the person's is echoed but the
    subject; the export link is ours."""

    def case(hostile: str) -> Case:
        context = {"days": 7, "url": f"{BASE_URL}/x/token", "expires_at": datetime(2024, 7, 20, 21, 0, tzinfo=UTC)}
        return Case(_draft(template, f"Re: {hostile}", context), ())
    return case


def privacy_zone(template: str) -> Callable[[str], Case]:
    """The answers to `hide home`: the place as the person wrote it, the journey's title and its
    place names are echoed."""

    def case(hostile: str) -> Case:
        context = {"title": hostile, "where": f"{hostile} 2", "places": [f"{hostile} 3", "Sintra"], "hidden": [3, 4],
                   "radius": 500.0, "url": f"{BASE_URL}/j/token"}
        shown = (hostile, f"{hostile} 2") + ((f"{hostile} 3",) if template.endswith("hide_where") else ())
        return Case(_draft(template, f"Re: {hostile}", context), shown)
    return case


def rate_limited(hostile: str) -> Case:
    context = {"window_minutes": 60, "until": datetime(2024, 7, 13, 21, 0, tzinfo=UTC)}
    return Case(_draft("journeys/rate_limited", f"Not processed: {hostile}", context), ())


def alarm(hostile: str) -> Case:
    fired = Alarm(name=hostile, firing=True, value=1.0, threshold=0.0, detail=f"journeys paused by ses: {hostile}",
                  advice=hostile)
    context = {"alarm": fired, "since": datetime(2024, 7, 13, 21, 0, tzinfo=UTC), "interval_hours": "6"}
    return Case(_draft("operator/alarm", f"Waypost alarm: {hostile}", context, stream="operator"),
                (fired.name, fired.detail, fired.advice))


def digest(hostile: str) -> Case:
    when = datetime(2024, 7, 13, 21, 0, tzinfo=UTC)
    found = [Notice(at=when, kind=kind, address=hostile, detail=f"{kind}: {hostile}") for kind, _ in KINDS]
    context = {"notices": found, "since": when, "kinds": KINDS, "interval_minutes": "60"}
    return Case(_draft("operator/digest", f"Waypost: {hostile}", context, stream="operator"), (hostile,))


def forward(hostile: str) -> Case:
    context = {"mailbox": "abuse@example.org", "sender": hostile, "original_subject": hostile,
               "received_at": datetime(2024, 7, 13, 21, 0, tzinfo=UTC), "excerpt": hostile, "attached": False,
               "inbox_id": "0123abcd"}
    return Case(_draft("operator/forward", f"[abuse@example.org] {hostile}", context, stream="operator"), (hostile,))


def _draft(template: str, subject: str, context: dict[str, Any], stream: str = "journeys") -> Draft:
    context = {"journeys_address": "journeys@example.org", **context}
    return Draft(template, "ann@example.org", subject, stream, context, in_reply_to="<in@example.net>",
                 reply_to="journeys+abc@example.org")


CASES: dict[str, Callable[[str], Case]] = {
    "journeys/journey_ready": journey_reply("journeys/journey_ready"),
    "journeys/journey_updated": journey_reply("journeys/journey_updated"),
    "journeys/rate_limited": rate_limited,
    "journeys/help": command_help,
    "journeys/list": command_list,
    **{f"journeys/{name}": command_reply(f"journeys/{name}")
       for name in ("renamed", "link_new", "link_revoked", "deleted", "stopped", "started", "which_journey")},
    **{f"journeys/{name}": people_request(f"journeys/{name}")
       for name in ("export_ready", "erase_confirm", "erased", "nothing_to_confirm")},
    **{f"journeys/{name}": privacy_zone(f"journeys/{name}") for name in ("hidden", "hide_where")},
    "operator/alarm": alarm,
    "operator/digest": digest,
    "operator/forward": forward,
}


@pytest.fixture(scope="module")
def composer(tmp_path_factory: pytest.TempPathFactory) -> Composer:
    """Built as runtime.build builds it: the same template folders and filters."""
    config = load_settings(tmp_path_factory.mktemp("data"), base_url=BASE_URL, mail_domain="example.org")
    return Composer(config, [JOURNEY_TEMPLATES, OPERATOR_TEMPLATES],
                    UnsubscribeTokens([b"echo-test-key-0123456789abcdef"]), filters={"moment": describe_moment})


def test_every_message_template_has_a_hostile_case() -> None:
    templates = {f"{path.parent.name}/{path.stem}" for folder in (JOURNEY_TEMPLATES, OPERATOR_TEMPLATES)
                 for path in folder.glob("*/*.jinja") if not path.name.startswith("_")}
    assert templates == set(CASES), "a new message template needs a case here, with every field it echoes"


@pytest.mark.parametrize("template", sorted(CASES))
@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda value: ascii(value[:24]))
def test_hostile_text_in_every_echoed_field_renders_safely(composer: Composer, template: str, hostile: str) -> None:
    assert_safe_render(composer, CASES[template](hostile))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(template=st.sampled_from(sorted(CASES)), hostile=HOSTILE_TEXT)
def test_any_text_in_every_echoed_field_renders_safely(composer: Composer, template: str, hostile: str) -> None:
    assert_safe_render(composer, CASES[template](hostile))


@given(HOSTILE_TEXT)
@example("htthttps://ps://evil.example")
@example("http:a:////evil.example")
def test_unlinked_text_is_one_line_of_visible_text_without_links(value: str) -> None:
    shown = unlinked(value)
    assert unlinked(shown) == shown  # idempotent: a subject echoed twice reads the same
    assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in shown)
    assert not any(unicodedata.category(c) == "Cf" and c not in "\u200c\u200d" for c in shown)
    assert autolinks(shown) == []


def assert_safe_render(composer: Composer, case: Case) -> None:
    message = email.message_from_bytes(composer.compose(case.draft).raw, policy=email.policy.default)
    subject = str(message["Subject"])
    assert "\n" not in subject and "\r" not in subject and autolinks(subject) == []
    assert subject == unlinked(case.draft.subject)
    # nothing smuggled in through the subject; mail to the operator has no unsubscribe (its own stream)
    expected = HEADERS if case.draft.stream != "operator" else [h for h in HEADERS if not h.startswith("List-")]
    assert sorted(message.keys()) == sorted(expected)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    markup = Markup.read(html)
    assert "<script" not in html.lower() and markup.tags <= TEMPLATE_TAGS and markup.attributes <= TEMPLATE_ATTRIBUTES
    assert all(_ours(link) for link in markup.links), markup.links
    assert autolinks(text) == [] and autolinks(markup.text) == []
    flat = " ".join(text.split())
    for value in case.shown:  # the person still reads what they wrote, as plain text
        assert " ".join(unlinked(value).split()) in flat


HEADERS = ["From", "To", "Reply-To", "Subject", "Date", "Message-ID", "In-Reply-To", "References", "Auto-Submitted",
           "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Type", "MIME-Version"]
TEMPLATE_TAGS = frozenset({"html", "head", "meta", "title", "body", "div", "p", "h1", "h2", "ul", "li", "a", "img"})
TEMPLATE_ATTRIBUTES = frozenset({"lang", "charset", "name", "content", "style", "href", "src", "alt", "width",
                                 "height"})
PNG = b"\x89PNG\r\n\x1a\n"  # the route picture's bytes do not matter here, only how it is referred to


def _ours(link: str) -> bool:
    return (link.startswith(BASE_URL + "/") or link == "mailto:operator@example.org"
            or re.fullmatch(r"cid:[\w.]+\.route@example\.org", link) is not None)  # the route picture


class Markup(HTMLParser):
    """What a mail client acts on in the HTML part: its tags, attributes, link targets and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.links: list[str] = []
        self.parts: list[str] = []

    @classmethod
    def read(cls, html: str) -> Markup:
        markup = cls()
        markup.feed(html)
        markup.close()
        return markup

    @property
    def text(self) -> str:
        return " ".join(self.parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        self.links.extend(value or "" for name, value in attrs if name in ("href", "src", "action", "srcset"))

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


# What mail clients turn into links in text (a superset of Gmail's, Outlook's and Apple Mail's
# rules): a scheme with slashes, a scheme that acts without them, www., and host names or IPv4
# addresses with ASCII dots.
_AUTOLINKS = (
    re.compile(r"[a-z][a-z0-9+.-]{0,31}:[/\\]+\S*", re.IGNORECASE),
    re.compile(r"\b(?:mailto|javascript|vbscript|data|file|tel|sms|callto|blob):[\w/]\S*", re.IGNORECASE),
    re.compile(r"\bwww\.\S+", re.IGNORECASE),
    re.compile(r"(?<![\w.-])[\w-]+(?:\.[\w-]+)*\.(?:xn--[\w-]+|[a-z]{2,})\b", re.IGNORECASE | re.ASCII),
    re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"),
)
_PHOTO_FILE = re.compile(r"[^.\s]+\.(?:jpg|jpeg|jpe|heic|heif|png|webp|tif|tiff|avif|gif|dng|bmp|jfif)", re.IGNORECASE)


def autolinks(text: str) -> list[str]:
    """Every autolinkable run in ``text`` that is not ours (our base URL, our own domains) or
    a photo's file name."""
    return [found for found in _autolinked(text) if not _harmless(found)]


def _autolinked(text: str) -> Iterator[str]:
    for pattern in _AUTOLINKS:
        yield from (match.group(0) for match in pattern.finditer(text))


def _harmless(found: str) -> bool:
    if found.startswith(BASE_URL + "/") or found.rstrip(".,;:!?") == BASE_URL or _PHOTO_FILE.fullmatch(found):
        return True
    return found.rsplit("@", 1)[-1].lower().rstrip(".,;:!?") in OUR_DOMAINS


def test_the_hosts_of_the_hostile_strings_are_seen_as_links_by_the_check() -> None:
    """The check must be able to fail: on the raw hostile text it finds every host."""
    raw = " ".join(HOSTILE)
    found = " ".join(autolinks(raw))
    assert all(host in found for host in EVIL_HOSTS)
    assert "javascript:" in found.lower() and "custom-scheme://" in found and "mailto:" in found
