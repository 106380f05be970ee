"""Durable accept: raw bytes on disk, then the message row and its job in one commit.

Invariant 1: the caller (an ingress) acknowledges only after ``accept`` returns. On any
storage error nothing is left half-written and StorageError is raised, so the ingress can
answer with a temporary failure and the sending server retries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from waypost.errors import StorageError
from waypost.mail.verdict import AuthVerdict
from waypost.store.blobs import BlobStore
from waypost.store.models import InboundStatus, inbound_messages, utcnow
from waypost.store.queue import Doorbell, enqueue

INBOUND_JOB = "inbound"


@dataclass(frozen=True)
class ReceivedMail:
    raw: bytes
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    peer_ip: str | None = None
    helo: str | None = None
    ingress: str = "smtp"
    extra: dict[str, str] = field(default_factory=dict)
    auth: AuthVerdict | None = None  # SPF/DKIM/DMARC, checked by the ingress; None: not checked


@dataclass(frozen=True)
class RefusedMail:
    """What is kept of a mail refused during the SMTP session (``pipeline/arrival.py``): who sent
    it, to whom, from where, and why; never its content."""

    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    size: int
    reason: str
    peer_ip: str | None = None
    helo: str | None = None
    ingress: str = "smtp"
    from_address: str | None = None
    message_id: str | None = None
    auth: AuthVerdict | None = None


# The Ingress port: what every way in (the SMTP listeners today; SES receipts through S3 and
# SQS, a Lambda) calls for each message, acknowledging its sender only after it returned; it
# returns the message's id and raises StorageError when the message could not be made durable.
AcceptMail = Callable[[ReceivedMail], str]
# What an ingress calls for a mail it refused before storing it (the refusal is its answer):
# records the metadata for the operator and returns the row's id. It may raise StorageError;
# the refusal stands all the same.
RecordRefusal = Callable[[RefusedMail], str]


class Inbox:
    def __init__(self, engine: Engine, blobs: BlobStore, *, max_attempts: int,
                 doorbell: Doorbell | None = None) -> None:
        """``doorbell``: rung once a message and its job are committed, so a worker of this
        process takes it at once."""
        self.engine = engine
        self.blobs = blobs
        self.max_attempts = max_attempts
        self.doorbell = doorbell

    def accept(self, mail: ReceivedMail) -> str:
        """Store the message durably and queue its processing; return its id."""
        now = utcnow()
        message_id = uuid.uuid4().hex
        blob_key = f"inbound/{now:%Y/%m/%d}/{message_id}.eml"
        self.blobs.put(blob_key, mail.raw)  # raises StorageError: nothing to undo
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    inbound_messages.insert().values(
                        id=message_id,
                        received_at=now,
                        peer_ip=mail.peer_ip,
                        helo=mail.helo,
                        mail_from=mail.mail_from,
                        rcpt_tos=list(mail.rcpt_tos),
                        blob_key=blob_key,
                        size=len(mail.raw),
                        ingress=mail.ingress,
                        status=InboundStatus.QUEUED,
                        auth=mail.auth.to_json() if mail.auth is not None else None,
                    )
                )
                enqueue(conn, INBOUND_JOB, {"message_id": message_id}, max_attempts=self.max_attempts)
        except SQLAlchemyError as err:
            self.blobs.delete(blob_key)
            raise StorageError(f"cannot record message: {err.__class__.__name__}: {err}") from err
        if self.doorbell is not None:
            self.doorbell.ring()
        return message_id

    def refuse(self, mail: RefusedMail) -> str:
        """Record a mail refused at arrival: a row the console and retention treat as any other
        refused message, with no raw bytes (an empty ``blob_key``, ``raw_deleted_at`` set)."""
        now = utcnow()
        message_id = uuid.uuid4().hex
        try:
            with self.engine.begin() as conn:
                conn.execute(inbound_messages.insert().values(
                    id=message_id, received_at=now, peer_ip=mail.peer_ip, helo=mail.helo, mail_from=mail.mail_from,
                    rcpt_tos=list(mail.rcpt_tos), blob_key="", size=mail.size, ingress=mail.ingress,
                    status=InboundStatus.REFUSED, reason=mail.reason[:2000], from_address=mail.from_address,
                    message_id_header=(mail.message_id or "")[:998] or None, processed_at=now,
                    raw_deleted_at=now, auth=mail.auth.to_json() if mail.auth is not None else None))
        except SQLAlchemyError as err:
            raise StorageError(f"cannot record a refused message: {err.__class__.__name__}: {err}") from err
        return message_id
