"""The outbox: every message Waypost sends is queued here and delivered from here.

Queueing happens inside the caller's transaction, keyed by a deterministic idempotency key,
so a handler that runs twice queues one message. Delivery marks the row ``sending`` before
handing it to the Sender and ``sent`` after; a crash in between leaves ``sending``, and the
retry sends again with the same idempotency key, which the catcher turns into the same file.
(The send-path work adds suppression, pause, quota and rate checks here, before the Sender.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost import failpoints
from waypost.outbound.senders.base import Envelope, Sender
from waypost.store.models import outbound_messages, utcnow
from waypost.store.queue import Job, JobQueue, enqueue

log = logging.getLogger(__name__)

SEND_JOB = "send"
QUEUED, SENDING, SENT, FAILED = "queued", "sending", "sent", "failed"


@dataclass(frozen=True)
class OutboundMessage:
    idempotency_key: str
    stream: str
    recipient: str
    envelope_sender: str
    subject: str
    message_id: str
    raw: bytes


class Outbox:
    def __init__(self, engine: Engine, queue: JobQueue, sender: Sender, *, max_attempts: int) -> None:
        self.engine = engine
        self.queue = queue
        self.sender = sender
        self.max_attempts = max_attempts

    def queue_message(self, conn: Connection, message: OutboundMessage) -> int:
        """Queue inside the caller's transaction; the same key queues nothing new."""
        existing = conn.execute(
            sa.select(outbound_messages.c.id).where(outbound_messages.c.idempotency_key == message.idempotency_key)
        ).scalar()
        if existing is not None:
            return int(existing)
        row_id = conn.execute(
            outbound_messages.insert().values(
                idempotency_key=message.idempotency_key,
                stream=message.stream,
                recipient=message.recipient,
                envelope_sender=message.envelope_sender,
                subject=message.subject,
                message_id_header=message.message_id,
                raw=message.raw,
                state=QUEUED,
                created_at=utcnow(),
            )
        ).inserted_primary_key[0]
        enqueue(conn, SEND_JOB, {"outbound_id": int(row_id)}, max_attempts=self.max_attempts)
        return int(row_id)

    def deliver(self, job: Job) -> None:
        """Run one send job. Raises what the Sender raised; the worker decides on retries."""
        row = self._load(job.payload["outbound_id"])
        if row is None or row.state in (SENT, FAILED):
            with self.engine.begin() as conn:
                self.queue.complete(conn, job)
            return
        self._set_state(row.id, SENDING)
        envelope = Envelope(row.envelope_sender, row.recipient, row.idempotency_key)
        provider_id = self.sender.send(envelope, row.raw)
        failpoints.hit("outbox.after_send")
        with self.engine.begin() as conn:
            conn.execute(
                outbound_messages.update()
                .where(outbound_messages.c.id == row.id)
                .values(state=SENT, provider_message_id=provider_id, sent_at=utcnow(), last_error=None)
            )
            self.queue.complete(conn, job)
        log.info("sent %s to %s via %s", row.idempotency_key, row.recipient, self.sender.name)

    def record_failure(self, outbound_id: int, error: str, *, final: bool) -> None:
        values = {"last_error": error, **({"state": FAILED} if final else {})}
        with self.engine.begin() as conn:
            conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id).values(**values))

    def _load(self, outbound_id: int) -> sa.Row | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(outbound_messages).where(outbound_messages.c.id == outbound_id)).first()

    def _set_state(self, outbound_id: int, state: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id).values(state=state))
