"""Retention of every other store of personal data (retention.*): mail to the service mailboxes,
the bytes of sent messages, message rows, feedback payloads, audit entries and, when asked for,
idle journeys. For each store a row older than its setting goes and a newer one stays, on SQLite
and PostgreSQL. Time is moved by writing old timestamps into rows, never by waiting."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.integration.test_pipeline import deliver, drain, inbound, photo_mail
from waypost import runtime as wiring
from waypost.cli import cli
from waypost.clock import utcnow
from waypost.config import Settings
from waypost.pipeline.inbox import ReceivedMail
from waypost.pipeline.retention import holdings
from waypost.store.models import (
    audit_log,
    erasure_requests,
    feedback_events,
    inbound_messages,
    journeys,
    outbound_messages,
    photos,
)


@pytest.fixture
def wired(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Callable[..., Any]]:
    """A Runtime on the parametrized database with the given settings; ann@example.org allowed."""
    built: list[Any] = []

    def build(**overrides: Any) -> Any:
        runtime = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                             **overrides))
        runtime.allowlist.add("ann@example.org")
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.close()


def _ago(days: float) -> Any:
    return utcnow() - timedelta(days=days)


def _set(runtime: Any, table: sa.Table, ident: object, **values: Any) -> None:
    with runtime.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == ident).values(**values))


def _ids(runtime: Any, table: sa.Table, *where: Any) -> set[Any]:
    with runtime.engine.connect() as conn:
        return set(conn.execute(sa.select(table.c.id).where(*where)).scalars())


def _to_postmaster(runtime: Any, subject: str) -> str:
    raw = (f"From: stranger@example.net\r\nTo: postmaster@waypost.test\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject}@example.net>\r\n\r\nyour server is fine\r\n").encode()
    message_id = runtime.inbox.accept(ReceivedMail(raw=raw, mail_from="stranger@example.net",
                                                   rcpt_tos=("postmaster@waypost.test",), peer_ip="127.0.0.1"))
    drain(runtime)
    assert inbound(runtime, message_id).status == "processed"
    return message_id


def _journey_mail(runtime: Any, subject: str) -> str:
    message_id = deliver(runtime, photo_mail(subject=subject))
    drain(runtime)
    assert inbound(runtime, message_id).status == "processed"
    return message_id


def test_mail_to_the_service_mailboxes_loses_its_raw_bytes_after_service_mail_days(wired: Any) -> None:
    runtime = wired()
    old, new = _to_postmaster(runtime, "old"), _to_postmaster(runtime, "new")  # default: 30 days
    _set(runtime, inbound_messages, old, processed_at=_ago(31))
    _set(runtime, inbound_messages, new, processed_at=_ago(29))

    counts = runtime.retention().sweep()

    assert counts.service_raw == 1
    gone = inbound(runtime, old)
    assert gone.raw_deleted_at is not None and not runtime.blobs.exists(gone.blob_key)
    kept = inbound(runtime, new)
    assert kept.raw_deleted_at is None and runtime.blobs.exists(kept.blob_key)
    assert runtime.retention().sweep().service_raw == 0, "a second sweep finds nothing more"


def test_mail_whose_purge_job_is_pending_is_left_to_that_job(wired: Any) -> None:
    runtime = wired(journeys={"keep_originals_days": 60})
    message_id = _journey_mail(runtime, "Lisbon")
    _set(runtime, inbound_messages, message_id, processed_at=_ago(45))

    assert runtime.retention().sweep().service_raw == 0
    row = inbound(runtime, message_id)
    assert row.raw_deleted_at is None and runtime.blobs.exists(row.blob_key)


def test_sent_messages_lose_their_bytes_after_sent_raw_days(wired: Any) -> None:
    runtime = wired()
    _journey_mail(runtime, "Lisbon")
    _journey_mail(runtime, "Porto")
    old, new = sorted(_ids(runtime, outbound_messages, outbound_messages.c.state == "sent"))
    _set(runtime, outbound_messages, old, sent_at=_ago(31))
    _set(runtime, outbound_messages, new, sent_at=_ago(29))

    assert runtime.retention().sweep().sent_raw == 1
    with runtime.engine.connect() as conn:
        raw = dict(conn.execute(sa.select(outbound_messages.c.id, outbound_messages.c.raw)).all())
    assert raw[old] == b"" and raw[new].startswith(b"") and len(raw[new]) > 100


def test_message_rows_go_once_their_bytes_are_gone_and_nothing_needs_them(wired: Any) -> None:
    runtime = wired()
    journey_mail = _journey_mail(runtime, "Lisbon")  # its raw goes at once; the journey needs the row
    old, new = _to_postmaster(runtime, "old"), _to_postmaster(runtime, "new")
    for message_id, days in ((journey_mail, 91), (old, 91), (new, 89)):  # default: 90 days
        _set(runtime, inbound_messages, message_id, raw_deleted_at=_ago(days), processed_at=_ago(days))
    (sent,) = _ids(runtime, outbound_messages)
    _journey_mail(runtime, "Porto")
    (recent,) = _ids(runtime, outbound_messages) - {sent}
    _set(runtime, outbound_messages, sent, sent_at=_ago(91))
    _set(runtime, outbound_messages, recent, sent_at=_ago(89), raw=b"")

    counts = runtime.retention().sweep()

    assert (counts.inbound_rows, counts.outbound_rows) == (1, 1)
    assert old not in _ids(runtime, inbound_messages)
    assert {journey_mail, new} <= _ids(runtime, inbound_messages)
    assert _ids(runtime, outbound_messages) == {recent}


def _feedback(runtime: Any, key: str, days: float) -> int:
    with runtime.engine.begin() as conn:
        return int(conn.execute(feedback_events.insert().values(
            dedupe_key=key, kind="bounce", source="dsn", recipient="ann@example.org", outcome="recorded",
            received_at=_ago(days), raw="Final-Recipient: rfc822; ann@example.org")).inserted_primary_key[0])


def test_feedback_payloads_are_emptied_after_feedback_raw_days(wired: Any) -> None:
    runtime = wired()
    old, new = _feedback(runtime, "a" * 64, 31), _feedback(runtime, "b" * 64, 29)

    assert runtime.retention().sweep().feedback_raw == 1
    with runtime.engine.connect() as conn:
        raw = dict(conn.execute(sa.select(feedback_events.c.id, feedback_events.c.raw)).all())
    assert raw[old] == "" and raw[new].startswith("Final-Recipient")
    assert _ids(runtime, feedback_events) == {old, new}, "what the policy made of it stays"


def _audit(runtime: Any, action: str, days: float) -> int:
    with runtime.engine.begin() as conn:
        return int(conn.execute(audit_log.insert().values(
            at=_ago(days), actor="visitor", action=action, target="1", ip="203.0.113.0/24")).inserted_primary_key[0])


def test_audit_entries_and_journey_views_go_after_their_own_periods(wired: Any) -> None:
    runtime = wired()
    old_view, new_view = _audit(runtime, "journey.view", 31), _audit(runtime, "journey.view", 29)
    old_entry, new_entry = _audit(runtime, "allowlist.add", 181), _audit(runtime, "allowlist.add", 179)

    assert runtime.retention().sweep().audit == 2
    assert _ids(runtime, audit_log) == {new_view, new_entry}
    assert not {old_view, old_entry} & _ids(runtime, audit_log)


def test_erasure_requests_go_once_their_wait_for_a_yes_is_over(wired: Any) -> None:
    runtime = wired()
    with runtime.engine.begin() as conn:
        for ident, expires in (("over", _ago(0.01)), ("waiting", _ago(-1))):
            conn.execute(erasure_requests.insert().values(
                id=ident, address="ann@example.org", source_message_id=f"m-{ident}",
                confirmation_message_id=f"<{ident}@waypost.test>", created_at=_ago(7), expires_at=expires))

    assert runtime.retention().sweep().erasure_requests == 1
    assert _ids(runtime, erasure_requests) == {"waiting"}


def test_keep_never_deletes_and_zero_deletes_at_the_next_sweep(wired: Any) -> None:
    runtime = wired(retention={"audit_days": "keep", "audit_views_days": 0})
    ancient, view = _audit(runtime, "allowlist.add", 3000), _audit(runtime, "journey.view", 0.001)

    assert runtime.retention().sweep().audit == 1
    assert _ids(runtime, audit_log) == {ancient}
    assert view not in _ids(runtime, audit_log)


def test_idle_journeys_are_kept_unless_the_operator_sets_a_period(wired: Any) -> None:
    kept = wired()
    _journey_mail(kept, "Lisbon")
    (journey_id,) = _ids(kept, journeys)
    _set(kept, journeys, journey_id, updated_at=_ago(3000))
    assert kept.retention().sweep().journeys == 0
    assert _ids(kept, journeys) == {journey_id}


def test_journeys_idle_longer_than_idle_journeys_days_go_with_their_images(wired: Any) -> None:
    runtime = wired(retention={"idle_journeys_days": 365})
    _journey_mail(runtime, "Lisbon")
    (idle,) = _ids(runtime, journeys)
    with runtime.engine.connect() as conn:
        images = [key for row in conn.execute(sa.select(photos.c.thumb_key, photos.c.display_key)) for key in row]
    _set(runtime, journeys, idle, updated_at=_ago(366))
    _journey_mail(runtime, "Porto")  # the same photos: the images are shared with the new journey
    (active,) = _ids(runtime, journeys) - {idle}

    assert runtime.retention().sweep().journeys == 1
    assert _ids(runtime, journeys) == {active}
    assert all(runtime.blobs.exists(key) for key in images), "images another journey shows stay"

    _set(runtime, journeys, active, updated_at=_ago(366))
    assert runtime.retention().sweep().journeys == 1
    assert not _ids(runtime, journeys) and not any(runtime.blobs.exists(key) for key in images)


def test_the_catchers_files_of_sent_mail_go_after_sent_raw_days(wired: Any) -> None:
    runtime = wired()
    _journey_mail(runtime, "Lisbon")
    _journey_mail(runtime, "Porto")
    old, new = sorted(runtime.settings.outbox_dir.glob("*.eml"))
    written = (_ago(31).timestamp(), _ago(29).timestamp())
    for path, when in zip((old, new), written, strict=True):
        os.utime(path, (when, when))
    stores = {held.store: held for held in holdings(runtime.retention())}
    catcher = stores["catcher outbox"]
    assert catcher.rows == 2 and catcher.bytes == old.stat().st_size + new.stat().st_size
    assert catcher.next_goes == datetime.fromtimestamp(written[0], UTC) + timedelta(days=30)

    assert runtime.retention().sweep().catcher_files == 1

    assert not old.exists() and new.exists()
    assert runtime.retention().sweep().catcher_files == 0


def test_the_catchers_files_are_kept_when_sent_bytes_are(wired: Any) -> None:
    runtime = wired(retention={"sent_raw_days": "keep"})
    _journey_mail(runtime, "Lisbon")
    (reply,) = runtime.settings.outbox_dir.glob("*.eml")
    os.utime(reply, (_ago(400).timestamp(), _ago(400).timestamp()))

    assert runtime.retention().sweep().catcher_files == 0 and reply.exists()


def test_retention_command_lists_every_store_with_its_rows_setting_and_next_deletion(
        wired: Any, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = wired()
    old = _to_postmaster(runtime, "old")
    _set(runtime, inbound_messages, old, processed_at=_ago(10))
    _to_postmaster(runtime, "new")
    _audit(runtime, "journey.view", 1)
    monkeypatch.setenv("WAYPOST_DATABASE__URL", database_url)
    data_dir = str(runtime.settings.data_dir)

    table = CliRunner().invoke(cli, ["retention", "--data-dir", data_dir])
    listed = CliRunner().invoke(cli, ["retention", "--data-dir", data_dir, "--json"])

    assert table.exit_code == 0, table.output
    line = next(line for line in table.output.splitlines() if line.startswith("service mailboxes"))
    assert line.split()[2] == "2" and "30 days" in line and "retention.service_mail_days" in line
    assert f"{(_ago(10) + timedelta(days=30)):%Y-%m-%d}" in line
    stores = {entry["store"]: entry for entry in json.loads(listed.output)}
    assert stores["service mailboxes"]["rows"] == 2 and stores["service mailboxes"]["bytes"] > 0
    assert stores["journey views"]["rows"] == 1 and stores["journey views"]["period_days"] == 30
    assert stores["journeys"]["period_days"] is None and stores["journeys"]["next_goes"] is None
    assert {"refused mail", "dead mail", "sent messages", "inbound messages", "outbound messages",
            "feedback payloads", "audit log", "exports"} <= set(stores)
