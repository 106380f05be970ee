"""The single wiring module: picks and connects the adapters for a configuration."""

from __future__ import annotations

import email.policy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from waypost.apps.feedback_mail import FeedbackMailApp
from waypost.apps.journeys.build import describe_moment
from waypost.apps.journeys.handler import TEMPLATES as JOURNEY_TEMPLATES
from waypost.apps.journeys.handler import JourneysApp, route_rules
from waypost.apps.journeys.imagepool import ImagePool, default_workers
from waypost.apps.journeys.places import default_index
from waypost.apps.journeys.repository import JourneyReader
from waypost.apps.journeys.zones import zone_at
from waypost.apps.unsubscribe import UnsubscribeApp
from waypost.config import Settings
from waypost.feedback.intake import FeedbackIntake
from waypost.feedback.policy import FeedbackPolicy
from waypost.keys import signing_keys
from waypost.mail.addresses import address_key, first_mailbox
from waypost.mail.auth import AuthVerdict, make_resolver, verify
from waypost.mail.limits import MimeLimits
from waypost.outbound import control, suppression
from waypost.outbound.compose import Composer
from waypost.outbound.outbox import SEND_JOB, Outbox, Verp
from waypost.outbound.ratelimit import Limits, RateLimiter
from waypost.outbound.senders.base import BaseSender, Envelope, Handoff, Sender, SendLimits
from waypost.outbound.senders.catcher import CatcherSender
from waypost.outbound.unsubscribe import Unsubscriber, UnsubscribeTokens
from waypost.pipeline.allowlist import Allowlist
from waypost.pipeline.gate import Gate
from waypost.pipeline.inbox import Inbox
from waypost.pipeline.processor import InboundProcessor
from waypost.pipeline.router import Router
from waypost.pipeline.worker import Worker
from waypost.reputation.alarms import AlarmMonitor
from waypost.reputation.guard import ReputationGuard
from waypost.reputation.notify import TEMPLATES as OPERATOR_TEMPLATES
from waypost.reputation.notify import alarm_mailer
from waypost.reputation.status import Snapshot, read_snapshot
from waypost.store import migrate
from waypost.store.blobs import LocalBlobStore
from waypost.store.db import create_engine
from waypost.store.models import inbound_messages, send_locks, utcnow
from waypost.store.queue import JobQueue, RetryPolicy

if TYPE_CHECKING:  # boto3 loads only in a process that consumes the queue
    from waypost.feedback.sqs import SqsFeedbackConsumer


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    blobs: LocalBlobStore
    queue: JobQueue
    inbox: Inbox
    allowlist: Allowlist
    router: Router
    outbox: Outbox
    processor: InboundProcessor
    journeys: JourneyReader
    images: ImagePool
    unsubscriber: Unsubscriber
    verp: Verp
    guard: ReputationGuard
    intake: FeedbackIntake
    alarms: AlarmMonitor
    # the state `waypost status`, the alarms and /metrics all read
    snapshot: Callable[[], Snapshot]
    _resolver: Any = None

    def worker(self) -> Worker:
        """A worker; builds the transport and reads the sending limits now, so a process that
        will send stops at start on a bad configuration instead of at its first message."""
        self.outbox.sender.ready()
        log.info("sending limits: %s", self.outbox.limiter.limits.describe())
        companions = []
        if self.settings.feedback.sqs_queue_url:
            companions.append(self.feedback_consumer().run)
        return Worker(self.queue, [*self.processor.job_kinds(), *self.outbox.job_kinds()],
                      poll_interval=self.settings.worker.poll_interval,
                      periodic=[(self.settings.alarms.check_interval_seconds, self.alarms.check)],
                      companions=companions)

    def feedback_consumer(self) -> SqsFeedbackConsumer:
        """The SQS consumer of SES feedback (feedback.sqs_queue_url)."""
        from waypost.feedback.sqs import SqsFeedbackConsumer

        return SqsFeedbackConsumer.from_settings(
            self.settings.feedback, self.settings.ses.region, self.intake.apply,
            keep_unreadable=lambda body, reason: self.intake.keep_unreadable(body, reason, "sqs"))

    def authenticate(self, raw: bytes, peer_ip: str | None, helo: str | None,
                     mail_from: str | None) -> AuthVerdict | None:
        """SPF, DKIM and DMARC for a message arriving over SMTP; None for trusted networks,
        whose mail the gate accepts without (local submission)."""
        if self.processor.gate.is_trusted(peer_ip):
            return None
        try:
            header = BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw[:MAX_HEADER_SCAN])
            address = first_mailbox(str(header.get("From", "")) or None)
        except (RecursionError, ValueError, TypeError, LookupError):  # hostile From: no domain, DMARC fails
            address = None
        return verify(raw, peer_ip=peer_ip, helo=helo, mail_from=mail_from,
                      from_domain=address.rsplit("@", 1)[1] if address else None, resolver=self.resolver())

    def resolver(self):  # type: ignore[no-untyped-def]
        """The DNS resolver for authentication (dns_nameservers, or the system's), made once."""
        with _RESOLVER_LOCK:
            if self._resolver is None:
                object.__setattr__(self, "_resolver",
                                   make_resolver(self.settings.dns_nameservers, self.settings.dns_timeout))
            return self._resolver

    @property
    def streams(self) -> tuple[str, ...]:
        """The kinds of mail Waypost sends (pause scopes besides "*")."""
        return STREAMS

    def close(self) -> None:
        self.outbox.sender.close()
        self.images.close()
        self.engine.dispose()


log = logging.getLogger(__name__)
STREAMS = ("journeys", control.OPERATOR_STREAM)
_RESOLVER_LOCK = threading.Lock()
MAX_HEADER_SCAN = 256 * 1024  # the From header is looked for in the header section only


def build(settings: Settings, *, engine: Engine | None = None, upgrade: bool = True,
          sender: Sender | None = None) -> Runtime:
    """``sender`` replaces the configured transport (tests and benchmarks)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = engine or create_engine(settings.database_url)
    if upgrade:
        migrate.upgrade(engine)
    worker = settings.worker
    blobs = LocalBlobStore(settings.blob_dir)
    outbound = settings.outbound
    queue = JobQueue(engine, visibility_timeout=worker.visibility_timeout,
                     retry=RetryPolicy(worker.retry_base_delay, worker.retry_max_delay),
                     retry_by_kind={SEND_JOB: RetryPolicy(outbound.retry_base_delay, outbound.retry_max_delay)})
    keys = signing_keys(settings)
    sender = sender or LazySender(outbound.transport, lambda: make_sender(settings))
    verp = Verp(outbound.bounce_mailbox, settings.bounce_domain, keys)
    limiter = RateLimiter(lambda: send_limits(settings, sender),
                          in_flight_limit=timedelta(seconds=worker.visibility_timeout))
    guard = ReputationGuard(settings.guard, lambda: STREAMS)
    outbox = Outbox(engine, queue, sender, max_attempts=outbound.max_attempts, limiter=limiter, verp=verp,
                    paused_recheck=outbound.paused_recheck_seconds, guard=guard,
                    on_refused=lambda row, err: intake.recipient_refused(row, err))
    _ensure_send_lock(engine)
    tokens = UnsubscribeTokens(keys)
    composer = Composer(settings, [JOURNEY_TEMPLATES, OPERATOR_TEMPLATES], tokens,
                        filters={"moment": describe_moment})
    images = ImagePool(settings.journeys.image_workers or default_workers())
    places = default_index()
    journeys_app = JourneysApp(settings.journeys, blobs, outbox, composer, settings.public_base_url,
                               envelope_sender=settings.reply_address, mail_domain=settings.mail_domain,
                               images=images, locate=places.lookup, zone_at=zone_at,
                               rate_window=timedelta(minutes=settings.gate.sender_window_minutes))
    allowlist = Allowlist(engine)
    leave_hooks = {journeys_app.name: Allowlist.forget}
    unsubscriber = Unsubscriber(tokens, hooks=leave_hooks)
    policy = FeedbackPolicy(settings.feedback, verp_outbound_id=verp.outbound_id, hooks=leave_hooks)
    intake = FeedbackIntake(engine, policy, guard)
    feedback = settings.feedback
    router = Router(settings.mail_domain, [
        journeys_app,
        UnsubscribeApp(settings.outbound.unsubscribe_mailbox, unsubscriber),
        FeedbackMailApp("bounces", outbound.bounce_mailbox, settings.bounce_domain, policy, guard,
                        keep_days=feedback.keep_reports_days),
        FeedbackMailApp("complaints", feedback.complaints_mailbox, None, policy, guard,
                        keep_days=feedback.keep_reports_days),
    ])
    gate = Gate(allowlist, settings.trusted_networks, has_left=_has_left(engine),
                require_dkim_without_dmarc=settings.gate.require_dkim_without_dmarc,
                sender_limit=settings.gate.sender_max_messages,
                recent_count=_recent_count(engine, timedelta(minutes=settings.gate.sender_window_minutes)))

    def snapshot() -> Snapshot:
        return read_snapshot(engine, limiter, guard, stale_after=timedelta(seconds=settings.alarms.stale_job_seconds))

    mailer = alarm_mailer(composer, outbox, operator=settings.operator_address, envelope_sender=settings.reply_address,
                          interval_hours=settings.alarms.mail_interval_hours)
    alarms = AlarmMonitor(engine, settings.alarms, snapshot, mailer, judge=guard.enforce)
    return Runtime(
        settings=settings,
        engine=engine,
        blobs=blobs,
        queue=queue,
        inbox=Inbox(engine, blobs, max_attempts=worker.max_attempts),
        allowlist=allowlist,
        router=router,
        outbox=outbox,
        processor=InboundProcessor(engine, blobs, queue, gate, router, MimeLimits.from_settings(settings.mime)),
        journeys=JourneyReader(engine, rules=route_rules(settings.journeys), locate=places.lookup),
        images=images,
        unsubscriber=unsubscriber,
        verp=verp,
        guard=guard,
        intake=intake,
        alarms=alarms,
        snapshot=snapshot,
    )


class LazySender(BaseSender):
    """The configured transport, built on first use: commands that never send (`waypost
    pause`, `suppression add`) must work even while the transport cannot be set up, which is
    when an operator needs them most. `serve` and `worker` build it at start (``ready``) so a
    bad configuration stops them at once."""

    def __init__(self, name: str, factory: Callable[[], Sender]) -> None:
        self.name = name
        self._factory = factory
        self._sender: Sender | None = None
        self._lock = threading.Lock()

    def _built(self) -> Sender:
        with self._lock:
            if self._sender is None:
                self._sender = self._factory()
                self._sender.ready()
            return self._sender

    def ready(self) -> None:
        self._built()

    @property  # type: ignore[override]  # known once the transport is built
    def confirms(self) -> bool:
        return self._built().confirms

    def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
        return self._built().send(envelope, raw, handoff)

    def confirm(self, envelope: Envelope) -> str | None:
        return self._built().confirm(envelope)

    def account_limits(self) -> SendLimits | None:
        return self._built().account_limits()

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()


def make_sender(settings: Settings) -> Sender:
    transport = settings.outbound.transport
    if transport == "smtp":
        from waypost.mail.dkim_sign import DkimSigner
        from waypost.outbound.senders.smtp import SmtpSender

        signer = DkimSigner.from_settings(settings)
        if signer is None:
            log.warning("SMTP mode without DKIM signing (dkim.selector and dkim.private_key_path unset): "
                        "receivers offer one-click unsubscribe only on signed mail; unless the smarthost "
                        "signs for %s, set up a key with `waypost dkim keygen`", settings.dkim_domain)
        return SmtpSender.from_settings(settings, signer)
    if transport == "ses":
        from waypost.outbound.senders.ses import SesSender

        return SesSender.from_settings(settings.ses)
    return CatcherSender(settings.outbox_dir)


def send_limits(settings: Settings, sender: Sender) -> Limits:
    """The configured limits; in SES mode the account's own when it can be read (a limit set
    explicitly in the configuration still caps them)."""
    outbound = settings.outbound
    configured = Limits(outbound.max_per_second, outbound.max_per_day or None)
    if not outbound.limits_from_provider or outbound.transport != "ses":
        return configured
    account = sender.account_limits()
    if account is None or account.max_per_second <= 0:
        log.warning("could not read the sending limits from %s; using %s", sender.name, configured.describe())
        return configured
    per_second, per_day = account.max_per_second, account.max_per_day
    if "max_per_second" in outbound.model_fields_set:
        per_second = min(per_second, outbound.max_per_second)
    if "max_per_day" in outbound.model_fields_set and outbound.max_per_day:
        per_day = outbound.max_per_day if per_day is None else min(per_day, outbound.max_per_day)
    limits = Limits(per_second, per_day, f"{sender.name} account")
    log.info("sending limits: %s", limits.describe())
    return limits


def _ensure_send_lock(engine: Engine) -> None:
    """The row every admission locks; without it PostgreSQL would serialise nothing (a restore
    without data, say)."""
    with engine.begin() as conn:
        if conn.execute(sa.select(send_locks.c.name).where(send_locks.c.name == "send")).first() is None:
            conn.execute(send_locks.insert().values(name="send"))


def _recent_count(engine: Engine, window: timedelta):  # type: ignore[no-untyped-def]
    def recent_count(address: str) -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                sa.func.lower(inbound_messages.c.from_address) == address.lower(),
                inbound_messages.c.status == "processed",
                inbound_messages.c.received_at > utcnow() - window)).scalar_one())

    return recent_count


def _has_left(engine: Engine):  # type: ignore[no-untyped-def]
    def has_left(address: str) -> str | None:
        with engine.connect() as conn:
            # leaving as ann@ covers ann+trips@ too: the gate compares senders without +tags
            entry = suppression.lookup(conn, address) or suppression.lookup(conn, address_key(address))
        if entry is None or entry.reason not in (suppression.Reason.UNSUBSCRIBE, suppression.Reason.COMPLAINT):
            return None
        return "unsubscribed" if entry.reason == suppression.Reason.UNSUBSCRIBE else "complained about our mail"

    return has_left
