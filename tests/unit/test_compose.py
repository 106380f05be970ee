"""Composing messages: one template source for both parts, the headers every message
carries, and the render-time refusals (broken templates, foreign links)."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path
from typing import Any

import pytest

from waypost.config import load_settings
from waypost.outbound.compose import Attachment, Composer, Draft, InlineImage, RenderError, reflow
from waypost.outbound.unsubscribe import UnsubscribeTokens

TOKENS = UnsubscribeTokens([b"compose-test-key-0123456789"])


def composer(tmp_path: Path, templates: dict[str, str], **settings: Any) -> Composer:
    directory = tmp_path / "templates"
    for name, text in templates.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text, encoding="utf-8")
    layout = '{% extends "base.jinja" %}{% block stream_note %}You asked for this.{% endblock %}'
    (directory / "t" / "_layout.jinja").parent.mkdir(parents=True, exist_ok=True)
    (directory / "t" / "_layout.jinja").write_text(layout, encoding="utf-8")
    config = load_settings(tmp_path / "data", base_url="https://waypost.example.org", mail_domain="example.org",
                           **settings)
    return Composer(config, [directory], TOKENS)


MESSAGE = """{% extends "t/_layout.jinja" %}{% import "_blocks.jinja" as b with context %}
{% block body %}{{ b.heading("Hello " ~ name) }}
{% call b.para() %}A long paragraph that goes on and on so that the plain text part has to wrap it
somewhere before the seventy-second column, the way mail has always looked.{% endcall %}
{{ b.button(base_url ~ "/j/abc", "Open") }}
{% call b.bullets() %}{% call b.item() %}first {{ title|unlinked }}{% endcall %}{% endcall %}
{% endblock %}"""


def compose(tmp_path: Path, template: str = MESSAGE, **context: Any) -> email.message.EmailMessage:
    made = composer(tmp_path, {"t/m.jinja": template}).compose(Draft(
        "t/m", "ann@example.org", "Hi", "journeys", {"name": "Ann <b>", "title": "Trip", **context},
        in_reply_to="<in@example.net>", references=("<a@example.net>",)))
    return email.message_from_bytes(made.raw, policy=email.policy.default)  # type: ignore[return-value]


def test_one_source_gives_matching_text_and_html(tmp_path: Path) -> None:
    message = compose(tmp_path)
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()

    assert text.startswith("Hello Ann <b>\n\nA long paragraph")
    assert all(len(line) <= 72 for line in text.splitlines() if "://" not in line)
    assert "Open:\n\n  https://waypost.example.org/j/abc" in text
    assert "  - first Trip" in text
    assert "<h1" in html and "Hello Ann &lt;b&gt;" in html  # escaped in HTML only
    assert '<a href="https://waypost.example.org/j/abc"' in html and "<li>first Trip</li>" in html
    for part in (text, html):  # the footer of invariant 5, in both
        assert "You asked for this." in part and "operator@example.org" in part
        assert "https://waypost.example.org/privacy" in part and "https://waypost.example.org/terms" in part
        assert "https://waypost.example.org/u/" in part


def test_headers_every_message_carries(tmp_path: Path) -> None:
    message = compose(tmp_path)

    assert message["From"] == "Waypost journeys <journeys@example.org>"
    assert str(message["Message-ID"]).endswith("@example.org>") and message["Date"]
    assert message["In-Reply-To"] == "<in@example.net>"
    assert message["References"] == "<a@example.net> <in@example.net>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https = str(message["List-Unsubscribe"]).split(",")[0].strip("<> ")
    assert TOKENS.read(https.rsplit("/", 1)[1]).address == "ann@example.org"


def test_a_link_anywhere_but_our_base_url_is_refused_at_render(tmp_path: Path) -> None:
    for body in ('<a href="https://bit.ly/abc">x</a>', "see http://example.com/x", '<img src="http://t.co/p.gif">',
                 '<a href="https://waypost.example.org.evil.test/j">x</a>'):
        template = ('{% extends "t/_layout.jinja" %}{% import "_blocks.jinja" as b with context %}'
                    '{% block body %}{% call b.para() %}' + body + '{% endcall %}{% endblock %}')
        with pytest.raises(RenderError, match="links outside https://waypost.example.org"):
            compose(tmp_path, template)


def test_urls_in_what_people_sent_are_echoed_without_becoming_links(tmp_path: Path) -> None:
    message = compose(tmp_path, title="see https://evil.example/x or bit.ly/abc, ann@evil.example.com")
    text = message.get_body(("plain",)).get_content()
    assert "see evil\u2024example/x or bit\u2024ly/abc, ann@evil\u2024example\u2024com" in text
    assert "evil.example" not in text and "bit.ly" not in text
    plain = compose(tmp_path, title="Trip 3, 12.5 km, IMG_0001.JPG, invoice.zip").get_body(("plain",)).get_content()
    assert "Trip 3, 12.5 km, IMG_0001.JPG, invoice\u2024zip" in plain  # .zip is a top-level domain


def test_a_template_that_does_not_render_raises_before_anything_is_queued(tmp_path: Path) -> None:
    broken = '{% extends "t/_layout.jinja" %}{% block body %}{{ missing_variable }}{% endblock %}'
    with pytest.raises(RenderError, match="missing_variable"):
        compose(tmp_path, broken)


def test_attachments_travel_with_both_parts(tmp_path: Path) -> None:
    made = composer(tmp_path, {"t/m.jinja": MESSAGE}).compose(Draft(
        "t/m", "ann@example.org", "Hi", "journeys", {"name": "Ann", "title": "Trip"},
        attachments=(Attachment("trip.gpx", "application/gpx+xml", b"<gpx/>"),)))
    message = email.message_from_bytes(made.raw, policy=email.policy.default)

    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "trip.gpx" and attachment.get_content() == b"<gpx/>"
    assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None


PICTURE = '{% if "route" in inline %}{{ b.picture(inline.route, "Map of the route", 512, 269) }}{% endif %}'
PICTURED = MESSAGE.replace("{% endblock %}", PICTURE + "\n{% endblock %}")


def test_an_inline_picture_is_a_related_part_the_html_refers_to_by_cid(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    made = composer(tmp_path, {"t/m.jinja": PICTURED}).compose(Draft(
        "t/m", "ann@example.org", "Hi", "journeys", {"name": "Ann", "title": "Trip"},
        inline=(InlineImage("route", "image/png", png),)))
    message = email.message_from_bytes(made.raw, policy=email.policy.default)

    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.get_payload()  # type: ignore[misc]
    assert plain.get_content_type() == "text/plain" and "cid:" not in plain.get_content()
    assert related.get_content_type() == "multipart/related"
    html, image = related.get_payload()
    source = re.search(r'<img src="cid:([^"]+)" alt="Map of the route"', html.get_content())
    assert source, html.get_content()
    assert image.get_content_type() == "image/png" and image.get_content() == png
    assert image["Content-ID"] == f"<{source.group(1)}>" and image.get_content_disposition() == "inline"
    # without the picture the same template shows none, and a cid the message does not carry is refused
    plain_only = compose(tmp_path, PICTURED)
    assert plain_only.get_body(("html",)).get_content_type() == "text/html"  # type: ignore[union-attr]
    with pytest.raises(RenderError, match="cid:elsewhere"):
        compose(tmp_path, MESSAGE.replace("{% endblock %}", '<img src="cid:elsewhere@example.org">{% endblock %}'))


def test_reflow_never_breaks_a_url() -> None:
    url = "https://waypost.example.org/j/" + "x" * 90
    assert url in reflow(f"open {url} now").splitlines()
    assert reflow("a " * 60, indent="  - ").splitlines()[1].startswith("    a")


def test_a_url_in_the_subject_is_echoed_in_the_title_and_header_as_text(tmp_path: Path) -> None:
    """Issue 18: the HTML <title> echoed the subject unfiltered, and the link check refused the reply."""
    made = composer(tmp_path, {"t/m.jinja": MESSAGE}).compose(Draft(
        "t/m", "ann@example.org", "Photos from https://maps.google.com/?q=lisbon\r\nBcc: eve@evil.example",
        "journeys", {"name": "Ann", "title": "Trip"}))
    message = email.message_from_bytes(made.raw, policy=email.policy.default)

    shown = "Photos from maps\u2024google\u2024com/?q=lisbon  Bcc: eve@evil\u2024example"  # CR LF: two spaces
    assert made.subject == str(message["Subject"]) == shown and message["Bcc"] is None
    assert f"<title>{shown}</title>" in message.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_a_template_once_compiled_is_not_looked_at_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    making = composer(tmp_path, {"t/m.jinja": MESSAGE})
    draft = Draft("t/m", "ann@example.org", "Hi", "journeys", {"name": "Ann", "title": "Trip"})
    first = making.compose(draft)
    (tmp_path / "templates" / "t" / "m.jinja").write_text("changed", encoding="utf-8")

    def no_stat(*args: Any, **kwargs: Any) -> float:
        raise AssertionError("a template file was looked at again")

    monkeypatch.setattr("os.path.getmtime", no_stat)
    again = making.compose(draft)
    # the templates ship with the code: what changes them restarts the process
    assert "Hello Ann" in again.raw.decode() and again.subject == first.subject
    assert "changed" not in again.raw.decode()
