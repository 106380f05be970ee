"""Dead letters for the operator (invariant 6): see why a job gave up, and send it round again
or close it for good; and the job queue as the console lists it.

A retry puts the job back in the queue and resets the row its work belongs to (the inbound
message, or the outbound message) in the same transaction, so the next run starts clean. A
discard closes a dead job for good: state ``done``, ``last_error`` "discarded by <actor>"; the
reason it died is returned for the caller's audit entry. Every operation that changes
something takes an optional ``conn``: given, it runs inside that transaction (so the web can
commit the action and its audit entry together); else in its own.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.errors import PermanentError
from waypost.outbound.outbox import SEND_JOB
from waypost.pipeline.inbox import INBOUND_JOB
from waypost.store.models import (
    InboundStatus,
    JobState,
    OutboundState,
    inbound_messages,
    jobs,
    outbound_messages,
    utcnow,
)
from waypost.store.queue import TableJobQueue, job_counts
from waypost.transactions import joined, reading

# the states the console's queue page offers, dead letters first
LISTED_STATES = (JobState.DEAD, JobState.QUEUED, JobState.RUNNING, JobState.DONE)


@dataclass(frozen=True)
class DeadLetter:
    job_id: int
    kind: str
    subject: str  # what the job was about: "message <id>" or "outbound <id>"
    reason: str
    attempts: int
    since: datetime


@dataclass(frozen=True)
class JobSummary:
    """One line of the queue page."""

    id: int
    kind: str
    state: str
    attempts: int
    max_attempts: int
    run_after: datetime
    error: str
    updated_at: datetime
    about: str  # "message <id>", "outbound <id>" or ""


@dataclass(frozen=True)
class JobRecord:
    """A job as stored."""

    id: int
    kind: str
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    run_after: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class InboundSubject:
    id: str
    status: str
    reason: str | None
    from_address: str | None
    subject: str | None
    received_at: datetime
    size: int
    blob_key: str


@dataclass(frozen=True)
class OutboundSubject:
    id: int
    state: str
    recipient: str
    subject: str
    last_error: str | None
    created_at: datetime
    stream: str


@dataclass(frozen=True)
class JobSubject:
    """The row a job's work belongs to."""

    kind: str  # inbound | outbound
    row: InboundSubject | OutboundSubject


class CannotRetry(PermanentError):
    """The dead job cannot run again; the message says why and what the operator can do."""


class AlreadySent(CannotRetry):
    """The dead send job's message went out (perhaps unconfirmed): retrying would send it twice."""


class RawDeleted(CannotRetry):
    """The dead message's raw bytes were deleted after its retention period: nothing to process."""


def _reset_inbound(conn: Connection, payload: dict[str, Any]) -> None:
    message = inbound_messages.c.id == payload["message_id"]
    # only while the raw bytes are there, checked in the write itself so a concurrent retention
    # sweep (which marks before it deletes) cannot slip between a check and the reset
    reset = conn.execute(inbound_messages.update().where(message, inbound_messages.c.raw_deleted_at.is_(None))
                         .values(status=InboundStatus.QUEUED, reason=None, processed_at=None))
    if reset.rowcount:
        return
    gone = conn.execute(sa.select(inbound_messages.c.raw_deleted_at).where(message)).scalar()
    if gone is not None:
        raise RawDeleted(f"message {payload['message_id']} cannot be processed again: its raw bytes were "
                         f"deleted on {gone:%Y-%m-%d %H:%M}Z after the retention period "
                         "(retention.dead_raw_days); discard the dead letter instead")


def _reset_outbound(conn: Connection, payload: dict[str, Any]) -> None:
    row = conn.execute(sa.select(outbound_messages.c.state, outbound_messages.c.handoff_at)
                       .where(outbound_messages.c.id == payload["outbound_id"])).first()
    if row is not None and (row.state == OutboundState.SENT or row.handoff_at is not None):
        raise AlreadySent(f"outbound {payload['outbound_id']} was already handed to the transport "
                          f"({row.state}); retrying could deliver it twice, so it stays as it is")
    conn.execute(outbound_messages.update().where(outbound_messages.c.id == payload["outbound_id"])
                 .values(state=OutboundState.QUEUED, last_error=None))


RESET: dict[str, Callable[[Connection, dict[str, Any]], None]] = {
    INBOUND_JOB: _reset_inbound, SEND_JOB: _reset_outbound}
LABEL: dict[str, Callable[[dict[str, Any]], str]] = {
    INBOUND_JOB: lambda p: f"message {p['message_id']}", SEND_JOB: lambda p: f"outbound {p['outbound_id']}"}


class DeadLetters:
    def __init__(self, queue: TableJobQueue) -> None:
        self.queue = queue
        self.database = queue.engine

    def list(self, limit: int = 100) -> builtins.list[DeadLetter]:
        """Dead jobs, the most recently dead first."""
        return [
            DeadLetter(row.id, row.kind, LABEL.get(row.kind, str)(row.payload), row.last_error or "",
                       row.attempts, row.updated_at)
            for row in self.queue.dead_letters(limit)
        ]

    def retry(self, job_id: int, conn: Connection | None = None) -> bool:
        """Queue dead job ``job_id`` again with fresh attempts and reset the row its work
        belongs to; False when no dead job has that id. Raises ``CannotRetry`` (changing
        nothing): ``AlreadySent`` for a send that may have gone out already, ``RawDeleted`` for
        a message whose raw bytes retention deleted."""
        with joined(self.database, conn) as tx:
            row = tx.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.state == JobState.DEAD)).first()
            if row is None:
                return False
            # the reset refuses (CannotRetry) before anything is written, so a caller that catches
            # it inside its own transaction commits no requeued job
            RESET.get(row.kind, lambda *_: None)(tx, row.payload)
            return self.queue.retry_dead(job_id, tx)

    def discard(self, job_id: int, actor: str, conn: Connection | None = None) -> str | None:
        """Close dead job ``job_id`` for good; the error it died of ("" when none was kept),
        or None when no dead job has that id."""
        dead = (jobs.c.id == job_id, jobs.c.state == JobState.DEAD)
        with joined(self.database, conn) as tx:
            row = tx.execute(sa.select(jobs.c.last_error).where(*dead)).first()
            if row is None:
                return None
            tx.execute(jobs.update().where(*dead).values(
                state=JobState.DONE, locked_until=None, last_error=f"discarded by {actor}", updated_at=utcnow()))
        return row.last_error or ""

    def inspect(self, job_id: int) -> tuple[JobRecord, JobSubject | None] | None:
        """Job ``job_id`` in any state, with the row its work belongs to when that still exists;
        None when there is no such job."""
        with reading(self.database) as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            return _record(row), _subject(conn, row.kind, row.payload or {})

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs not done, by (kind, state)."""
        with reading(self.database) as conn:
            return job_counts(conn)

    def jobs(self, state: JobState, *, kind: str | None = None, before: int | None = None,
             limit: int = 50) -> builtins.list[JobSummary]:
        """Up to ``limit`` jobs in ``state`` (of ``kind``, when given), newest first; only ids
        below ``before`` (a cursor for the next page), when given."""
        query = sa.select(jobs).where(jobs.c.state == state).order_by(jobs.c.id.desc()).limit(limit)
        if kind:
            query = query.where(jobs.c.kind == kind)
        if before is not None:
            query = query.where(jobs.c.id < before)
        with reading(self.database) as conn:
            return [_summary(row) for row in conn.execute(query)]


def _summary(row: sa.Row) -> JobSummary:
    payload = row.payload or {}
    about = (f"message {payload['message_id']}" if "message_id" in payload
             else f"outbound {payload['outbound_id']}" if "outbound_id" in payload else "")
    return JobSummary(row.id, row.kind, row.state, row.attempts, row.max_attempts, row.run_after,
                      row.last_error or "", row.updated_at, about)


def _record(row: sa.Row) -> JobRecord:
    return JobRecord(**{f.name: row._mapping[f.name] for f in fields(JobRecord)})


def _subject(conn: Connection, kind: str, payload: dict[str, Any]) -> JobSubject | None:
    """The row the job's work belongs to: the inbound message or the outbound one."""
    if kind == INBOUND_JOB and "message_id" in payload:
        found = _row(conn, inbound_messages, _INBOUND_COLUMNS, str(payload["message_id"]))
        return JobSubject("inbound", InboundSubject(**found)) if found is not None else None
    if kind == SEND_JOB and "outbound_id" in payload:
        found = _row(conn, outbound_messages, _OUTBOUND_COLUMNS, int(payload["outbound_id"]))
        return JobSubject("outbound", OutboundSubject(**found)) if found is not None else None
    return None


_INBOUND_COLUMNS = tuple(f.name for f in fields(InboundSubject))
_OUTBOUND_COLUMNS = tuple(f.name for f in fields(OutboundSubject))


def _row(conn: Connection, table: sa.Table, names: tuple[str, ...], key: str | int) -> dict[str, Any] | None:
    """Columns ``names`` of the row of ``table`` with id ``key``."""
    row = conn.execute(sa.select(*(table.c[name] for name in names)).where(table.c.id == key)).first()
    return dict(row._mapping) if row is not None else None
