"""Durable accept: raw bytes on disk, then the message row and its job in one commit.

Invariant 1: the caller (an ingress) acknowledges only after ``accept`` returns. On any
storage error nothing is left half-written and StorageError is raised, so the ingress can
answer with a temporary failure and the sending server retries.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NoReturn, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from waypost.errors import StorageError
from waypost.mail.spooled import SpooledMessage
from waypost.mail.verdict import AuthVerdict
from waypost.store.blobs import BlobStore, LocalBlobStore
from waypost.store.models import InboundStatus, inbound_messages, utcnow
from waypost.store.queue import Doorbell, enqueue_many

INBOUND_JOB = "inbound"
# built once, executed for a whole group of rows (see queue._INSERT_JOB)
_INSERT_MESSAGE = inbound_messages.insert()
T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedMail:
    # a bytearray: the SMTP spool's own buffer, stored without a copy; a SpooledMessage: a big
    # message in the spool's file, streamed into the blob store behind its trace lines
    raw: bytes | bytearray | SpooledMessage
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    peer_ip: str | None = None
    helo: str | None = None
    ingress: str = "smtp"
    extra: dict[str, str] = field(default_factory=dict)
    auth: AuthVerdict | None = None  # SPF/DKIM/DMARC, checked by the ingress; None: not checked


@dataclass(frozen=True)
class StoredMail:
    """A mail an ingress streamed into the blob store itself (the SES ingress, from S3), under
    ``blob_key`` (``inbound_blob_key``); ``ses_message_id`` makes its row unique."""

    id: str
    received_at: datetime
    blob_key: str
    size: int
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    ingress: str
    auth: AuthVerdict | None = None
    ses_message_id: str | None = None


def inbound_blob_key(message_id: str, received_at: datetime) -> str:
    return f"inbound/{received_at:%Y/%m/%d}/{message_id}.eml"


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
        process takes it at once.

        A local blob directory is written through its ``deferring_directory_sync`` view: each
        message's file is fsynced at once, the directory once per group commit, before the
        rows are committed. Any other blob store makes each blob durable in ``put``."""
        self.engine = engine
        self._directories = blobs.deferring_directory_sync() if isinstance(blobs, LocalBlobStore) else None
        self.blobs: BlobStore = self._directories or blobs
        self.max_attempts = max_attempts
        self._group = GroupCommit(engine, self._record, prepare=self._sync_blobs,
                                  committed=doorbell.ring if doorbell is not None else None)

    def accept(self, mail: ReceivedMail) -> str:
        """Store the message durably and queue its processing; return its id."""
        now = utcnow()
        message_id = uuid.uuid4().hex
        blob_key = f"inbound/{now:%Y/%m/%d}/{message_id}.eml"
        self._store(blob_key, mail.raw)  # raises StorageError: nothing to undo
        row = {"id": message_id, "received_at": now, "peer_ip": mail.peer_ip, "helo": mail.helo,
               "mail_from": mail.mail_from, "rcpt_tos": list(mail.rcpt_tos), "blob_key": blob_key,
               "size": len(mail.raw), "ingress": mail.ingress, "status": InboundStatus.QUEUED,
               "auth": mail.auth.to_json() if mail.auth is not None else None, "ses_message_id": None,
               "auth_user": mail.extra.get("auth_user")}  # the submission login (apps/relay trusts it)
        try:
            self._group.commit(_Entry(row, blob_to_sync=blob_key))
        except Exception as err:
            self.blobs.delete(blob_key)  # its transaction was rolled back: no row refers to it
            _raise_storage_error(err)
        return message_id

    def accept_stored(self, mail: StoredMail) -> str:
        """Queue a mail whose raw bytes are already durable under ``mail.blob_key``; return its
        id. Raises StorageError when the row could not be committed (a second row for the same
        ``ses_message_id`` among them) and leaves the blob to the caller."""
        row = {"id": mail.id, "received_at": mail.received_at, "peer_ip": None, "helo": None,
               "mail_from": mail.mail_from, "rcpt_tos": list(mail.rcpt_tos), "blob_key": mail.blob_key,
               "size": mail.size, "ingress": mail.ingress, "status": InboundStatus.QUEUED,
               "auth": mail.auth.to_json() if mail.auth is not None else None, "ses_message_id": mail.ses_message_id,
               "auth_user": None}
        try:
            self._group.commit(_Entry(row, blob_to_sync=None))
        except Exception as err:
            _raise_storage_error(err)
        return mail.id

    def _store(self, blob_key: str, raw: bytes | bytearray | SpooledMessage) -> None:
        if isinstance(raw, bytes):
            self.blobs.put(blob_key, raw)
            return
        if isinstance(raw, SpooledMessage):
            with raw.stream() as spooled:
                self.blobs.put_stream(blob_key, spooled)  # from the file, a piece at a time
            return
        with memoryview(raw) as view, io.BufferedReader(_ViewReader(view)) as stream:
            self.blobs.put_stream(blob_key, stream)  # in pieces: a 40 MB message is never copied whole

    def _sync_blobs(self, entries: list[_Entry]) -> None:
        """Before the group's transaction: its blobs' names made durable, one fsync a folder."""
        if self._directories is not None:
            self._directories.sync_directories(entry.blob_to_sync for entry in entries if entry.blob_to_sync)

    def _record(self, conn: Connection, entries: list[_Entry]) -> None:
        """The group's rows and jobs: two statements, each executed once for all of them."""
        conn.execute(_INSERT_MESSAGE, [entry.row for entry in entries])
        enqueue_many(conn, INBOUND_JOB, [{"message_id": entry.row["id"]} for entry in entries],
                     max_attempts=self.max_attempts)

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


class _ViewReader(io.RawIOBase):
    """A binary file reading a buffer in place (``io.BytesIO`` would copy a bytearray first)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        count = min(len(target), len(self._view) - self._at)
        target[:count] = self._view[self._at:self._at + count]
        self._at += count
        return count


@dataclass(frozen=True)
class _Entry:
    """A message row for the group commit; ``blob_to_sync``: its blob, whose directory the
    group syncs before committing (None: the blob is durable already)."""

    row: dict[str, Any]
    blob_to_sync: str | None


def _raise_storage_error(err: Exception) -> NoReturn:
    """What ``accept`` raises for a failed group commit: StorageError for a database or disk
    error (the ingress answers 4xx); anything else (StorageError itself, or a bug) as it is."""
    if isinstance(err, SQLAlchemyError | OSError):
        raise StorageError(f"cannot record message: {err.__class__.__name__}: {err}") from err
    raise err


class GroupCommit(Generic[T]):
    """Commits the rows of messages accepted at about the same time in one transaction.

    Each ingress session stores its message from its own thread and may answer 250 only once
    its row is committed. The first thread to arrive commits what is waiting, its own row
    included; rows that arrive meanwhile wait for the next commit, which one of them makes for
    all. Under load that is one transaction (one lock, one WAL sync on SQLite) for several
    messages; alone, a message is committed at once. A batch that fails is retried row by row,
    so one bad row costs only its own message a temporary failure.

    ``write`` puts a batch's items in the transaction; ``prepare`` runs for the batch just
    before the transaction begins (the blobs' directory sync), so the database's write lock is
    not held meanwhile; ``committed`` runs after a batch once any of it is committed, before its
    waiters return (the worker's doorbell); what it raises is logged, never theirs."""

    MAX_BATCH = 64

    def __init__(self, engine: Engine, write: Callable[[Connection, list[T]], None], *,
                 prepare: Callable[[list[T]], None] | None = None,
                 committed: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.write = write
        self.prepare = prepare
        self.committed = committed
        self._changed = threading.Condition()
        self._waiting: list[_Pending[T]] = []
        self._committing = False

    def commit(self, item: T) -> None:
        """Return once ``item`` is committed; raise the error that kept it from being committed
        (the database's, or whatever ``prepare`` or ``write`` raised)."""
        mine = _Pending(item)
        with self._changed:
            self._waiting.append(mine)
            while not mine.done:
                if self._committing:
                    self._changed.wait()
                    continue
                self._committing = True
                batch, self._waiting = self._waiting[:self.MAX_BATCH], self._waiting[self.MAX_BATCH:]
                self._changed.release()
                try:
                    self._commit(batch)
                finally:
                    self._changed.acquire()
                    self._committing = False
                    self._changed.notify_all()
        if mine.error is not None:
            raise mine.error

    def _commit(self, batch: list[_Pending[T]]) -> None:
        self._try(batch)
        if self.committed is not None and any(pending.error is None for pending in batch):
            try:
                self.committed()
            except Exception:  # the rows are committed whatever this says: their 250s stand
                log.exception("after a group commit")

    def _try(self, batch: list[_Pending[T]]) -> None:
        try:
            self._in_one(batch)
        except Exception as err:
            if len(batch) == 1:
                batch[0].finish(err)
                return
            for pending in batch:  # find the one that failed: the others still deserve their 250
                try:
                    self._in_one([pending])
                except Exception as own:
                    pending.finish(own)
        except BaseException as err:  # interrupted: every waiter must hear of it
            for pending in batch:
                pending.finish(StorageError(f"commit interrupted: {err.__class__.__name__}: {err}"))
            raise

    def _in_one(self, batch: list[_Pending[T]]) -> None:
        items = [pending.item for pending in batch]
        if self.prepare is not None:
            self.prepare(items)
        with self.engine.begin() as conn:
            self.write(conn, items)
        for pending in batch:
            pending.finish(None)


class _Pending(Generic[T]):
    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: Exception | None = None

    def finish(self, error: Exception | None) -> None:
        self.done, self.error = True, error
