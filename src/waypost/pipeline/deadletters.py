"""Dead letters for the operator (invariant 6): see why a job gave up, and send it round again.

A retry puts the job back in the queue and resets the row its work belongs to (the inbound
message, or the outbound message) in the same transaction, so the next run starts clean."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.errors import PermanentError
from waypost.outbound.outbox import QUEUED as OUTBOUND_QUEUED
from waypost.outbound.outbox import SEND_JOB
from waypost.pipeline.inbox import INBOUND_JOB
from waypost.pipeline.inbox import QUEUED as INBOUND_QUEUED
from waypost.store.models import inbound_messages, jobs, outbound_messages
from waypost.store.queue import DEAD, JobQueue


@dataclass(frozen=True)
class DeadLetter:
    job_id: int
    kind: str
    subject: str  # what the job was about: "message <id>" or "outbound <id>"
    reason: str
    attempts: int
    since: datetime


def _reset_inbound(conn: Connection, payload: dict) -> None:
    conn.execute(inbound_messages.update().where(inbound_messages.c.id == payload["message_id"])
                 .values(status=INBOUND_QUEUED, reason=None, processed_at=None))


class AlreadySent(PermanentError):
    """The dead send job's message went out (perhaps unconfirmed): retrying would send it twice."""


def _reset_outbound(conn: Connection, payload: dict) -> None:
    row = conn.execute(sa.select(outbound_messages.c.state, outbound_messages.c.handoff_at)
                       .where(outbound_messages.c.id == payload["outbound_id"])).first()
    if row is not None and (row.state == "sent" or row.handoff_at is not None):
        raise AlreadySent(f"outbound {payload['outbound_id']} was already handed to the transport "
                          f"({row.state}); retrying could deliver it twice, so it stays as it is")
    conn.execute(outbound_messages.update().where(outbound_messages.c.id == payload["outbound_id"])
                 .values(state=OUTBOUND_QUEUED, last_error=None))


RESET = {INBOUND_JOB: _reset_inbound, SEND_JOB: _reset_outbound}
LABEL = {INBOUND_JOB: lambda p: f"message {p['message_id']}", SEND_JOB: lambda p: f"outbound {p['outbound_id']}"}


class DeadLetters:
    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def list(self, limit: int = 100) -> list[DeadLetter]:
        return [
            DeadLetter(row.id, row.kind, LABEL.get(row.kind, str)(row.payload), row.last_error or "",
                       row.attempts, row.updated_at)
            for row in self.queue.dead_letters(limit)
        ]

    def retry(self, job_id: int) -> bool:
        """False when no dead job has that id."""
        with self.queue.engine.begin() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.state == DEAD)).first()
            if row is None or not self.queue.retry_dead(job_id, conn):
                return False
            RESET.get(row.kind, lambda *_: None)(conn, row.payload)
        return True
