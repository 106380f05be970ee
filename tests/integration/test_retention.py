"""Retention (invariant 7): the raw bytes of refused and dead mail go after their periods,
blobs no row needs go after a grace period, and duplicate claims go once they can no longer
decide. Time is moved by writing old timestamps into rows
and old modification times onto blob files, never by waiting."""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_pipeline import deliver, drain, inbound, photo_mail
from waypost.clock import utcnow
from waypost.errors import PermanentError
from waypost.pipeline.deadletters import DeadLetters, RawDeleted
from waypost.store.models import JobState, inbound_dedupe, inbound_messages, jobs, photos


def _decided(runtime: Any, message_id: str, days_ago: float) -> None:
    """As if the message was refused or died ``days_ago`` days ago."""
    with runtime.engine.begin() as conn:
        conn.execute(inbound_messages.update().where(inbound_messages.c.id == message_id)
                     .values(processed_at=utcnow() - timedelta(days=days_ago)))


def _age(runtime: Any, key: str, age: timedelta) -> None:
    """As if the blob was written ``age`` ago."""
    when = (utcnow() - age).timestamp()
    os.utime(runtime.settings.blob_dir / key, (when, when))


def _refused(runtime: Any, days_ago: float) -> str:
    message_id = deliver(runtime, photo_mail(sender="mallory@example.net"))  # not allowlisted
    drain(runtime)
    assert inbound(runtime, message_id).status == "refused"
    _decided(runtime, message_id, days_ago)
    return message_id


def _dead(runtime: Any, days_ago: float) -> str:
    message_id = deliver(runtime, photo_mail())
    worker = runtime.worker()

    def unreadable(job: Any) -> None:
        raise PermanentError("not a mail message")

    worker.handlers["inbound"] = unreadable
    assert worker.run_once()
    assert inbound(runtime, message_id).status == "dead"
    _decided(runtime, message_id, days_ago)
    return message_id


def _raw_kept(runtime: Any, message_id: str) -> bool:
    row = inbound(runtime, message_id)
    return row.raw_deleted_at is None and runtime.blobs.exists(row.blob_key)


def test_refused_and_dead_mail_lose_their_raw_bytes_after_their_periods_and_keep_their_rows(runtime: Any) -> None:
    old_refused, new_refused = _refused(runtime, 8), _refused(runtime, 6)  # default: 7 days
    old_dead, new_dead = _dead(runtime, 31), _dead(runtime, 8)  # default: 30 days

    counts = runtime.retention().sweep()

    assert (counts.refused_raw, counts.dead_raw, counts.orphans) == (1, 1, 0)
    for gone, status in ((old_refused, "refused"), (old_dead, "dead")):
        row = inbound(runtime, gone)
        assert row.status == status and row.reason and row.raw_deleted_at is not None, "the row stays"
        assert not runtime.blobs.exists(row.blob_key)
    assert _raw_kept(runtime, new_refused) and _raw_kept(runtime, new_dead)
    assert runtime.retention().sweep().total == 0, "a second sweep finds nothing more"


def test_the_periods_come_from_the_settings(make_settings: Any, database_url: str) -> None:
    from waypost import runtime as wiring

    built = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                       retention={"refused_raw_days": 1, "dead_raw_days": 2}))
    try:
        refused, dead, young_dead = _refused(built, 1.5), _dead(built, 2.5), _dead(built, 1.5)
        assert built.retention().sweep().total == 2
        assert not _raw_kept(built, refused) and not _raw_kept(built, dead) and _raw_kept(built, young_dead)
    finally:
        built.close()


def test_a_dead_message_without_its_raw_bytes_cannot_be_retried(runtime: Any) -> None:
    message_id = _dead(runtime, 31)
    runtime.retention().sweep()
    letters = DeadLetters(runtime.queue)
    (letter,) = letters.list()

    with pytest.raises(RawDeleted, match=f"message {message_id} cannot be processed again: its raw bytes "
                                         r"were deleted on .* \(retention\.dead_raw_days\)"):
        letters.retry(letter.job_id)

    assert inbound(runtime, message_id).status == "dead"
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(jobs.c.state).where(jobs.c.id == letter.job_id)).scalar() == JobState.DEAD
    assert letters.discard(letter.job_id, "operator") is not None, "discarding it is what is left"


def test_a_dead_message_still_holding_its_raw_bytes_can_be_retried(runtime: Any) -> None:
    message_id = _dead(runtime, 8)
    runtime.retention().sweep()
    (letter,) = DeadLetters(runtime.queue).list()
    assert DeadLetters(runtime.queue).retry(letter.job_id) is True
    assert inbound(runtime, message_id).status == "queued"


def _orphan(runtime: Any, age: timedelta) -> str:
    key = f"inbound/2026/01/02/{uuid.uuid4().hex}.eml"  # as a kill before the row's commit leaves it
    runtime.blobs.put(key, b"From: ann@example.org\r\n\r\nphotos with GPS\r\n")
    _age(runtime, key, age)
    return key


def test_orphaned_blobs_older_than_the_grace_period_are_removed(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    old_orphan, young_orphan = _orphan(runtime, timedelta(hours=2)), _orphan(runtime, timedelta(minutes=30))
    queued = deliver(runtime, photo_mail(subject="Porto"))  # a row that still needs its bytes
    _age(runtime, inbound(runtime, queued).blob_key, timedelta(days=3))
    odd = "inbound/2026/01/02/not-an-id.eml"  # a name of another shape is judged by its blob key
    runtime.blobs.put(odd, b"x")
    _age(runtime, odd, timedelta(hours=2))

    counts = runtime.retention().sweep()

    assert counts.orphans == 2 and not runtime.blobs.exists(old_orphan) and not runtime.blobs.exists(odd)
    assert runtime.blobs.exists(young_orphan), "younger than the grace period: perhaps being stored now"
    assert _raw_kept(runtime, queued)


def test_a_raw_blob_whose_row_says_it_was_deleted_is_an_orphan(runtime: Any) -> None:
    message_id = deliver(runtime, photo_mail(sender="mallory@example.net"))
    key = inbound(runtime, message_id).blob_key
    with runtime.engine.begin() as conn:  # a crash after the mark's commit, before the delete
        conn.execute(inbound_messages.update().where(inbound_messages.c.id == message_id)
                     .values(raw_deleted_at=utcnow()))
    _age(runtime, key, timedelta(hours=2))

    assert runtime.retention().sweep().orphans == 1 and not runtime.blobs.exists(key)


def test_photo_jpegs_no_row_names_are_removed_and_those_of_a_journey_stay(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    deliver(runtime, photo_mail())
    drain(runtime)
    with runtime.engine.connect() as conn:
        kept = [key for row in conn.execute(sa.select(photos.c.thumb_key, photos.c.display_key)) for key in row]
    orphans = [f"photos/{'ab' * 32}/thumb.jpg", f"photos/{'ab' * 32}/display.jpg"]  # a photo whose row never came
    for key in orphans:
        runtime.blobs.put(key, b"\xff\xd8jpeg")
    for key in kept + orphans:
        _age(runtime, key, timedelta(days=2))

    assert runtime.retention().sweep().orphans == 2
    assert not any(runtime.blobs.exists(key) for key in orphans)
    assert len(kept) == 6 and all(runtime.blobs.exists(key) for key in kept)


def test_the_sweep_reads_in_batches(runtime: Any) -> None:
    from waypost.pipeline.retention import RetentionSweeper

    refused = [_refused(runtime, 10) for _ in range(3)]
    orphans = [_orphan(runtime, timedelta(hours=2)) for _ in range(5)]
    for _ in range(5):
        _claim(runtime, timedelta(days=8))
    sweeper = RetentionSweeper(runtime.engine, runtime.blobs, refused_after=timedelta(days=7),
                               dead_after=timedelta(days=30), orphan_grace=timedelta(hours=1),
                               duplicate_window=timedelta(days=7), batch_size=2)

    counts = sweeper.sweep()

    assert (counts.refused_raw, counts.orphans, counts.claims) == (3, 5, 5)
    assert not any(_raw_kept(runtime, message_id) for message_id in refused)
    assert not any(runtime.blobs.exists(key) for key in orphans)
    assert _claims(runtime) == {}


def test_the_worker_sweeps_at_start_and_then_periodically(runtime: Any, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    worker = runtime.worker()
    worker.clock = lambda: now[0]  # the worker's own clock decides when a periodic task is due
    first = _orphan(runtime, timedelta(hours=2))

    with caplog.at_level(logging.INFO, logger="waypost.pipeline.retention"):
        worker.run_periodic()  # what Worker.run does before its first job
    assert not runtime.blobs.exists(first)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "waypost.pipeline.retention"]
    assert line == ("retention: deleted the raw bytes of 0 refused and 0 dead messages, 1 orphaned blobs "
                    "and 0 expired duplicate claims")

    second = _orphan(runtime, timedelta(hours=2))
    now[0] += 60  # the alarms' interval, not the sweep's
    worker.run_periodic()
    assert runtime.blobs.exists(second)
    now[0] += runtime.settings.retention.sweep_interval_minutes * 60
    worker.run_periodic()
    assert not runtime.blobs.exists(second)


def test_blob_store_lists_keys_with_their_write_times(tmp_path: Any) -> None:
    from waypost.store.blobs import LocalBlobStore

    store = LocalBlobStore(tmp_path)
    store.put("inbound/2026/01/02/a.eml", b"a")
    store.put("photos/ab/thumb.jpg", b"b")
    (tmp_path / "inbound" / "2026" / "01" / "02" / ".tmp-half-written").write_bytes(b"c")
    when = datetime(2026, 1, 2, 3, 4, 5).timestamp()
    os.utime(tmp_path / "inbound/2026/01/02/a.eml", (when, when))

    (listed,) = store.iter_keys("inbound")
    assert listed[0] == "inbound/2026/01/02/a.eml" and listed[1].timestamp() == when
    assert listed[1].utcoffset() == timedelta(0)
    assert [key for key, _ in store.iter_keys("photos")] == ["photos/ab/thumb.jpg"]
    assert list(store.iter_keys("nothing-here")) == []


def _claim(runtime: Any, age: timedelta, key: str | None = None) -> str:
    """A duplicate claim (inbound_dedupe) of a mail that arrived ``age`` ago."""
    key = key or uuid.uuid4().hex * 2
    with runtime.engine.begin() as conn:
        conn.execute(inbound_dedupe.insert().values(key=key, inbound_id=uuid.uuid4().hex,
                                                    received_at=utcnow() - age))
    return key


def _claims(runtime: Any) -> dict[str, str]:
    with runtime.engine.connect() as conn:
        return {row.key: row.inbound_id for row in conn.execute(sa.select(inbound_dedupe))}


def _backdate(runtime: Any, message_id: str, age: timedelta) -> None:
    """As if the message arrived ``age`` ago; its claim (if it has one) with it."""
    when = utcnow() - age
    with runtime.engine.begin() as conn:
        conn.execute(inbound_messages.update().where(inbound_messages.c.id == message_id).values(received_at=when))
        conn.execute(inbound_dedupe.update().where(inbound_dedupe.c.inbound_id == message_id)
                     .values(received_at=when))


def test_duplicate_claims_older_than_the_window_are_removed_and_younger_ones_stay(runtime: Any) -> None:
    window = timedelta(days=runtime.settings.gate.duplicate_window_days)  # default: 7 days
    old = [_claim(runtime, window + timedelta(days=1)), _claim(runtime, window + timedelta(hours=2))]
    young = [_claim(runtime, window - timedelta(days=1)), _claim(runtime, timedelta(hours=1))]

    counts = runtime.retention().sweep()

    assert (counts.refused_raw, counts.dead_raw, counts.orphans, counts.claims) == (0, 0, 0, 2)
    assert counts.total == 2
    assert set(_claims(runtime)) == set(young) and not set(old) & set(_claims(runtime))
    assert runtime.retention().sweep().total == 0, "a second sweep finds nothing more"


def test_a_copy_within_the_window_is_still_a_duplicate_after_a_sweep(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    first = deliver(runtime, photo_mail())
    drain(runtime)
    _backdate(runtime, first, timedelta(days=6))  # its claim: a day inside the 7-day window
    expired = _claim(runtime, timedelta(days=30))

    assert runtime.retention().sweep().claims == 1
    assert list(_claims(runtime).values()) == [first] and expired not in _claims(runtime)

    second = deliver(runtime, photo_mail())
    drain(runtime)
    assert inbound(runtime, second).reason == f"duplicate of {first} (same sender and Message-ID)"
    assert len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 1


@pytest.mark.parametrize("waiting", ["queued", "dead"])
def test_a_claim_past_the_window_today_stays_while_an_older_copy_waits_for_its_decision(
        runtime: Any, waiting: str) -> None:
    """duplicates.py compares a claim with the arrival of the copy it decides, not with now: a
    copy that arrived 8 days ago and waits in the queue (or dead, retryable) is still a duplicate
    of a claim from 9 days ago, so the sweep keeps that claim."""
    runtime.allowlist.add("ann@example.org")
    first = deliver(runtime, photo_mail())
    drain(runtime)
    # the same mail again, waiting in the queue, or dead (its job failed) for the operator to retry
    second = deliver(runtime, photo_mail()) if waiting == "queued" else _dead(runtime, 1)
    _backdate(runtime, first, timedelta(days=9))
    _backdate(runtime, second, timedelta(days=8))
    expired = _claim(runtime, timedelta(days=16))  # a window before the waiting copy's arrival

    assert runtime.retention().sweep().claims == 1
    assert list(_claims(runtime).values()) == [first] and expired not in _claims(runtime)

    if waiting == "dead":
        (letter,) = DeadLetters(runtime.queue).list()
        assert DeadLetters(runtime.queue).retry(letter.job_id) is True
    drain(runtime)
    assert inbound(runtime, second).reason == f"duplicate of {first} (same sender and Message-ID)"
    assert len(list(runtime.settings.outbox_dir.glob("*.eml"))) == 1


@pytest.mark.parametrize("window_days", [2, 0])
def test_the_claim_window_comes_from_the_settings_and_zero_removes_every_claim(
        make_settings: Any, database_url: str, window_days: float) -> None:
    from waypost import runtime as wiring

    built = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                       gate={"duplicate_window_days": window_days}))
    try:
        old, young = _claim(built, timedelta(days=3)), _claim(built, timedelta(days=1))
        counts = built.retention().sweep()
        if window_days:
            assert counts.claims == 1 and set(_claims(built)) == {young}
        else:  # the check is off: no claim decides anything
            assert counts.claims == 2 and _claims(built) == {}
        assert old not in _claims(built)
    finally:
        built.close()
