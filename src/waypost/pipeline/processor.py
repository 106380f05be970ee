"""One inbound message through gate, router and app, ending in exactly one recorded outcome:
processed, refused (with its reason, never answered), or dead (raw message kept)."""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost import failpoints
from waypost.mail.commands import Verb, read_command
from waypost.mail.limits import MimeLimits
from waypost.mail.parse import ParsedMessage, parse_message
from waypost.mail.verdict import AuthVerdict
from waypost.pipeline.duplicates import DuplicateGuard, dedupe_key, duplicate_reason
from waypost.pipeline.gate import Gate, GateInput, Refusal
from waypost.pipeline.inbox import INBOUND_JOB
from waypost.pipeline.router import OPERATOR_MAILBOXES, Commit, InboundMail, Router
from waypost.store.blobs import BlobStore
from waypost.store.models import InboundStatus, inbound_messages, utcnow
from waypost.store.queue import Job, JobKind, JobQueue, enqueue

log = logging.getLogger(__name__)

PURGE_RAW_JOB = "purge-raw"


class InboundProcessor:
    def __init__(self, engine: Engine, blobs: BlobStore, queue: JobQueue, gate: Gate, router: Router,
                 mime_limits: MimeLimits | None = None, *, duplicate_window: timedelta | None = None) -> None:
        self.mime_limits = mime_limits
        # None or zero: every copy of a mail is handled (gate.duplicate_window_days = 0)
        self.duplicates = DuplicateGuard(duplicate_window) if duplicate_window else None
        self.engine = engine
        self.blobs = blobs
        self.queue = queue
        self.gate = gate
        self.router = router

    def process(self, job: Job) -> None:
        """Raises on failure; the worker retries or dead-letters (see ``mark_dead``)."""
        row = self._load(job.payload["message_id"])
        if row is None or row.status != InboundStatus.QUEUED:
            self._finish(job, None, None, "")
            return
        with self.blobs.open(row.blob_key) as stream:
            message = parse_message(stream, self.mime_limits)
        routed = self.router.app_for(row.rcpt_tos)
        # no app (an operator mailbox without one): kept, never answered, so nothing to gate
        open_to_all = routed is None or routed[0].open_to_all
        auth = _verdict(row.auth)
        command = read_command(message.subject, message.text)
        verdict = self.gate.decide(GateInput(message.from_address, row.peer_ip, row.ingress, auth,
                                             envelope_sender=row.mail_from, robot_headers=message.robot_headers,
                                             asks_to_start=command is not None and command.verb == Verb.START),
                                   open_to_all=open_to_all)
        if not verdict.allowed:
            log.info("refused %s: %s (%s)", row.id, verdict.reason, verdict.detail)
            notice: Commit | None = None
            if verdict.reason == Refusal.RATE_LIMITED and routed is not None and message.from_address:
                # an allowed, authenticated sender over the limit: one notice per window (the
                # app's idempotency key holds it to one), never anything for other refusals
                app, sender = routed[0], message.from_address

                def notice(conn: Connection) -> None:
                    app.rate_notice(conn, sender, message)
            self._finish(job, message, InboundStatus.REFUSED, f"{verdict.reason}: {verdict.detail}", notice)
            return
        if routed is None:
            self._finish(job, message, InboundStatus.PROCESSED, _operator_note(row.rcpt_tos))
            return
        app, recipient = routed
        key = self._dedupe_key(row, message)
        if key is not None and (earlier := self._earlier_copy(key, row)) is not None:
            # answered already: no slow work, no effects; its raw bytes go as the handled copy's do
            self._finish(job, message, InboundStatus.PROCESSED, duplicate_reason(earlier),
                         purge_after=app.raw_retention)
            return
        raw = self.blobs.get(row.blob_key) if app.reads_raw else None
        mail = InboundMail(row.id, message, message.from_address or "", recipient, row.received_at, raw)
        commit = app.handle(mail)
        if key is not None:
            commit = self._claiming(key, row, commit)
        failpoints.hit("processor.before_commit")
        self._finish(job, message, InboundStatus.PROCESSED, f"handled by {app.name}", commit,
                     purge_after=app.raw_retention)

    def job_kinds(self) -> list[JobKind]:
        """The jobs this processor runs: inbound mail, and the deletion of raw messages."""
        return [
            JobKind(INBOUND_JOB, self.process, lambda job, why: self.mark_dead(job.payload["message_id"], why)),
            JobKind(PURGE_RAW_JOB, self.purge_raw, lambda job, why: log.error(
                "could not delete raw message %s: %s", job.payload["message_id"], why)),
        ]

    def purge_raw(self, job: Job) -> None:
        """Delete a processed message's raw bytes (the original attachments with them)."""
        row = self._load(job.payload["message_id"])
        if row is not None and row.status == InboundStatus.PROCESSED and row.raw_deleted_at is None:
            self.blobs.delete(row.blob_key)
            log.info("deleted the raw message of %s", row.id)
            deleted: str | None = row.id
        else:
            deleted = None
        with self.engine.begin() as conn:
            if deleted is not None:
                conn.execute(inbound_messages.update().where(inbound_messages.c.id == deleted)
                             .values(raw_deleted_at=utcnow()))
            self.queue.complete(conn, job)

    def mark_dead(self, message_id: str, reason: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                inbound_messages.update()
                .where(inbound_messages.c.id == message_id)
                .values(status=InboundStatus.DEAD, reason=reason[:2000], processed_at=utcnow())
            )

    def _finish(self, job: Job, message: ParsedMessage | None, status: InboundStatus | None, reason: str,
                commit: Commit | None = None, purge_after: timedelta | None = None) -> None:
        with self.engine.begin() as conn:
            if commit is not None:
                reason = commit(conn) or reason
            if status is not None:
                _record(conn, job.payload["message_id"], message, status, reason)
            if purge_after is not None:  # in the same commit, so no processed message is forgotten
                enqueue(conn, PURGE_RAW_JOB, {"message_id": job.payload["message_id"]},
                        max_attempts=job.max_attempts, run_after=utcnow() + purge_after)
            self.queue.complete(conn, job)

    def _dedupe_key(self, row: sa.Row, message: ParsedMessage) -> str | None:
        if self.duplicates is None:
            return None
        return dedupe_key(message.from_address or row.mail_from, message.message_id)

    def _earlier_copy(self, key: str, row: sa.Row) -> str | None:
        assert self.duplicates is not None
        with self.engine.connect() as conn:
            earlier = self.duplicates.earlier_copy(conn, key, row.id, row.received_at)
        if earlier is not None:
            log.info("%s is a duplicate of %s: not handled", row.id, earlier)
        return earlier

    def _claiming(self, key: str, row: sa.Row, commit: Commit) -> Commit:
        """The app's commit, run only if this message wins the claim on its (sender, Message-ID)
        in the same transaction; a copy handled meanwhile (another worker) makes it a duplicate."""
        guard = self.duplicates
        assert guard is not None

        def claim_then_commit(conn: Connection) -> str | None:
            earlier = guard.claim(conn, key, row.id, row.received_at)
            if earlier is not None:
                log.info("%s is a duplicate of %s: not handled", row.id, earlier)
                return duplicate_reason(earlier)
            return commit(conn)
        return claim_then_commit

    def _load(self, message_id: str) -> sa.Row | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(inbound_messages).where(inbound_messages.c.id == message_id)).first()


def _record(conn: Connection, message_id: str, message: ParsedMessage | None, status: InboundStatus,
            reason: str) -> None:
    values: dict[str, object] = {"status": status, "reason": reason, "processed_at": utcnow()}
    if message is not None:
        values.update(from_address=message.from_address, subject=message.subject,
                      message_id_header=(message.message_id or "")[:998] or None)
    conn.execute(inbound_messages.update().where(inbound_messages.c.id == message_id).values(**values))


def _verdict(data: dict | None) -> AuthVerdict | None:
    if data is None:
        return None
    try:
        return AuthVerdict.from_json(data)
    except (ValueError, TypeError, KeyError):
        log.warning("unreadable authentication verdict %r; treated as not checked", data)
        return None


def _operator_note(rcpt_tos: list[str]) -> str:
    return f"kept for the operator ({', '.join(OPERATOR_MAILBOXES)} mailbox): {', '.join(rcpt_tos)}"
