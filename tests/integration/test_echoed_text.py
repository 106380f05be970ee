"""Issue 18, item 4: text a person sent (a subject, a file name) is echoed in the reply, so it
must never make the reply fail to render. A URL in a subject used to dead-letter the mail at
once (``RenderError: links outside <base_url>``, from the HTML ``<title>``), and the person
never heard back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_pipeline import SHOTS, caught, deliver, drain, inbound, photo_mail
from waypost.apps.journeys.samples import Shot, make_photo

URL_SUBJECTS = (
    "Photos from https://maps.google.com/?q=lisbon",
    "see www.example.com, javascript:alert(1) and mailto:eve@evil.example",
)


@pytest.mark.parametrize("subject", URL_SUBJECTS)
def test_a_url_in_the_subject_still_gets_the_journey_reply(runtime: Any, subject: str) -> None:
    runtime.allowlist.add("ann@example.org")
    message_id = deliver(runtime, photo_mail(subject=subject))
    drain(runtime)

    assert inbound(runtime, message_id).status == "processed"
    (reply,) = caught(runtime)
    assert "\n" not in str(reply["Subject"]) and str(reply["Subject"]).startswith("Re: ")
    text = " ".join(reply.get_body(("plain",)).get_content().split())
    html = reply.get_body(("html",)).get_content()
    for shown in (str(reply["Subject"]), text, html):
        assert "google.com" not in shown and "evil.example" not in shown and "www.example" not in shown
    if "lisbon" in subject:  # the person still reads what they wrote, as text
        assert "“Photos from maps\u2024google\u2024com/?q=lisbon”" in text
        assert str(reply["Subject"]) == "Re: Photos from maps\u2024google\u2024com/?q=lisbon"


def test_a_url_in_the_subject_of_a_mail_without_photos_gets_its_answer(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message_id = deliver(runtime, photo_mail(shots=(), subject="Trip https://evil.example/x"))
    drain(runtime)

    assert inbound(runtime, message_id).status == "processed"
    (reply,) = caught(runtime)
    assert str(reply["Subject"]) == "Re: Trip evil\u2024example/x"  # their subject, kept as text


def test_urls_in_file_names_and_a_thread_title_are_echoed_as_text(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    first = photo_mail(subject="Lisbon via https://bit.ly/abc")
    first.add_attachment(make_photo(Shot(None, None, None, "no fix"), seed=9), maintype="image", subtype="jpeg",
                         filename="from www.evil.example, x.jpg")
    deliver(runtime, first)
    drain(runtime)
    follow_up = photo_mail(shots=SHOTS[:1], subject="Re: Lisbon via https://bit.ly/abc")
    follow_up.replace_header("Message-ID", "<second@example.org>")
    follow_up["In-Reply-To"] = str(caught(runtime)[0]["Message-ID"])
    deliver(runtime, follow_up)
    drain(runtime)

    replies = caught(runtime)
    assert len(replies) == 2
    texts = {str(reply["In-Reply-To"]): " ".join(reply.get_body(("plain",)).get_content().split()) for reply in replies}
    for text in texts.values():
        assert "“Lisbon via bit\u2024ly/abc”" in text
    update = texts.pop("<second@example.org>")
    (ready,) = texts.values()
    assert "from www\u2024evil\u2024example, x.jpg: no location" in ready
    # the update says only what changed: the first reply's photos to check are not listed again
    assert "x.jpg" not in update
    # one subject for the whole thread, the person's own
    assert {str(reply["Subject"]) for reply in replies} == {"Re: Lisbon via bit\u2024ly/abc"}
