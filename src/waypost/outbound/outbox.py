"""The outbox: every message Waypost sends is queued here and delivered from here (invariant 4).

Queueing happens inside the caller's transaction, keyed by a deterministic idempotency key,
so a handler that runs twice queues one message. Delivery is one job per message:

1. **Admission**, in one transaction that holds the send lock: the pause switches (global
   and per stream), the suppression list (not for the operator stream: mail to the operator
   is never suppressed), the per-second rate and the rolling 24-hour quota.
   A paused message waits (state ``paused``), a suppressed one ends ``suppressed`` and never
   reaches a Sender, a rate-limited one is deferred to the moment the window frees. Deferrals
   do not use up attempts. An admitted message is ``sending`` with ``admitted_at`` set; the
   rate windows count those times, so several worker processes share one budget. Then,
   outside the lock, the recipient's domain must take mail (recipient_domains.py): a null MX
   or no mail host ends ``failed`` with the reason; no DNS answer is a transient failure.
2. **Handoff**: the Sender calls back just before the message's bytes leave, and
   ``handoff_at`` is committed. From then on the message is never handed over again unless the
   transport said no: after a crash, a row still ``sending`` with ``handoff_at`` set is settled
   as sent (confirmed by the Sender when it can tell, else marked ``unconfirmed``), so a crash
   between a send and its commit never delivers twice.
3. **Outcome**: ``sent`` with the provider's message id; a transient error puts the row back
   to ``queued`` and the worker retries with backoff; throttling defers without using an
   attempt; a permanent error ends ``failed`` with the reason; a provider-side pause pauses
   the outbox.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost import failpoints
from waypost.errors import PermanentError, TransientError
from waypost.outbound import control, suppression
from waypost.outbound.ratelimit import RateLimiter
from waypost.outbound.senders.base import (
    DeliveryUnknownError,
    Envelope,
    RecipientRefusedError,
    Sender,
    SendingPausedError,
    ThrottledError,
)
from waypost.store.db import inserted_id, is_postgres
from waypost.store.models import OutboundState as OutboundState  # re-exported: the outbox's own states
from waypost.store.models import outbound_messages, send_locks, utcnow
from waypost.store.queue import Job, JobKind, JobQueue, enqueue

log = logging.getLogger(__name__)

SEND_JOB = "send"
FINAL = (OutboundState.SENT, OutboundState.FAILED, OutboundState.SUPPRESSED)


class SendGuard(Protocol):
    def check_send(self, conn: Connection, stream: str, recipient: str) -> tuple[str, str] | None:
        """(scope, reason) to pause for before this message goes, or None."""


class RecipientCheck(Protocol):
    def refusal(self, address: str) -> str | None:
        """Why mail to ``address`` can never be delivered (its domain takes no mail), or None.
        Raises TransientError when that cannot be told now."""


@dataclass(frozen=True)
class OutboundMessage:
    idempotency_key: str
    stream: str
    recipient: str
    envelope_sender: str
    subject: str
    message_id: str
    raw: bytes


class Verp:
    """Per-message envelope senders, ``bounces+<id>-<mac>@bounce-domain``: a bounce that comes
    back names the outbound row, even when the DSN itself is unreadable, and the MAC stops
    anyone from suppressing an address by mailing a forged bounce."""

    def __init__(self, mailbox: str, domain: str, keys: Sequence[bytes]) -> None:
        self.mailbox = mailbox
        self.domain = domain
        self.keys = tuple(keys)

    def address(self, outbound_id: int) -> str:
        return f"{self.mailbox}+{_base36(outbound_id)}-{self._mac(self.keys[0], outbound_id)}@{self.domain}"

    def outbound_id(self, address: str) -> int | None:
        """The outbound row a VERP address names, or None when it is not one of ours."""
        local, _, domain = address.rpartition("@")
        prefix = f"{self.mailbox}+"
        if domain.lower() != self.domain or not local.lower().startswith(prefix):
            return None
        number, _, mac = local[len(prefix):].lower().partition("-")
        try:
            outbound_id = int(number, 36)
        except ValueError:
            return None
        if any(hmac.compare_digest(mac, self._mac(key, outbound_id)) for key in self.keys):
            return outbound_id
        return None

    @staticmethod
    def _mac(key: bytes, outbound_id: int) -> str:
        digest = hmac.new(key, f"verp:{outbound_id}".encode(), hashlib.sha256).digest()[:8]
        return base64.b32encode(digest).decode().rstrip("=").lower()  # lower case: relays may fold it


def _fenced(outbound_id: int, fence: datetime | None) -> tuple[sa.ColumnElement[bool], ...]:
    """The row, and only while this attempt's admission still stands."""
    if fence is None:
        return (outbound_messages.c.id == outbound_id,)
    return (outbound_messages.c.id == outbound_id, outbound_messages.c.admitted_at == fence)


_DATE_HEADER = re.compile(rb"^Date:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", re.IGNORECASE | re.MULTILINE)
STALE_DATE = timedelta(minutes=10)


def _fresh_date(raw: bytes, created_at: datetime) -> bytes:
    """A message that waited (a pause, the daily quota) would arrive with an old Date and sort
    far down the inbox: give it the time it actually leaves."""
    if utcnow() - created_at < STALE_DATE:
        return raw
    ends = [at for at in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if at >= 0]
    end = min(ends) if ends else len(raw)
    head, body = raw[:end], raw[end:]
    stamped = f"Date: {format_datetime(utcnow())}".encode()
    return _DATE_HEADER.sub(lambda _: stamped, head, count=1) + body


def _window(window_at: datetime | None) -> dict[str, datetime]:
    """The rate-window time to record: only when bytes were handed over (a message refused
    before its handoff never reached the provider and does not count against the rate)."""
    return {} if window_at is None else {"window_at": window_at}


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


@dataclass(frozen=True)
class _Admitted:
    row: sa.Row
    admitted_at: datetime  # this attempt's fence: every later update of the row must match it


class _TakenOver(Exception):
    """Another worker re-admitted this message (our lease ran out): this attempt must stop
    without sending and without touching the row or the job."""


@dataclass(frozen=True)
class _Interrupted:
    row: sa.Row  # handed over by an attempt that stopped before recording the outcome


@dataclass(frozen=True)
class _Done:
    state: str


@dataclass(frozen=True)
class _Later:
    seconds: float
    why: str
    all_sends: bool  # True: nothing may be sent before then (rate, quota, global pause)


class Outbox:
    def __init__(self, engine: Engine, queue: JobQueue, sender: Sender, *, max_attempts: int,
                 limiter: RateLimiter, verp: Verp | None = None, paused_recheck: float = 60.0,
                 guard: SendGuard | None = None,
                 on_refused: Callable[[sa.Row, RecipientRefusedError], None] | None = None,
                 send_job: str = SEND_JOB, recipient_domains: RecipientCheck | None = None) -> None:
        self.engine = engine
        # the job kind of this outbox's sends: `waypost drill` uses its own, so that only the
        # drill's process (with the drill's transport) hands its messages over
        self.send_job = send_job
        self.queue = queue
        self.sender = sender
        self.max_attempts = max_attempts
        self.limiter = limiter
        self.verp = verp
        self.paused_recheck = paused_recheck
        self.guard = guard
        self.on_refused = on_refused  # a recipient refused at RCPT: the feedback policy hears of it
        # asked after admission, outside the send lock (a DNS lookup must not hold every sender up)
        self.recipient_domains = recipient_domains
        # this process knows no send can start before then (monotonic clock); the worker
        # leaves send jobs alone until it passes instead of claiming and deferring each one
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    # -- queueing ------------------------------------------------------------------------

    def queue_message(self, conn: Connection, message: OutboundMessage) -> int:
        """Queue inside the caller's transaction; the same key queues nothing new."""
        existing = conn.execute(
            sa.select(outbound_messages.c.id).where(outbound_messages.c.idempotency_key == message.idempotency_key)
        ).scalar()
        if existing is not None:
            return int(existing)
        row_id = inserted_id(conn.execute(
            outbound_messages.insert().values(
                idempotency_key=message.idempotency_key,
                stream=message.stream,
                recipient=message.recipient,
                envelope_sender=message.envelope_sender,
                subject=message.subject,
                message_id_header=message.message_id,
                raw=message.raw,
                state=OutboundState.QUEUED,
                created_at=utcnow(),
            )
        ))
        if self.verp is not None:
            conn.execute(outbound_messages.update().where(outbound_messages.c.id == row_id)
                         .values(envelope_sender=self.verp.address(row_id)))
        enqueue(conn, self.send_job, {"outbound_id": row_id}, max_attempts=self.max_attempts)
        return row_id

    # -- delivery ------------------------------------------------------------------------

    def blocked_for(self) -> float:
        """Seconds before this process may start another send (0: now)."""
        return max(0.0, self._blocked_until - time.monotonic())

    def job_kinds(self) -> list[JobKind]:
        """The send job, held back while the rate, the quota or a pause says wait."""
        return [JobKind(self.send_job, self.deliver,
                        lambda job, why: self.record_failure(job.payload["outbound_id"], why, final=True),
                        held_back=self.blocked_for)]

    def deliver(self, job: Job) -> None:
        """Run one send job. Raises TransientError or PermanentError for the worker to retry or
        dead-letter; every other outcome is recorded here."""
        decision = self._admit(job, job.payload["outbound_id"])
        if isinstance(decision, _Done):
            log.info("outbound %s ended %s before sending", job.payload["outbound_id"], decision.state)
        elif isinstance(decision, _Later):
            self._defer(job, decision)
        elif isinstance(decision, _Interrupted):
            self._settle_interrupted(job, decision.row)
        else:
            try:
                if self._domain_takes_mail(job, decision):
                    self._send(job, decision.row, decision.admitted_at)
            except _TakenOver as err:
                log.warning("outbound %s: %s", job.payload["outbound_id"], err)

    def _domain_takes_mail(self, job: Job, admitted: _Admitted) -> bool:
        """False when the recipient's domain takes no mail: the message ends ``failed`` with the
        reason and no Sender sees it. No answer from DNS: back to ``queued`` and retried."""
        row = admitted.row
        if self.recipient_domains is None:
            return True
        try:
            refusal = self.recipient_domains.refusal(row.recipient)
        except TransientError as err:
            self._requeue(row.id, f"{type(err).__name__}: {err}", None, admitted.admitted_at)
            raise
        if refusal is None:
            return True
        self._finish(job, row.id, OutboundState.FAILED, error=f"recipient domain: {refusal}",
                     fence=admitted.admitted_at)
        log.warning("outbound %s not sent: %s", row.idempotency_key, refusal)
        return False

    def _send(self, job: Job, row: sa.Row, admitted_at: datetime) -> None:
        envelope = Envelope(row.envelope_sender, row.recipient, row.idempotency_key, row.stream,
                            row.message_id_header)
        handed_over_at: datetime | None = None
        mine = (outbound_messages.c.id == row.id, outbound_messages.c.admitted_at == admitted_at)

        def handoff() -> None:
            nonlocal handed_over_at
            if handed_over_at is not None:
                raise RuntimeError("a Sender called handoff twice")
            with self.engine.begin() as conn:
                now = utcnow()
                taken = conn.execute(outbound_messages.update().where(
                    *mine, outbound_messages.c.state == OutboundState.SENDING, outbound_messages.c.handoff_at.is_(None),
                ).values(handoff_at=now)).rowcount
                if taken != 1:  # a slow attempt whose lease ran out: another worker has the message
                    raise _TakenOver("another worker took this message over; this attempt sends nothing")
                self.limiter.handed_over(conn, now)
            # taken after the commit: no byte of the message left before this moment
            handed_over_at = utcnow()
            failpoints.hit("outbox.after_handoff")

        try:
            provider_id = self.sender.send(envelope, _fresh_date(row.raw, row.created_at), handoff)
        except _TakenOver:
            raise
        except DeliveryUnknownError as err:
            self._finish(job, row.id, OutboundState.SENT, provider_id=None, unconfirmed=True, error=str(err),
                         window_at=handed_over_at, fence=admitted_at)
            log.warning("outbound %s handed over but not confirmed (%s); not sent again", row.idempotency_key, err)
            return
        except SendingPausedError as err:
            self._refund(handed_over_at)
            self._provider_paused(job, row.id, str(err), handed_over_at, admitted_at)
            return
        except ThrottledError as err:
            self._refund(handed_over_at)  # the provider took nothing: it does not count toward the quota
            self._requeue(row.id, f"throttled: {err}", handed_over_at, admitted_at)
            self._defer(job, _Later(err.retry_after, f"throttled by {self.sender.name}: {err}", all_sends=True))
            return
        except PermanentError as err:
            self._finish(job, row.id, OutboundState.FAILED, error=f"{type(err).__name__}: {err}", complete=False,
                         window_at=handed_over_at, fence=admitted_at)
            if isinstance(err, RecipientRefusedError) and self.on_refused is not None:
                self.on_refused(row, err)
            raise
        except TransientError as err:
            self._refund(handed_over_at)
            self._requeue(row.id, f"{type(err).__name__}: {err}", handed_over_at, admitted_at)
            raise
        except Exception as err:
            if handed_over_at is not None:  # a bug after the bytes left: treat as handed over, never resend
                self._finish(job, row.id, OutboundState.SENT, provider_id=None, unconfirmed=True,
                             error=f"{type(err).__name__} after handoff: {err}", window_at=handed_over_at,
                             fence=admitted_at)
                log.exception("outbound %s: the sender failed after handoff; not sent again", row.idempotency_key)
                return
            self._requeue(row.id, f"{type(err).__name__}: {err}", None, admitted_at)
            raise
        if handed_over_at is None:
            log.error("sender %s returned without calling handoff for %s", self.sender.name, row.idempotency_key)
        failpoints.hit("outbox.after_send")
        self._finish(job, row.id, OutboundState.SENT, provider_id=provider_id, window_at=handed_over_at,
                     fence=admitted_at)
        log.info("sent %s to %s via %s (%s)", row.idempotency_key, row.recipient, self.sender.name, provider_id)

    def _settle_interrupted(self, job: Job, row: sa.Row) -> None:
        """The last attempt handed the message over and stopped before recording the outcome."""
        envelope = Envelope(row.envelope_sender, row.recipient, row.idempotency_key, row.stream,
                            row.message_id_header)
        provider_id = self.sender.confirm(envelope)
        if provider_id is None and self.sender.confirms:
            # the transport can tell, and it never got the message: sending again is safe
            self._requeue(row.id, "interrupted before the transport stored the message", utcnow(), None)
            self.deliver(job)
            return
        note = None if provider_id else (
            "interrupted after handoff; the transport cannot confirm delivery, and sending again "
            "could deliver twice, so it was not sent again")
        self._finish(job, row.id, OutboundState.SENT, provider_id=provider_id, unconfirmed=provider_id is None,
                     error=note, window_at=utcnow())
        log.warning("outbound %s settled after an interrupted send: %s", row.idempotency_key,
                    provider_id or "unconfirmed")

    def _admit(self, job: Job, outbound_id: int) -> _Admitted | _Interrupted | _Done | _Later:
        with self.engine.begin() as conn:
            lock = sa.select(send_locks.c.name).where(send_locks.c.name == "send")
            conn.execute(lock.with_for_update() if is_postgres(conn) else lock)
            row = conn.execute(sa.select(outbound_messages).where(outbound_messages.c.id == outbound_id)).first()
            if row is None or row.state in FINAL:
                self.queue.complete(conn, job)
                return _Done(row.state if row is not None else "gone")
            if row.state == OutboundState.SENDING and row.handoff_at is not None:
                return _Interrupted(row)
            pause = control.paused(conn, row.stream)
            if pause is not None:
                conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id)
                             .values(state=OutboundState.PAUSED,
                                     last_error=f"sending paused ({pause.scope}): {pause.reason}"))
                # parked, not polled: `resume` wakes paused jobs, so a long recheck costs nothing
                return _Later(self.paused_recheck, f"paused: {pause.reason}", all_sends=False)
            signal = self.guard.check_send(conn, row.stream, row.recipient) if self.guard else None
            if signal is not None:
                scope, reason = signal
                if control.pause(conn, scope, reason, by="reputation-guard"):
                    log.error("reputation guard paused %s: %s", scope, reason)
                conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id)
                             .values(state=OutboundState.PAUSED, last_error=f"sending paused ({scope}): {reason}"))
                return _Later(self.paused_recheck, f"paused: {reason}", all_sends=False)
            # mail to the operator is its own stream, never held by the people's suppression list:
            # a bounce of it raises the operator_mail_bouncing alarm instead
            entry = None if row.stream == control.OPERATOR_STREAM else suppression.lookup(conn, row.recipient)
            if entry is not None and not suppression.lets_through(entry, row.idempotency_key, row.created_at):
                detail = f"suppressed: {entry.reason} ({entry.source}{', ' + entry.detail if entry.detail else ''})"
                conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id)
                             .values(state=OutboundState.SUPPRESSED, last_error=detail))
                self.queue.complete(conn, job)
                return _Done(OutboundState.SUPPRESSED)
            now = utcnow()
            wait = self.limiter.wait_before(conn, now)
            if wait is not None:
                if row.state == OutboundState.PAUSED:
                    conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id)
                                 .values(state=OutboundState.QUEUED, last_error=None))
                return _Later(wait.seconds, wait.why, all_sends=True)
            conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id)
                         .values(state=OutboundState.SENDING, admitted_at=now, handoff_at=None))
        return _Admitted(row, now)

    def _defer(self, job: Job, later: _Later) -> None:
        seconds = max(later.seconds, 0.001)
        if later.all_sends:
            with self._lock:
                self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)
        with self.engine.begin() as conn:
            self.queue.defer(conn, job, utcnow() + timedelta(seconds=seconds), later.why)
        log.debug("send job %s deferred %.3fs: %s", job.id, seconds, later.why)

    def _provider_paused(self, job: Job, outbound_id: int, reason: str, window_at: datetime | None,
                         fence: datetime) -> None:
        with self.engine.begin() as conn:
            control.pause(conn, control.ALL, f"{self.sender.name} paused sending: {reason}", by=self.sender.name)
            conn.execute(outbound_messages.update().where(*_fenced(outbound_id, fence))
                         .values(state=OutboundState.PAUSED, handoff_at=None,
                                 last_error=f"provider paused sending: {reason}", **_window(window_at)))
        log.error("the provider paused sending; the outbox is paused until an operator resumes it: %s", reason)
        self._defer(job, _Later(self.paused_recheck, "provider paused sending", all_sends=False))

    def _refund(self, handed_over_at: datetime | None) -> None:
        if handed_over_at is not None:
            with self.engine.begin() as conn:
                self.limiter.refund(conn, handed_over_at)

    def _requeue(self, outbound_id: int, error: str, window_at: datetime | None, fence: datetime | None) -> None:
        """Back to ``queued``: the transport said no (or nothing left)."""
        with self.engine.begin() as conn:
            done = conn.execute(outbound_messages.update().where(*_fenced(outbound_id, fence))
                                .values(state=OutboundState.QUEUED, handoff_at=None, last_error=error[:2000],
                                        **_window(window_at))).rowcount
        if not done:
            raise _TakenOver("another worker took this message over while the transport refused it")

    def _finish(self, job: Job, outbound_id: int, state: str, *, provider_id: str | None = None,
                unconfirmed: bool = False, error: str | None = None, complete: bool = True,
                window_at: datetime | None = None, fence: datetime | None = None) -> None:
        values: dict[str, object] = {"state": state, "last_error": error[:2000] if error else None,
                                     **_window(window_at)}
        if state == OutboundState.SENT:
            values.update(provider_message_id=(provider_id or None) and provider_id[:255], sent_at=utcnow(),
                          unconfirmed=unconfirmed)
        with self.engine.begin() as conn:
            done = conn.execute(outbound_messages.update().where(*_fenced(outbound_id, fence))
                                .values(**values)).rowcount
            if done and complete:
                self.queue.complete(conn, job)
        if not done:
            raise _TakenOver(f"another worker took this message over; this attempt's outcome ({state}) "
                             "was not recorded")

    def record_failure(self, outbound_id: int, error: str, *, final: bool) -> None:
        """The worker gave up on a send job. A message that was handed over is not failed: it
        may have arrived (it is settled as sent, unconfirmed)."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(outbound_messages.c.state, outbound_messages.c.handoff_at)
                               .where(outbound_messages.c.id == outbound_id)).first()
            if row is None:
                return
            values: dict[str, object] = {"last_error": error[:2000]}
            if final and row.state == OutboundState.SENDING and row.handoff_at is not None:
                values.update(state=OutboundState.SENT, unconfirmed=True, sent_at=utcnow(), window_at=utcnow())
            elif final and row.state not in FINAL:
                values.update(state=OutboundState.FAILED)
            conn.execute(outbound_messages.update().where(outbound_messages.c.id == outbound_id).values(**values))


def ensure_send_lock(engine: Engine) -> None:
    """The row every admission locks; without it PostgreSQL would serialise nothing (a restore
    without data, say)."""
    with engine.begin() as conn:
        if conn.execute(sa.select(send_locks.c.name).where(send_locks.c.name == "send")).first() is None:
            conn.execute(send_locks.insert().values(name="send"))
