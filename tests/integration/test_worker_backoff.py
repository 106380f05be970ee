"""The worker while the database cannot be written: it backs off, logs the condition once per
interval, and says once when claiming works again; on SQLite and PostgreSQL.

Claims go to a database connection made read-only (SQLite ``query_only``, PostgreSQL
``default_transaction_read_only``), so each one fails with the database's own error. Time is
the worker's injectable clock and wait: the test sees every wait it asks for and never sleeps."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import wait_until
from tests.integration.test_pipeline import deliver, inbound, photo_mail
from waypost.pipeline import worker as worker_module
from waypost.pipeline.worker import CLAIM_BACKOFF_CAP, CLAIM_FAILURE_LOG_INTERVAL, Worker
from waypost.store.db import create_engine
from waypost.store.queue import TableJobQueue

POLL = 0.05
FAILURES = 200


def read_only_engine(url: sa.URL) -> sa.Engine:
    engine = create_engine(url.render_as_string(hide_password=False))

    @sa.event.listens_for(engine, "connect")
    def read_only(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA query_only = ON")
        else:
            cursor.execute("SET default_transaction_read_only = on")
            dbapi_conn.commit()
        cursor.close()

    return engine


class UnwritableQueue:
    """The runtime's job queue, whose claims go to a read-only connection until ``heal``."""

    def __init__(self, real: TableJobQueue, read_only: sa.Engine) -> None:
        self.real = real
        self.broken = TableJobQueue(read_only, visibility_timeout=real.visibility_timeout, retry=real.retry)
        self.healed = False
        self.failed_claims = 0

    def claim(self, owner: str, kinds: tuple[str, ...] | None = None) -> Any:
        if self.healed:
            return self.real.claim(owner, kinds)
        try:
            return self.broken.claim(owner, kinds)
        except Exception:
            self.failed_claims += 1
            raise

    def heal(self) -> None:
        self.healed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FakeTimeLog(logging.Handler):
    """The worker's log lines, each with the fake time it was written at."""

    def __init__(self, time: FakeTime) -> None:
        super().__init__(logging.WARNING)
        self.time = time
        self.lines: list[tuple[float, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.time.now, record))


class FakeTime:
    """The worker's clock and wait: each wait is recorded and moves the clock on by its length."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.on_wait: list[Any] = []
        self.log: FakeTimeLog

    def clock(self) -> float:
        return self.now

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        for hook in self.on_wait:
            hook(stop)
        return stop.is_set()


@pytest.fixture
def unwritable(runtime: Any) -> Iterator[UnwritableQueue]:
    engine = read_only_engine(runtime.engine.url)
    yield UnwritableQueue(runtime.queue, engine)
    engine.dispose()


@pytest.fixture
def time() -> Iterator[FakeTime]:
    """The fake time, with the worker's log lines of WARNING and above in ``time.log``."""
    fake = FakeTime()
    logger = logging.getLogger(worker_module.__name__)
    fake.log = FakeTimeLog(fake)
    logger.addHandler(fake.log)
    try:
        yield fake
    finally:
        logger.removeHandler(fake.log)


def make_worker(runtime: Any, queue: Any, time: FakeTime | None = None, poll: float = POLL) -> Worker:
    kinds = [*runtime.processor.job_kinds(), *runtime.outbox.job_kinds()]
    if time is None:
        return Worker(queue, kinds, poll_interval=poll)
    return Worker(queue, kinds, poll_interval=poll, clock=time.clock, wait=time.wait)


def test_the_worker_backs_off_logs_once_per_interval_and_recovers(runtime: Any, unwritable: UnwritableQueue,
                                                                   time: FakeTime) -> None:
    runtime.allowlist.add("ann@example.org")
    message_id = deliver(runtime, photo_mail())

    def heal_then_stop(stop: threading.Event) -> None:
        if unwritable.healed:
            stop.set()  # the first wait after healing: the queue is drained
        elif unwritable.failed_claims == FAILURES:
            unwritable.heal()

    time.on_wait.append(heal_then_stop)
    make_worker(runtime, unwritable, time).run(threading.Event())

    # the waits double from the poll interval and stop at the cap
    backoff = time.waits[:FAILURES]
    assert backoff == [min(CLAIM_BACKOFF_CAP, POLL * 2 ** n) for n in range(FAILURES)]
    assert max(backoff) == CLAIM_BACKOFF_CAP

    written = [at for at, _ in time.log.lines]
    records = [record for _, record in time.log.lines]
    first, reports, recovered = records[0], records[1:-1], records[-1]
    assert first.exc_info is not None and all(r.exc_info is None for r in records[1:])
    # at most one line per interval (of the worker's time), each counting the failures since the last
    gaps = [later - earlier for earlier, later in itertools.pairwise(written[:-1])]
    assert min(gaps) >= CLAIM_FAILURE_LOG_INTERVAL - 1e-6, gaps
    assert len(records) <= 2 + sum(backoff) / CLAIM_FAILURE_LOG_INTERVAL
    counts = [r.args[0] for r in reports if isinstance(r.args, tuple)]
    assert len(counts) == len(reports) >= 1 and 1 + sum(counts) <= FAILURES
    assert recovered.args == (FAILURES,) and "again" in recovered.getMessage()
    # and the job that waited through it all ran
    assert inbound(runtime, message_id).status == "processed"


def test_the_backoff_starts_over_after_a_claim_works(runtime: Any, unwritable: UnwritableQueue,
                                                    time: FakeTime) -> None:
    waits_before_heal = 5

    def script(stop: threading.Event) -> None:
        if len(time.waits) == waits_before_heal:
            unwritable.heal()  # one claim works (nothing due): an idle wait of one poll interval
        elif len(time.waits) == waits_before_heal + 1:
            unwritable.healed = False  # broken again: the backoff starts from the poll interval
        elif len(time.waits) == waits_before_heal + 4:
            stop.set()

    time.on_wait.append(script)
    make_worker(runtime, unwritable, time).run(threading.Event())

    assert time.waits == [POLL, POLL * 2, POLL * 4, POLL * 8, POLL * 16, POLL, POLL, POLL * 2, POLL * 4]
    records = [record for _, record in time.log.lines]
    recovered = [r for r in records if "again" in r.getMessage()]
    assert [r.args for r in recovered] == [(waits_before_heal,)]
    assert sum(r.exc_info is not None for r in records) == 2  # each spell's first failure


def test_stop_wakes_a_worker_in_its_backoff(runtime: Any, unwritable: UnwritableQueue) -> None:
    worker = make_worker(runtime, unwritable, poll=CLAIM_BACKOFF_CAP)  # the real clock and wait
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    wait_until(lambda: unwritable.failed_claims >= 1, message="a failed claim")
    stop.set()
    # the wait after that failure is the cap, far beyond this deadline: only stop ends it early
    wait_until(lambda: not thread.is_alive(), timeout=CLAIM_BACKOFF_CAP / 3, message="the worker to stop")
    assert unwritable.failed_claims == 1
