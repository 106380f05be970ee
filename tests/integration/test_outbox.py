"""The outbox's promises (invariant 4), on SQLite and PostgreSQL: suppression, pause switches,
rate and quota, retries, throttling, and no second delivery after a crash."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import wait_until
from waypost import runtime as wiring
from waypost.errors import PermanentError, TransientError
from waypost.outbound import control, suppression
from waypost.outbound.outbox import OutboundMessage, Verp
from waypost.outbound.senders.base import (
    BaseSender,
    DeliveryUnknownError,
    Envelope,
    Handoff,
    SendingPausedError,
    ThrottledError,
)
from waypost.outbound.senders.catcher import CatcherSender
from waypost.store.models import jobs, outbound_messages, utcnow


@dataclass
class Recorder(BaseSender):
    """A Sender that records what it was handed; ``script`` holds exceptions to raise, one per
    call, before (``before=True``) or after handing over."""

    name: str = "recorder"
    script: list[Exception | None] = field(default_factory=list)
    delivered: list[Envelope] = field(default_factory=list)
    calls: int = 0

    def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
        self.calls += 1
        outcome = self.script.pop(0) if self.script else None
        if isinstance(outcome, (TransientError, PermanentError)) and not isinstance(outcome, DeliveryUnknownError):
            raise outcome  # refused before anything left
        handoff()
        if outcome is not None:
            raise outcome  # handed over, then the answer was lost
        self.delivered.append(envelope)
        return f"id-{len(self.delivered)}"


@pytest.fixture
def outbox_runtime(make_settings: Callable[..., Any], database_url: str) -> Iterator[Callable[..., Any]]:
    built: list[Any] = []

    def build(sender: Any, **outbound: Any) -> Any:
        settings = make_settings(database={"url": database_url},
                                 outbound={"max_per_second": 10_000, "max_per_day": 0, "max_attempts": 3,
                                           "retry_base_delay": 0.01, "retry_max_delay": 0.02, **outbound},
                                 worker={"max_attempts": 3, "retry_base_delay": 0.01, "retry_max_delay": 0.02,
                                         "poll_interval": 0.01},
                                 # these messages go to made-up people who never wrote in
                                 guard={"compromise_checks": False})
        runtime = wiring.build(settings, sender=sender)
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.close()


def queue(runtime: Any, number: int = 1, recipient: str = "ann@example.org", stream: str = "journeys") -> list[int]:
    ids = []
    with runtime.engine.begin() as conn:
        for index in range(number):
            key = f"test-{stream}-{recipient}-{index}"
            ids.append(runtime.outbox.queue_message(conn, OutboundMessage(
                key, stream, recipient, "journeys@waypost.test", f"subject {index}", f"<{key}@waypost.test>",
                b"Subject: test\r\n\r\nbody\r\n")))
    return ids


def run_jobs(runtime: Any, *, include_deferred: bool = False, rounds: int = 200) -> None:
    """Run due jobs until none is due; with ``include_deferred``, deferred send jobs are made
    due again each round (the test stands in for the passing of time)."""
    worker = runtime.worker()
    for _ in range(rounds):
        if include_deferred:
            with runtime.engine.begin() as conn:
                conn.execute(jobs.update().where(jobs.c.state == "queued").values(run_after=utcnow()))
            runtime.outbox._blocked_until = 0.0
        if not worker.run_once() and not (include_deferred and _queued_jobs(runtime)):
            return
    raise AssertionError("the queue did not drain")


def _queued_jobs(runtime: Any) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(jobs.c.state == "queued")).scalar_one()


def rows(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(outbound_messages).order_by(outbound_messages.c.id)))


def send_jobs(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(jobs).where(jobs.c.kind == "send").order_by(jobs.c.id)))


def test_a_suppressed_recipient_is_never_handed_to_the_sender(outbox_runtime: Any) -> None:
    sender = Recorder()
    runtime = outbox_runtime(sender)
    with runtime.engine.begin() as conn:
        suppression.add(conn, "Ann@Example.org", suppression.Reason.BOUNCE, "test", detail="5.1.1 no such user")
    queue(runtime, recipient="ann@example.org")
    queue(runtime, recipient="bob@example.org")

    run_jobs(runtime)

    ann, bob = rows(runtime)
    assert ann.state == "suppressed" and "BOUNCE" in ann.last_error and "5.1.1" in ann.last_error
    assert bob.state == "sent"
    assert [e.recipient for e in sender.delivered] == ["bob@example.org"]
    assert [job.state for job in send_jobs(runtime)] == ["done", "done"]


def test_an_expired_suppression_no_longer_holds_mail_back(outbox_runtime: Any) -> None:
    sender = Recorder()
    runtime = outbox_runtime(sender)
    with runtime.engine.begin() as conn:
        suppression.add(conn, "ann@example.org", suppression.Reason.MANUAL, "test",
                        expires_at=utcnow() - timedelta(seconds=1))
    queue(runtime)

    run_jobs(runtime)

    assert [row.state for row in rows(runtime)] == ["sent"]


def test_a_global_pause_holds_every_message_until_resumed(outbox_runtime: Any) -> None:
    sender = Recorder()
    runtime = outbox_runtime(sender, paused_recheck_seconds=3600)
    with runtime.engine.begin() as conn:
        control.pause(conn, control.ALL, "bounce rate 9 %", by="test")
    queue(runtime, 2)

    run_jobs(runtime)

    assert [row.state for row in rows(runtime)] == ["paused", "paused"]
    assert "bounce rate 9 %" in rows(runtime)[0].last_error
    assert sender.calls == 0
    assert all(job.state == "queued" and job.attempts == 0 for job in send_jobs(runtime))  # no attempt used

    with runtime.engine.begin() as conn:
        assert control.resume(conn, control.ALL)
    run_jobs(runtime)  # at once: the resume woke the parked jobs, and nothing else holds them

    assert [row.state for row in rows(runtime)] == ["sent", "sent"]
    assert len(sender.delivered) == 2


def test_a_stream_pause_holds_only_that_stream(outbox_runtime: Any) -> None:
    sender = Recorder()
    runtime = outbox_runtime(sender, paused_recheck_seconds=3600)
    with runtime.engine.begin() as conn:
        control.pause(conn, "relay", "testing", by="test")
    queue(runtime, stream="relay")
    queue(runtime, stream="journeys")

    run_jobs(runtime)

    assert [(row.stream, row.state) for row in rows(runtime)] == [("relay", "paused"), ("journeys", "sent")]


def test_a_transient_error_is_retried_and_then_sent_once(outbox_runtime: Any) -> None:
    sender = Recorder(script=[TransientError("421 try later")])
    runtime = outbox_runtime(sender)
    queue(runtime)

    run_jobs(runtime, include_deferred=True)

    (row,) = rows(runtime)
    assert row.state == "sent" and row.handoff_at is not None and row.provider_message_id == "id-1"
    assert sender.calls == 2 and len(sender.delivered) == 1


def test_throttling_waits_without_using_attempts_and_never_drops(outbox_runtime: Any) -> None:
    # max_attempts is 3: five throttled answers would dead-letter an ordinary retry
    sender = Recorder(script=[ThrottledError("454 Throttling failure", retry_after=0.01) for _ in range(5)])
    runtime = outbox_runtime(sender)
    queue(runtime)

    run_jobs(runtime, include_deferred=True)

    (row,) = rows(runtime)
    assert row.state == "sent" and sender.calls == 6
    (job,) = send_jobs(runtime)
    assert job.state == "done" and job.attempts == 1


def test_a_permanent_error_fails_the_message_with_its_reason_and_is_not_retried(outbox_runtime: Any) -> None:
    sender = Recorder(script=[PermanentError("550 5.1.1 <ann@example.org>: no such user")])
    runtime = outbox_runtime(sender)
    queue(runtime)

    run_jobs(runtime, include_deferred=True)

    (row,) = rows(runtime)
    assert row.state == "failed" and "550 5.1.1" in row.last_error
    assert sender.calls == 1
    assert send_jobs(runtime)[0].state == "dead"


def test_retries_run_out_into_failed(outbox_runtime: Any) -> None:
    sender = Recorder(script=[TransientError(f"421 busy {n}") for n in range(3)])
    runtime = outbox_runtime(sender)
    queue(runtime)

    run_jobs(runtime, include_deferred=True)

    (row,) = rows(runtime)
    assert row.state == "failed" and "421 busy 2" in row.last_error
    assert sender.calls == 3 and not sender.delivered


def test_a_lost_answer_after_handoff_is_never_sent_again(outbox_runtime: Any) -> None:
    sender = Recorder(script=[DeliveryUnknownError("connection dropped after the data")])
    runtime = outbox_runtime(sender)
    queue(runtime)

    run_jobs(runtime, include_deferred=True)

    (row,) = rows(runtime)
    assert row.state == "sent" and row.unconfirmed and "connection dropped" in row.last_error
    assert sender.calls == 1


def test_a_provider_pause_pauses_the_outbox_and_keeps_the_message(outbox_runtime: Any) -> None:
    sender = Recorder(script=[SendingPausedError("AccountSendingPausedException: review")])
    runtime = outbox_runtime(sender, paused_recheck_seconds=3600)
    queue(runtime, 2)

    run_jobs(runtime)

    assert [row.state for row in rows(runtime)] == ["paused", "paused"]
    with runtime.engine.connect() as conn:
        (pause,) = control.pauses(conn)
    assert pause.scope == control.ALL and "review" in pause.reason and pause.paused_by == "recorder"
    assert sender.calls == 1  # the second message never went to a paused provider


def test_a_crash_after_handoff_settles_as_sent_without_a_second_delivery(outbox_runtime: Any) -> None:
    sender = Recorder()
    runtime = outbox_runtime(sender)
    (outbound_id,) = queue(runtime)
    # what a worker killed between the transport's 250 and its commit leaves behind
    with runtime.engine.begin() as conn:
        conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id)
                     .values(state="sending", admitted_at=utcnow(), handoff_at=utcnow()))

    run_jobs(runtime)

    (row,) = rows(runtime)
    assert row.state == "sent" and row.unconfirmed and "not sent again" in row.last_error
    assert sender.calls == 0


def test_a_crash_before_handoff_sends_normally(outbox_runtime: Any) -> None:
    sender = Recorder()
    runtime = outbox_runtime(sender)
    (outbound_id,) = queue(runtime)
    with runtime.engine.begin() as conn:  # admitted, then killed while connecting
        conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id)
                     .values(state="sending", admitted_at=utcnow(), handoff_at=None))

    run_jobs(runtime)

    (row,) = rows(runtime)
    assert row.state == "sent" and not row.unconfirmed and len(sender.delivered) == 1


def test_the_catcher_confirms_after_a_crash_and_resends_only_what_it_never_stored(
        outbox_runtime: Any, tmp_path: Any) -> None:
    catcher = CatcherSender(tmp_path / "caught")
    runtime = outbox_runtime(catcher)
    stored, lost = queue(runtime, 2)
    # the first reached the catcher before the crash, the second did not
    row = rows(runtime)[0]
    catcher.send(Envelope(row.envelope_sender, row.recipient, row.idempotency_key), row.raw, lambda: None)
    with runtime.engine.begin() as conn:
        conn.execute(outbound_messages.update().where(outbound_messages.c.id.in_((stored, lost)))
                     .values(state="sending", admitted_at=utcnow(), handoff_at=utcnow()))

    run_jobs(runtime)

    first, second = rows(runtime)
    assert first.state == "sent" and not first.unconfirmed and first.provider_message_id.endswith(".eml")
    assert second.state == "sent" and not second.unconfirmed
    assert len(list((tmp_path / "caught").glob("*.eml"))) == 2


def test_the_daily_quota_defers_the_rest_for_a_day_without_dropping_them(outbox_runtime: Any) -> None:
    sender = Recorder()
    runtime = outbox_runtime(sender, max_per_day=3)
    queue(runtime, 5)

    run_jobs(runtime)

    assert [row.state for row in rows(runtime)] == ["sent", "sent", "sent", "queued", "queued"]
    deferred, untouched = [job for job in send_jobs(runtime) if job.state == "queued"]
    assert "daily quota 3/24h" in deferred.last_error and deferred.run_after > utcnow() + timedelta(hours=23)
    assert deferred.attempts == 0 and untouched.attempts == 0
    # knowing the quota is used up, this worker claims no send job before the window frees
    assert runtime.outbox.blocked_for() > 23 * 3600


def test_the_rate_limit_defers_instead_of_sending_early(outbox_runtime: Any) -> None:
    sender = Recorder()
    runtime = outbox_runtime(sender, max_per_second=2)
    queue(runtime, 3)

    worker = runtime.worker()
    while worker.run_once():
        pass

    assert [row.state for row in rows(runtime)] == ["sent", "sent", "queued"]
    assert runtime.outbox.blocked_for() > 0.5  # the worker leaves sends alone until the window frees
    (waiting,) = [job for job in send_jobs(runtime) if job.state == "queued"]
    assert "rate limit 2/s" in waiting.last_error


def test_a_message_still_in_flight_holds_its_place_in_the_rate_window(outbox_runtime: Any) -> None:
    sender = Recorder()
    runtime = outbox_runtime(sender, max_per_second=1)
    first, second = queue(runtime, 2)
    long_ago = utcnow() - timedelta(seconds=30)
    with runtime.engine.begin() as conn:  # another worker admitted it long ago and is still sending
        conn.execute(outbound_messages.update().where(outbound_messages.c.id == first)
                     .values(state="sending", admitted_at=long_ago, handoff_at=long_ago))
        assert runtime.outbox.limiter.wait_before(conn, utcnow()) is not None
        conn.execute(outbound_messages.update().where(outbound_messages.c.id == first)
                     .values(state="sent", window_at=long_ago))  # it finished a while ago
        assert runtime.outbox.limiter.wait_before(conn, utcnow()) is None
        conn.execute(outbound_messages.update().where(outbound_messages.c.id == first)
                     .values(window_at=utcnow() - timedelta(seconds=0.5)))  # it finished half a second ago
        wait = runtime.outbox.limiter.wait_before(conn, utcnow())
    assert wait is not None and 0.4 < wait.seconds < 0.6


def test_verp_addresses_name_their_row_and_resist_forgery() -> None:
    old = Verp("bounces", "waypost.test", [b"old-key-0123456789"])
    rotated = Verp("bounces", "waypost.test", [b"new-key-0123456789", b"old-key-0123456789"])
    address = old.address(12345)

    assert address.startswith("bounces+") and address.endswith("@waypost.test")
    assert len(address.split("@")[0]) <= 64  # RFC 5321 local-part limit
    assert rotated.outbound_id(address) == 12345  # still read after a key rotation
    assert rotated.outbound_id(address.upper().replace("WAYPOST.TEST", "waypost.test")) == 12345  # case-folded
    assert old.outbound_id(address.replace("bounces+9ix", "bounces+9iy")) is None
    assert old.outbound_id(rotated.address(12345)) is None  # signed with a key it does not know
    assert old.outbound_id(address.replace("waypost.test", "example.org")) is None
    assert old.outbound_id("bounces+zz@waypost.test") is None


def test_an_attempt_whose_lease_ran_out_sends_nothing(outbox_runtime: Any) -> None:
    """Worker A was slow before its handoff; its lease ran out and worker B re-admitted the
    message. A's handoff must fail, so only B's attempt can deliver."""
    runtime: Any = None

    @dataclass
    class Overtaken(Recorder):
        def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
            with runtime.engine.begin() as conn:  # B's admission, while A was still connecting
                conn.execute(outbound_messages.update().values(admitted_at=utcnow() + timedelta(seconds=1)))
            return super().send(envelope, raw, handoff)

    sender = Overtaken()
    runtime = outbox_runtime(sender)
    queue(runtime)

    runtime.worker().run_once()

    assert sender.calls == 1 and sender.delivered == []
    (row,) = rows(runtime)
    assert row.state == "sending" and row.handoff_at is None  # left as B has it
    assert send_jobs(runtime)[0].state == "running"  # A neither completed nor failed B's job


def test_throttled_attempts_do_not_use_up_the_daily_quota(outbox_runtime: Any) -> None:
    throttled = [ThrottledError("TooManyRequestsException", retry_after=0.01) for _ in range(5)]

    @dataclass
    class LateThrottle(Recorder):  # SES throttles the API call, after the handoff
        def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
            if self.script:
                self.calls += 1
                handoff()
                raise self.script.pop(0)
            return super().send(envelope, raw, handoff)

    sender = LateThrottle(script=list(throttled))
    runtime = outbox_runtime(sender, max_per_day=2)
    queue(runtime, 2)

    run_jobs(runtime, include_deferred=True)

    assert [row.state for row in rows(runtime)] == ["sent", "sent"]
    with runtime.engine.connect() as conn:
        assert runtime.outbox.limiter.used(conn, utcnow())[1] == 2


def test_a_message_that_waited_leaves_with_a_fresh_date(outbox_runtime: Any) -> None:
    sender = Recorder()
    captured: list[bytes] = []
    original = sender.send

    def capture(envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
        captured.append(raw)
        return original(envelope, raw, handoff)

    sender.send = capture  # type: ignore[method-assign]
    runtime = outbox_runtime(sender)
    (outbound_id,) = queue(runtime)
    with runtime.engine.begin() as conn:  # composed a day ago, then held by the quota
        conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id).values(
            created_at=utcnow() - timedelta(days=1),
            raw=b"Date: Mon, 01 Jan 2024 00:00:00 +0000\nSubject: test\n\nbody\n"))

    run_jobs(runtime)

    (raw,) = captured
    assert b"2024" not in raw.split(b"\n\n")[0] and raw.startswith(b"Date: ")
    assert raw.endswith(b"\n\nbody\n")


def test_two_workers_handing_over_in_a_new_minute_both_count(outbox_runtime: Any) -> None:
    """Handoffs are not serialised like admissions: the minute's first two can meet. The second
    waits for the first's row (PostgreSQL) or its transaction (SQLite) and adds to it."""
    runtime = outbox_runtime(Recorder())
    limiter, engine = runtime.outbox.limiter, runtime.engine
    at = utcnow()
    errors: list[BaseException] = []

    def second_worker() -> None:
        try:
            with engine.begin() as conn:
                limiter.handed_over(conn, at)
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    with engine.begin() as first:
        limiter.handed_over(first, at)  # the minute's row, not yet committed
        other = threading.Thread(target=second_worker)
        other.start()
        if engine.dialect.name == "postgresql":  # the other's insert waits on ours
            def blocked() -> bool:
                with engine.connect() as conn:
                    return bool(conn.execute(sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()")).scalar_one())
            wait_until(blocked, timeout=30, message="the second handoff waiting on the first")
    other.join(timeout=60)

    assert not other.is_alive() and errors == []
    with engine.connect() as conn:
        assert limiter.used(conn, at)[1] == 2
