"""Threads: a reply to a journey's mail (or to its reply address) adds to that journey."""

from __future__ import annotations

import email.utils
import re
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa

from tests.integration.test_pipeline import LISBON, caught, count, drain, inbound, photo_mail
from waypost.apps.journeys.samples import Shot, make_photo
from waypost.mail.parse import parse_message
from waypost.pipeline.inbox import ReceivedMail
from waypost.pipeline.router import InboundMail
from waypost.store.models import journeys, outbound_messages, photos

MORE = (
    Shot(38.7077, -9.1365, datetime(2024, 7, 13, 18, 30, tzinfo=LISBON), "Baixa"),
    Shot(38.6979, -9.2067, datetime(2024, 7, 13, 20, 45, tzinfo=LISBON), "Tower"),
)


def send(runtime: Any, message: EmailMessage, *, sender: str = "ann@example.org",
         rcpt: str = "journeys@waypost.test") -> str:
    return runtime.inbox.accept(ReceivedMail(raw=message.as_bytes(), mail_from=sender, rcpt_tos=(rcpt,),
                                             peer_ip="127.0.0.1"))


def answer(original: EmailMessage, reply: EmailMessage, shots: tuple[Shot, ...], *,
           sender: str = "ann@example.org", threaded: bool = True, seed: int = 10) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = str(reply["Reply-To"])
    message["Subject"] = str(reply["Subject"])  # a mail client keeps a subject that starts with "Re:"
    message["Message-ID"] = email.utils.make_msgid(domain="example.org")
    message["Date"] = "Sat, 13 Jul 2024 22:00:00 +0100"
    if threaded:
        message["In-Reply-To"] = reply["Message-ID"]
        message["References"] = f"{original['Message-ID']} {reply['Message-ID']}"
    message.set_content("a few more")
    for index, shot in enumerate(shots):
        message.add_attachment(make_photo(shot, seed=seed + index), maintype="image", subtype="jpeg",
                               filename=f"{shot.label}.jpg")
    return message


def first_journey(runtime: Any) -> tuple[EmailMessage, EmailMessage]:
    """Ann, allowlisted, mails the Lisbon photos; returns her mail and the reply she got."""
    runtime.allowlist.add("ann@example.org")
    first = photo_mail()
    send(runtime, first)
    drain(runtime)
    (ready,) = caught(runtime)
    return first, ready


def journey_rows(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(journeys).order_by(journeys.c.id)).all()


def test_reply_in_thread_adds_photos_to_the_journey(runtime: Any) -> None:
    first, ready = first_journey(runtime)
    assert str(ready["Reply-To"]).startswith("journeys+") and str(ready["Reply-To"]).endswith("@waypost.test")

    # the mail client answers to Reply-To and threads with In-Reply-To/References
    second = answer(first, ready, MORE)
    message_id = send(runtime, second, rcpt=str(ready["Reply-To"]))
    drain(runtime)

    assert inbound(runtime, message_id).status == "processed"
    (journey,) = journey_rows(runtime)
    assert journey.title == "Lisbon"  # the first mail's subject stays the title
    view = runtime.journeys.view(journey.token)
    assert [p.filename for p in view.route] == ["Belém.jpg", "Castelo.jpg", "Pena.jpg", "Baixa.jpg", "Tower.jpg"]
    updated = next(m for m in caught(runtime) if m["In-Reply-To"] == second["Message-ID"])
    # one subject for the whole thread: theirs, as a person would answer
    assert str(ready["Subject"]) == str(updated["Subject"]) == "Re: Lisbon"
    text = updated.get_body(("plain",)).get_content()
    assert text.startswith("2 new photos in your journey\n")
    # only what changed: the stops the new photos went to, numbered as on the page
    lines = [line for line in text.splitlines() if re.match(r"\s+- \d+\. ", line)]
    assert len(lines) >= 1 and all("new photo" in line for line in lines), text
    assert sum(int(re.search(r"(\d+) new photos?$", line).group(1)) for line in lines) == 2  # type: ignore[union-attr]
    assert "Photos to check" not in text and "UTC" not in text
    assert updated["Reply-To"] == ready["Reply-To"]


def test_reply_address_alone_finds_the_journey(runtime: Any) -> None:
    # some clients drop In-Reply-To; the +token in the address still says which journey
    first, ready = first_journey(runtime)

    send(runtime, answer(first, ready, MORE, threaded=False), rcpt=str(ready["Reply-To"]))
    drain(runtime)

    assert count(runtime, journeys) == 1 and count(runtime, photos) == 5


def test_reply_address_survives_a_relay_that_upper_cases_it(runtime: Any) -> None:
    first, ready = first_journey(runtime)
    local, domain = str(ready["Reply-To"]).split("@")

    send(runtime, answer(first, ready, MORE, threaded=False), rcpt=f"{local.upper()}@{domain}")
    drain(runtime)

    assert count(runtime, journeys) == 1 and count(runtime, photos) == 5


def test_a_photo_sent_again_in_the_thread_is_stored_once(runtime: Any) -> None:
    first, ready = first_journey(runtime)
    again = answer(first, ready, ())
    for part in first.iter_attachments():  # the very same files
        again.add_attachment(part.get_content(), maintype="image", subtype="jpeg", filename=part.get_filename())

    send(runtime, again, rcpt=str(ready["Reply-To"]))
    drain(runtime)

    assert count(runtime, photos) == 3
    updated = next(m for m in caught(runtime) if m["In-Reply-To"] == again["Message-ID"])
    assert "already had the photos in your message, so nothing changed" in updated.get_body(("plain",)).get_content()


def test_someone_else_replying_in_the_thread_starts_their_own_journey(runtime: Any) -> None:
    runtime.allowlist.add("bob@example.org")
    first, ready = first_journey(runtime)

    send(runtime, answer(first, ready, MORE, sender="bob@example.org"), sender="bob@example.org",
         rcpt=str(ready["Reply-To"]))
    drain(runtime)

    ann, bob = journey_rows(runtime)
    assert (ann.owner_address, bob.owner_address) == ("ann@example.org", "bob@example.org")
    assert len(runtime.journeys.view(ann.token).photos) == 3
    assert len(runtime.journeys.view(bob.token).photos) == 2


def test_a_new_thread_starts_a_new_journey(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    send(runtime, photo_mail())
    send(runtime, photo_mail(shots=MORE, subject="Evening walk"))
    drain(runtime)

    assert [row.title for row in journey_rows(runtime)] == ["Lisbon", "Evening walk"]


def test_rerunning_a_thread_reply_changes_nothing(runtime: Any) -> None:
    first, ready = first_journey(runtime)
    second = answer(first, ready, MORE)
    mail_id = send(runtime, second, rcpt=str(ready["Reply-To"]))
    drain(runtime)
    replies = len(caught(runtime))

    # the same mail handled again (a crash after the commit, a retried dead letter): no new effects
    app = runtime.router.apps[("journeys", runtime.settings.mail_domain)]
    mail = InboundMail(id=mail_id, message=parse_message(second.as_bytes()), sender="ann@example.org",
                       recipient=str(ready["Reply-To"]), received_at=datetime.now(LISBON))
    with runtime.engine.begin() as conn:
        app.handle(mail)(conn)

    assert count(runtime, photos) == 5 and len(caught(runtime)) == replies
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbound_messages)).scalar() == replies
