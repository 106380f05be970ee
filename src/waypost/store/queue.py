"""JobQueue port, embedded adapter: a table in the database.

A job is claimed with a lease (``visibility_timeout``). A worker that dies leaves its job
``running`` with an expired lease, and the next claim takes it again: processing is
at-least-once, so every handler's effects carry idempotency keys. After ``max_attempts`` the
job is dead-lettered with its last error. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``;
SQLite serialises writers with ``BEGIN IMMEDIATE`` (see db.py), which gives the same result.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.store.db import inserted_id, is_postgres
from waypost.store.models import JobState as JobState  # re-exported: the queue's own states
from waypost.store.models import jobs, utcnow

log = logging.getLogger(__name__)

# PostgreSQL: the channel every commit that queued a job notifies (LISTEN/NOTIFY), with the
# schema as payload, so that databases shared by several schemas wake only their own workers
JOB_CHANNEL = "waypost_jobs"
_NOTIFY_JOB = sa.text(f"SELECT pg_notify('{JOB_CHANNEL}', current_schema())")


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    lease_owner: str
    dead_reason: str | None = None  # set when the claim dead-lettered the job instead of leasing it


class Doorbell:
    """Wakes an idle worker of this process as soon as a job is committed here, instead of after
    its poll interval (``worker.poll_interval``): `waypost serve` rings it for each mail it
    stores. Jobs queued by another process are still found by polling."""

    # how often a waiting worker looks at its stop event: ringing is what ends a wait early
    STOP_CHECK = 0.05  # seconds

    def __init__(self) -> None:
        self._rung = threading.Event()

    def ring(self) -> None:
        self._rung.set()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Until the bell rings (True), ``stop`` is set or ``seconds`` have passed (False)."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._rung.wait(min(remaining, self.STOP_CHECK)):
                self._rung.clear()
                return True
        return False


class JobNotices:
    """PostgreSQL only: rings ``doorbell`` as soon as any connection, in any process, commits a
    job in this schema, so that separate workers (`waypost worker`) start work without waiting
    out ``worker.poll_interval``; polling stays the fallback for anything missed. ``run`` is a
    worker companion: it holds one connection of its own with ``LISTEN``, reconnects after
    ``RECONNECT`` seconds when it is lost, and rings once on each (re)connection, for jobs
    committed while nobody listened."""

    RECONNECT = 5.0  # seconds
    STOP_CHECK = 1.0  # seconds: how long one wait for notifications lasts before looking at stop

    def __init__(self, engine: Engine, doorbell: Doorbell) -> None:
        self.engine = engine
        self.doorbell = doorbell
        self.listening = threading.Event()  # set while the LISTEN connection is up
        self.heard = 0  # notifications that rang the bell

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._listen(stop)
            except Exception as err:  # the database went away: poll meanwhile, then listen again
                log.warning("job notifications lost (%s: %s); listening again in %.0f s",
                            type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "", self.RECONNECT)
            self.listening.clear()
            stop.wait(self.RECONNECT)

    def _listen(self, stop: threading.Event) -> None:
        pooled = self.engine.raw_connection()
        driver = pooled.driver_connection
        pooled.detach()  # LISTEN belongs to this connection alone: never handed back to the pool
        try:
            assert driver is not None
            driver.autocommit = True  # a notification reaches a session only outside a transaction
            schema = driver.execute("SELECT current_schema()").fetchone()[0]
            driver.execute(f"LISTEN {JOB_CHANNEL}")
            self.listening.set()
            self.doorbell.ring()
            while not stop.is_set():
                for notice in driver.notifies(timeout=self.STOP_CHECK):
                    if notice.payload == schema:
                        self.heard += 1
                        self.doorbell.ring()
        finally:
            pooled.close()


def _never_held_back() -> float:
    return 0.0


@dataclass(frozen=True)
class JobKind:
    """One kind of job, as its owner declares it to the worker: what runs it, what a dead
    letter of it records, and for how many seconds the owner holds every job of the kind back
    (a pause, the rate limit; 0: runnable)."""

    name: str
    run: Callable[[Job], None]
    on_dead: Callable[[Job, str], None]
    held_back: Callable[[], float] = _never_held_back


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 5.0
    max_delay: float = 3600.0

    def delay(self, attempts: int) -> float:
        """Exponential backoff with full jitter (attempts counts the run that just failed)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(attempts - 1, 0))
        return random.uniform(ceiling / 2, ceiling)


# built once: an INSERT without inline values is compiled once per set of keys and then
# found in the engine's statement cache, where ``.values(...)`` would build and key a new
# statement for every job
_INSERT_JOB = jobs.insert()


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    max_attempts: int,
    run_after: datetime | None = None,
) -> int:
    """Add a job inside the caller's transaction, so a job exists exactly when the rows
    it refers to do."""
    now = utcnow()
    result = conn.execute(_INSERT_JOB, _job_row(kind, payload, max_attempts, run_after or now, now))
    if is_postgres(conn):  # delivered when the transaction commits, never for a rollback
        conn.execute(_NOTIFY_JOB)
    return inserted_id(result)


def enqueue_many(conn: Connection, kind: str, payloads: list[dict[str, Any]], *, max_attempts: int) -> None:
    """Add one job of ``kind`` per payload, due now, inside the caller's transaction, in one
    statement executed for them all (the ingest's group commit); PostgreSQL's workers are
    notified once for the lot."""
    if not payloads:
        return
    now = utcnow()
    conn.execute(_INSERT_JOB, [_job_row(kind, payload, max_attempts, now, now) for payload in payloads])
    if is_postgres(conn):
        conn.execute(_NOTIFY_JOB)


def _job_row(kind: str, payload: dict[str, Any], max_attempts: int, run_after: datetime,
             now: datetime) -> dict[str, Any]:
    return {"kind": kind, "payload": payload, "state": JobState.QUEUED, "attempts": 0, "max_attempts": max_attempts,
            "run_after": run_after, "created_at": now, "updated_at": now}


def job_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """Jobs not done, by (kind, state)."""
    rows = conn.execute(sa.select(jobs.c.kind, jobs.c.state, sa.func.count()).where(jobs.c.state != JobState.DONE)
                        .group_by(jobs.c.kind, jobs.c.state))
    return {(kind, state): int(n) for kind, state, n in rows}


class JobQueue(Protocol):
    """The port the worker and the job owners use. Jobs are added with ``enqueue`` inside the
    transaction that creates what they refer to; a job's work commits with ``complete`` or
    ``defer`` in the work's own transaction, so a job is done exactly when its effects are."""

    def claim(self, owner: str, kinds: tuple[str, ...] | None = None) -> Job | None:
        """A due job of one of ``kinds`` leased to ``owner``, or None; a job out of attempts
        comes back once with ``dead_reason`` set, already dead-lettered."""
        ...

    def complete(self, conn: Connection, job: Job) -> None: ...

    def defer(self, conn: Connection, job: Job, run_after: datetime, why: str) -> None:
        """Give the attempt back: run again at ``run_after`` without using an attempt."""
        ...

    def next_due_in(self, kinds: tuple[str, ...] | None = None) -> float | None:
        """Seconds until a job of ``kinds`` is due (0: now), None when there is none."""
        ...

    def fail(self, job: Job, error: str, *, permanent: bool = False) -> bool:
        """Record a failed attempt; True when the job is now dead-lettered."""
        ...


class TableJobQueue:
    """The JobQueue on the ``jobs`` table of the service's own database."""

    def __init__(self, engine: Engine, *, visibility_timeout: float, retry: RetryPolicy,
                 retry_by_kind: dict[str, RetryPolicy] | None = None) -> None:
        self.engine = engine
        self.visibility_timeout = visibility_timeout
        self.retry = retry
        self.retry_by_kind = dict(retry_by_kind or {})

    def claim(self, owner: str, kinds: tuple[str, ...] | None = None) -> Job | None:
        """Lease the next due job, or return None. A lease that expired with no attempts
        left dead-letters the job instead of running it again: the returned Job then carries
        ``dead_reason`` so the caller can record the outcome where the job's work lives."""
        now = utcnow()
        due = sa.or_(
            sa.and_(jobs.c.state == JobState.QUEUED, jobs.c.run_after <= now),
            sa.and_(jobs.c.state == JobState.RUNNING, jobs.c.locked_until <= now),
        )
        query = sa.select(jobs).where(due).order_by(jobs.c.run_after, jobs.c.id).limit(1)
        if kinds:
            query = query.where(jobs.c.kind.in_(kinds))
        with self.engine.begin() as conn:
            if is_postgres(conn):
                query = query.with_for_update(skip_locked=True)
            row = conn.execute(query).mappings().first()
            if row is None:
                return None
            if row["state"] == JobState.RUNNING and row["attempts"] >= row["max_attempts"]:
                reason = "the worker stopped during every attempt (lease expired)"
                self._bury(conn, row["id"], reason)
                return Job(row["id"], row["kind"], row["payload"], row["attempts"], row["max_attempts"], owner,
                           dead_reason=reason)
            conn.execute(
                jobs.update()
                .where(jobs.c.id == row["id"])
                .values(
                    state=JobState.RUNNING,
                    attempts=row["attempts"] + 1,
                    locked_until=now + timedelta(seconds=self.visibility_timeout),
                    locked_by=owner,
                    updated_at=now,
                )
            )
        return Job(row["id"], row["kind"], row["payload"], row["attempts"] + 1, row["max_attempts"], owner)

    def complete(self, conn: Connection, job: Job) -> None:
        """Mark done inside the handler's own transaction, beside its effects."""
        conn.execute(
            jobs.update().where(jobs.c.id == job.id).values(state=JobState.DONE, locked_until=None, updated_at=utcnow())
        )

    def defer(self, conn: Connection, job: Job, run_after: datetime, why: str) -> None:
        """Put a claimed job back until ``run_after`` without using up an attempt: it did no
        work (a rate limit, a pause or provider throttling held it back)."""
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job.id)
            .values(state=JobState.QUEUED, attempts=max(job.attempts - 1, 0), run_after=run_after, locked_until=None,
                    last_error=why[:2000], updated_at=utcnow())
        )

    def next_due_in(self, kinds: tuple[str, ...] | None = None) -> float | None:
        """Seconds until the earliest queued job becomes due (0 when one is due), or None."""
        query = sa.select(sa.func.min(jobs.c.run_after)).where(jobs.c.state == JobState.QUEUED)
        if kinds:
            query = query.where(jobs.c.kind.in_(kinds))
        with self.engine.connect() as conn:
            earliest = conn.execute(query).scalar()
        if earliest is None:
            return None
        return max((earliest - utcnow()).total_seconds(), 0.0)

    def fail(self, job: Job, error: str, *, permanent: bool = False) -> bool:
        """Schedule a retry, or dead-letter the job. Returns True when it was dead-lettered."""
        with self.engine.begin() as conn:
            if permanent or job.attempts >= job.max_attempts:
                self._bury(conn, job.id, error)
                return True
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id)
                .values(
                    state=JobState.QUEUED,
                    run_after=utcnow() + timedelta(seconds=self.retry_by_kind.get(job.kind, self.retry)
                                                   .delay(job.attempts)),
                    locked_until=None,
                    last_error=error,
                    updated_at=utcnow(),
                )
            )
        return False

    def retry_dead(self, job_id: int, conn: Connection | None = None) -> bool:
        """Put a dead-lettered job back in the queue with fresh attempts (operator action);
        inside ``conn``'s transaction when given."""
        if conn is None:
            with self.engine.begin() as own:
                return self.retry_dead(job_id, own)
        result = conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == JobState.DEAD)
            .values(state=JobState.QUEUED, attempts=0, run_after=utcnow(), updated_at=utcnow())
        )
        return result.rowcount == 1

    def dead_letters(self, limit: int = 100) -> list[sa.Row]:
        with self.engine.connect() as conn:
            query = sa.select(jobs).where(jobs.c.state == JobState.DEAD).order_by(jobs.c.updated_at.desc()).limit(limit)
            return list(conn.execute(query))

    def depth(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state))
            return {state: count for state, count in rows}

    @staticmethod
    def _bury(conn: Connection, job_id: int, error: str) -> None:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id)
            .values(state=JobState.DEAD, locked_until=None, last_error=error, updated_at=utcnow())
        )
