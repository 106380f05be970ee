"""Inbound mail through gate, router, journeys app and outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa

from tests.conftest import wait_until
from waypost.apps.journeys.samples import Shot, make_photo
from waypost.pipeline.inbox import ReceivedMail
from waypost.store.models import inbound_messages, jobs, journeys, outbound_messages, photos

LISBON = timezone(timedelta(hours=1))
SHOTS = (
    Shot(38.6916, -9.2160, datetime(2024, 7, 13, 9, 4, tzinfo=LISBON), "Belém"),
    Shot(38.7139, -9.1334, datetime(2024, 7, 13, 11, 52, tzinfo=LISBON), "Castelo"),
    Shot(38.7876, -9.3906, datetime(2024, 7, 13, 14, 21, tzinfo=LISBON), "Pena"),
)


def photo_mail(sender: str = "ann@example.org", shots: tuple[Shot, ...] = SHOTS, *,
               subject: str = "Lisbon", reverse: bool = True) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Ann <{sender}>"
    message["To"] = "journeys@waypost.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '')}-{len(shots)}@example.org>"
    message["Date"] = "Sat, 13 Jul 2024 20:00:00 +0100"
    message.set_content("photos attached")
    ordered = list(reversed(shots)) if reverse else list(shots)  # mail order differs from time order
    for index, shot in enumerate(ordered):
        message.add_attachment(make_photo(shot, seed=index), maintype="image", subtype="jpeg",
                               filename=f"{shot.label}.jpg")
    return message


def deliver(runtime: Any, message: EmailMessage | bytes) -> str:
    raw = message if isinstance(message, bytes) else message.as_bytes()
    return runtime.inbox.accept(ReceivedMail(raw=raw, mail_from="ann@example.org",
                                             rcpt_tos=("journeys@waypost.test",), peer_ip="127.0.0.1"))


def drain(runtime: Any) -> None:
    worker = runtime.worker()
    for _ in range(100):
        if not worker.run_once():
            return
    raise AssertionError("the queue did not drain")


def inbound(runtime: Any, message_id: str) -> sa.Row:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(inbound_messages).where(inbound_messages.c.id == message_id)).one()


def caught(runtime: Any) -> list[email.message.EmailMessage]:
    directory = runtime.settings.outbox_dir
    files = sorted(directory.glob("*.eml")) if directory.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]


def count(runtime: Any, table: sa.Table) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def test_allowed_sender_gets_one_threaded_reply_with_the_journey(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message = photo_mail()
    message_id = deliver(runtime, message)
    drain(runtime)

    assert inbound(runtime, message_id).status == "processed"
    (reply,) = caught(runtime)
    assert reply["To"] == "ann@example.org"
    assert reply["In-Reply-To"] == message["Message-ID"]
    assert message["Message-ID"] in reply["References"]
    assert reply["Auto-Submitted"] == "auto-replied"
    # the envelope sender is a VERP address naming this reply's outbound row
    return_path = str(reply["Return-Path"]).strip("<>")
    assert return_path.startswith("bounces+") and return_path.endswith("@waypost.test")
    with runtime.engine.connect() as conn:
        outbound_id = conn.execute(sa.select(outbound_messages.c.id)).scalar_one()
    assert runtime.verp.outbound_id(return_path) == outbound_id
    assert "Lisbon" in reply["Subject"]
    assert str(reply["Message-ID"]).endswith("@waypost.test>")
    text = reply.get_body(("plain",)).get_content()
    html = reply.get_body(("html",)).get_content()
    with runtime.engine.connect() as conn:
        token = conn.execute(sa.select(journeys.c.token)).scalar_one()
    for body in (text, html):
        assert f"{runtime.settings.public_base_url}/j/{token}" in body
        assert "/privacy" in body and "/terms" in body and runtime.settings.operator_address in body
    assert "3 photos, 3 on the map" in text
    assert "Where you were:" in text and "Sintra" in text  # Pena palace, named offline

    view = runtime.journeys.view(token)
    assert [p.filename for p in view.route] == ["Belém.jpg", "Castelo.jpg", "Pena.jpg"]
    assert [p.taken_at for p in view.route] == [s.taken_at.astimezone(UTC) for s in SHOTS]
    assert view.start == SHOTS[0].taken_at and view.start.utcoffset() == timedelta(hours=1)


def test_sender_not_on_the_allowlist_is_refused_without_any_reply(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message_id = deliver(runtime, photo_mail(sender="mallory@example.net"))
    drain(runtime)
    row = inbound(runtime, message_id)
    assert row.status == "refused" and "sender-not-allowlisted" in row.reason and "mallory" in row.reason
    assert caught(runtime) == [] and count(runtime, outbound_messages) == 0 and count(runtime, journeys) == 0


def test_domain_entry_allows_everyone_at_that_domain(runtime: Any) -> None:
    runtime.allowlist.add("example.org")
    deliver(runtime, photo_mail(sender="bob+travel@Example.ORG"))
    drain(runtime)
    assert len(caught(runtime)) == 1


def test_mail_without_photos_gets_a_helpful_reply_and_no_journey(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    deliver(runtime, photo_mail(shots=(), subject="nothing"))
    drain(runtime)
    (reply,) = caught(runtime)
    assert reply["Subject"] == "Re: nothing"  # their subject, kept in their thread
    assert "No photos found" in reply.get_body(("plain",)).get_content()
    assert count(runtime, journeys) == 0


def test_the_same_photo_twice_is_stored_once(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message = photo_mail(shots=(SHOTS[1],))
    same = make_photo(SHOTS[0])
    for name in ("first.jpg", "again.jpg"):
        message.add_attachment(same, maintype="image", subtype="jpeg", filename=name)
    deliver(runtime, message)
    drain(runtime)
    assert count(runtime, photos) == 2


def test_malformed_mail_is_dead_lettered_with_its_reason_and_raw_bytes_kept(runtime: Any) -> None:
    message_id = deliver(runtime, b"\r\n\r\n")
    drain(runtime)
    row = inbound(runtime, message_id)
    assert row.status == "dead" and "MalformedMessage" in row.reason
    assert runtime.blobs.get(row.blob_key) == b"\r\n\r\n"
    assert runtime.queue.depth() == {"dead": 1}
    assert caught(runtime) == []


def test_transient_failures_are_retried_then_dead_lettered(runtime: Any, monkeypatch: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message_id = deliver(runtime, photo_mail())
    calls = []

    def broken(job: Any) -> None:
        calls.append(job.attempts)
        raise OSError("disk went away")

    worker = runtime.worker()
    worker.handlers["inbound"] = broken
    wait_until(lambda: (worker.run_once(), inbound(runtime, message_id).status == "dead")[1], timeout=30,
               message="the message to be dead-lettered")
    assert calls == list(range(1, runtime.settings.worker.max_attempts + 1))
    assert "OSError: disk went away" in inbound(runtime, message_id).reason


def test_a_rerun_of_a_committed_job_changes_nothing(runtime: Any) -> None:
    """Two workers holding the same job (a lease that expired mid-run) commit one journey."""
    runtime.allowlist.add("ann@example.org")
    message_id = deliver(runtime, photo_mail())
    job = runtime.queue.claim("first")
    processor = runtime.processor
    processor.process(job)
    with runtime.engine.begin() as conn:  # the second holder's run starts from the top
        conn.execute(inbound_messages.update().values(status="queued"))
    processor.process(job)
    drain(runtime)
    assert count(runtime, journeys) == 1 and count(runtime, outbound_messages) == 1
    assert len(caught(runtime)) == 1
    assert inbound(runtime, message_id).status == "processed"


def test_dead_letter_is_listed_and_retried_to_completion(runtime: Any) -> None:
    from waypost.pipeline.deadletters import DeadLetters

    message_id = deliver(runtime, photo_mail())  # not yet allowlisted: the gate would refuse it
    worker = runtime.worker()
    worker.handlers["inbound"] = lambda job: (_ for _ in ()).throw(OSError("disk went away"))
    wait_until(lambda: (worker.run_once(), inbound(runtime, message_id).status == "dead")[1], timeout=30,
               message="the message to be dead-lettered")
    letters = DeadLetters(runtime.queue)
    (letter,) = letters.list()
    assert letter.kind == "inbound" and letter.subject == f"message {message_id}"
    assert "disk went away" in letter.reason and letter.attempts == runtime.settings.worker.max_attempts

    runtime.allowlist.add("ann@example.org")  # the operator fixes the cause, then retries
    assert letters.retry(letter.job_id) is True
    assert letters.retry(letter.job_id) is False, "only dead jobs can be retried"
    assert inbound(runtime, message_id).status == "queued"
    drain(runtime)
    assert inbound(runtime, message_id).status == "processed" and len(caught(runtime)) == 1
    assert letters.list() == []


def test_lease_expired_on_the_last_attempt_marks_the_message_dead(runtime: Any, make_settings: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message_id = deliver(runtime, photo_mail())
    with runtime.engine.begin() as conn:  # as if a worker died holding the job on its last attempt
        conn.execute(jobs.update().values(state="running", attempts=runtime.settings.worker.max_attempts,
                                          locked_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert runtime.worker().run_once() is True
    row = inbound(runtime, message_id)
    assert row.status == "dead" and "lease expired" in row.reason


def test_raw_mail_with_the_originals_is_deleted_once_processed(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message_id = deliver(runtime, photo_mail())
    blob_key = inbound(runtime, message_id).blob_key
    assert runtime.blobs.exists(blob_key)

    drain(runtime)  # the journey, then the purge job (due at once with the default of 0 days)

    row = inbound(runtime, message_id)
    assert row.status == "processed" and row.raw_deleted_at is not None
    assert not runtime.blobs.exists(blob_key)
    view = runtime.journeys.view(_only_token(runtime))
    assert len(view.photos) == 3  # the derived images and the journey stay
    for photo_row in _photo_rows(runtime):
        assert runtime.blobs.exists(photo_row.display_key) and runtime.blobs.exists(photo_row.thumb_key)


def test_operator_can_keep_originals_for_a_while(make_settings: Any, database_url: str) -> None:
    from waypost import runtime as wiring

    kept = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                      journeys={"keep_originals_days": 7}))
    try:
        kept.allowlist.add("ann@example.org")
        message_id = deliver(kept, photo_mail())
        drain(kept)

        row = inbound(kept, message_id)
        assert row.status == "processed" and row.raw_deleted_at is None and kept.blobs.exists(row.blob_key)
        with kept.engine.connect() as conn:
            purge = conn.execute(sa.select(jobs).where(jobs.c.kind == "purge-raw")).one()
        assert purge.payload == {"message_id": message_id} and purge.state == "queued"
        due_in = purge.run_after - row.processed_at
        assert timedelta(days=7) - timedelta(minutes=1) < due_in < timedelta(days=7) + timedelta(minutes=1)
    finally:
        kept.close()


def test_refused_mail_keeps_its_raw_bytes(runtime: Any) -> None:
    message_id = deliver(runtime, photo_mail(sender="mallory@example.net"))
    drain(runtime)

    row = inbound(runtime, message_id)
    assert row.status == "refused" and row.raw_deleted_at is None and runtime.blobs.exists(row.blob_key)


def _only_token(runtime: Any) -> str:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(journeys.c.token)).scalar_one()


def _photo_rows(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(photos)).all()


def test_what_the_reader_left_out_is_named_in_the_reply(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message = photo_mail(shots=())
    message.add_attachment(b"\x78\x9f\x3e\x22" + b"\x00" * 64, maintype="application", subtype="ms-tnef",
                           filename="winmail.dat")
    message.add_attachment(b"PK\x03\x04" + b"\x00" * 64, maintype="application", subtype="zip",
                           filename="trip.zip")
    deliver(runtime, message)
    drain(runtime)

    (reply,) = caught(runtime)
    text = " ".join(reply.get_body(("plain",)).get_content().split())
    assert "Left out:" in text
    # file names are echoed with their dots neutralised (see compose.unlinked)
    assert "winmail\u2024dat: Outlook's TNEF format is not read" in text
    assert "trip\u2024zip: archives are not opened" in text
