"""The single wiring module: picks and connects the adapters for a configuration."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine

from waypost.apps.dmarc_reports import DmarcReportsApp
from waypost.apps.erasure import forget_files
from waypost.apps.feedback_mail import FeedbackMailApp
from waypost.apps.journeys.build import describe_moment
from waypost.apps.journeys.handler import TEMPLATES as JOURNEY_TEMPLATES
from waypost.apps.journeys.handler import JourneysApp, route_rules
from waypost.apps.journeys.imagepool import ImagePool, default_workers
from waypost.apps.journeys.places import PlaceIndex, default_index
from waypost.apps.journeys.repository import JourneyReader, delete_journey
from waypost.apps.journeys.zones import zone_at
from waypost.apps.operator_inbox import Forwarding, OperatorInboxApp, operator_mailboxes
from waypost.apps.people_requests import PeopleJobs
from waypost.apps.relay.devices import login_allowed as relay_login_allowed
from waypost.apps.relay.handler import TEMPLATES as RELAY_TEMPLATES
from waypost.apps.relay.handler import RelayApp, RelayContext
from waypost.apps.relay.links import Links as RelayLinks
from waypost.apps.relay.spike import SpikeRule
from waypost.apps.unsubscribe import UnsubscribeApp
from waypost.config import Settings
from waypost.dmarc.watch import DmarcWatch
from waypost.feedback.intake import FeedbackIntake
from waypost.feedback.policy import DRILL_DOMAIN, SIMULATOR_DOMAIN
from waypost.intake_wiring import STREAMS, feedback_consumer, ses_ingress
from waypost.intake_wiring import blob_store as blob_store  # where the CLI's relay commands find it
from waypost.intake_wiring import build as build_intake
from waypost.mail.authenticator import Authenticator
from waypost.mail.limits import MimeLimits
from waypost.mail.resolver import make_resolver
from waypost.outbound.compose import Composer
from waypost.outbound.limits import send_limits
from waypost.outbound.outbox import SEND_JOB, Outbox, Verp, ensure_send_lock
from waypost.outbound.ratelimit import RateLimiter
from waypost.outbound.recipient_domains import RecipientDomains
from waypost.outbound.senders.base import Sender
from waypost.outbound.senders.factory import LazySender, make_sender
from waypost.outbound.unsubscribe import Unsubscriber, UnsubscribeTokens
from waypost.pipeline.allowlist import Allowlist
from waypost.pipeline.arrival import Authenticate, Screen, arrival_authentication, arrival_screen
from waypost.pipeline.gate import Gate
from waypost.pipeline.history import SenderHistory
from waypost.pipeline.inbox import Inbox
from waypost.pipeline.processor import InboundProcessor
from waypost.pipeline.retention import Periods, RetentionSweeper
from waypost.pipeline.router import App, Router
from waypost.pipeline.worker import Worker
from waypost.reputation.alarms import AlarmMonitor
from waypost.reputation.digest import OperatorDigest
from waypost.reputation.guard import ReputationGuard
from waypost.reputation.notify import TEMPLATES as OPERATOR_TEMPLATES
from waypost.reputation.notify import alarm_mailer
from waypost.reputation.status import Snapshot, read_snapshot
from waypost.store.blobs import BlobStore
from waypost.store.db import is_postgres
from waypost.store.queue import Doorbell, JobKind, JobNotices, RetryPolicy, TableJobQueue
from waypost.store.s3blobs import S3BlobStore

if TYPE_CHECKING:  # boto3 loads only in a process that consumes the queue
    from waypost.doctor.history import DoctorWatch
    from waypost.feedback.sqs import SqsFeedbackConsumer
    from waypost.ingress.ses import SesReceiptConsumer


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    blobs: BlobStore
    queue: TableJobQueue
    # rung when this process commits inbound mail, so its worker takes it without polling delay
    doorbell: Doorbell
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
    # SPF, DKIM and DMARC as mail arrives over SMTP (None for trusted networks), and the gate's
    # steps that refuse mail while the sending server waits (pipeline/arrival.py)
    authenticate: Authenticate
    screen: Screen
    # peers in trusted_networks: their mail skips ``screen`` and ``authenticate`` at once
    trusted: Callable[[str | None], bool]
    # complaints, abuse@ reports, removal requests and suppressions, mailed to the operator
    digest: OperatorDigest
    # exports built and mailed, erased people's last mail forgotten (apps/people_requests.py)
    people: PeopleJobs
    # every mail's templates (compiled by ``warm_up``)
    composer: Composer
    # the place names of journeys (loaded by ``warm_up``)
    places: PlaceIndex = field(default_factory=default_index)

    def worker(self) -> Worker:
        """A worker; builds the transport and reads the sending limits now, so a process that
        will send stops at start on a bad configuration instead of at its first message."""
        self.outbox.sender.ready()
        log.info("sending limits: %s", self.outbox.limiter.limits.describe())
        companions: list[Callable[[threading.Event], None]] = [self.warm_up]
        if self.settings.feedback.sqs_queue_url:
            companions.append(self.feedback_consumer().run)
        if self.settings.ses_ingress.sqs_queue_url:
            companions.append(self.ses_ingress().run)
        if self.settings.doctor.interval_hours > 0 and self.settings.outbound.transport != "catcher":
            companions.append(self.doctor_watch().loop)  # its own thread: DNS and SES calls never delay jobs
        if is_postgres(self.engine):  # woken by a job committed in any process (LISTEN/NOTIFY)
            companions.append(JobNotices(self.engine, self.doorbell).run)
        return Worker(self.queue, [*self.processor.job_kinds(), *self.outbox.job_kinds(), *self._ses_push_kinds(),
                                   *self.people.job_kinds()],
                      poll_interval=self.settings.worker.poll_interval,
                      periodic=[(self.settings.alarms.check_interval_seconds, self.alarms.check),
                                (self.settings.alarms.check_interval_seconds, self.digest.run),
                                (self.settings.alarms.check_interval_seconds, self.dmarc_watch().check),
                                # first at start (a crash leaves its orphans then), then every interval
                                (self.settings.retention.sweep_interval_minutes * 60, self.retention().sweep),
                                # the device relay's files past their device's retention (links then 410)
                                (self.settings.relay.purge_interval_minutes * 60,
                                 RelayLinks(self.engine, self.blobs).purge)],
                      companions=companions, doorbell=self.doorbell)

    def warm_up(self, stop: threading.Event | None = None) -> None:
        """Load what the first mail would otherwise wait for: the place index (about 1 s of
        CPU), the time zone boundaries, the image workers and the mail templates. Run once by each worker at its
        start, in a thread of its own (a mail that comes meanwhile waits only for what is left);
        a failure is logged, and the first mail that needs the part tries again."""
        started = time.monotonic()
        for part, load in (("place index", self.places.load), ("time zones", lambda: zone_at(0.0, 0.0)),
                           ("image workers", self.images.start), ("mail templates", self.composer.load_templates)):
            if stop is not None and stop.is_set():
                return
            try:
                load()
            except Exception:
                if stop is not None and stop.is_set():  # closed while starting: nothing to report
                    return
                log.exception("could not load the %s at start; the first mail that needs it will", part)
        log.info("warmed up in %.1f s: the place index, the time zone boundaries, the image workers and the mail "
                 "templates",
                 time.monotonic() - started)

    def _ses_push_kinds(self) -> list[JobKind]:
        """SES mode: the push of our suppression changes to SES's account-level list."""
        if self.settings.outbound.transport != "ses":
            return []
        from waypost.feedback.ses_sync import SesSuppressionPush

        return SesSuppressionPush(self.engine, self.queue, self.settings).job_kinds()

    def retention(self) -> RetentionSweeper:
        """The sweep of raw mail past its retention period, of orphaned blobs and of duplicate
        claims past gate.duplicate_window_days."""
        kept = self.settings.retention
        return RetentionSweeper(self.engine, self.blobs, refused_after=timedelta(days=kept.refused_raw_days),
                                dead_after=timedelta(days=kept.dead_raw_days),
                                orphan_grace=timedelta(minutes=kept.orphan_grace_minutes),
                                duplicate_window=timedelta(days=self.settings.gate.duplicate_window_days),
                                reports_after=timedelta(days=self.settings.dmarc.keep_reports_days),
                                failure_reports_after=timedelta(days=self.settings.dmarc.keep_failure_reports_days),
                                periods=retention_periods(self.settings),
                                forget_journey=lambda conn, journey_id: delete_journey(conn, journey_id).blob_keys,
                                catcher_dir=catcher_dir(self.settings))

    def doctor_watch(self) -> DoctorWatch:
        """The daily `waypost doctor` rerun with its drift alarm (doctor.interval_hours)."""
        from waypost.doctor.history import DoctorWatch
        from waypost.doctor.runner import run_doctor

        return DoctorWatch(self.engine, lambda: run_doctor(self.settings),
                           timedelta(hours=self.settings.doctor.interval_hours), self.alarms)

    def dmarc_watch(self) -> DmarcWatch:
        """The own_mail_failing_dmarc alarm, from the stored DMARC aggregate reports."""
        return DmarcWatch(self.engine, self.settings, self.alarms)

    def feedback_consumer(self) -> SqsFeedbackConsumer:
        """The SQS consumer of SES feedback (feedback.sqs_queue_url)."""
        return feedback_consumer(self.settings, self.intake)

    def presigned_photo(self, key: str) -> str | None:
        """A short-lived S3 URL of a journey photo when blobs.photo_urls is "presigned", else None."""
        if self.settings.blobs.photo_urls != "presigned" or not isinstance(self.blobs, S3BlobStore):
            return None
        return self.blobs.presigned_url(key, self.settings.blobs.presigned_seconds)

    def photo_origin(self) -> str:
        """Where presigned photo URLs point (for the pages' Content-Security-Policy); "" when none."""
        url = urlsplit(self.presigned_photo("photos/origin") or "")
        return f"{url.scheme}://{url.netloc}" if url.netloc else ""

    def submission_login_allowed(self, user: str) -> bool:
        """AUTH on the submission port: a disabled relay device is refused (docs/relay.md)."""
        return relay_login_allowed(self.engine, user)

    def ses_ingress(self) -> SesReceiptConsumer:
        """The consumer of SES receipt notifications (ses_ingress.sqs_queue_url)."""
        return ses_ingress(self.settings, self.inbox, self.blobs, self.intake)

    @property
    def streams(self) -> tuple[str, ...]:
        """The kinds of mail Waypost sends (pause scopes besides "*")."""
        return STREAMS

    def close(self) -> None:
        self.outbox.sender.close()
        self.images.close()
        self.engine.dispose()


log = logging.getLogger(__name__)


def build(settings: Settings, *, engine: Engine | None = None, upgrade: bool = True,
          sender: Sender | None = None) -> Runtime:
    """``sender`` replaces the configured transport (tests and benchmarks). The parts that take
    mail and feedback in come from ``intake_wiring.build``, which the Lambda builds alone."""
    core = build_intake(settings, engine=engine, upgrade=upgrade)
    engine, blobs, doorbell, keys, verp, guard, intake = (core.engine, core.blobs, core.doorbell, core.keys,
                                                          core.verp, core.guard, core.intake)
    outbound, worker = settings.outbound, settings.worker
    queue = _job_queue(settings, engine)
    sender = sender or LazySender(outbound.transport, lambda: make_sender(settings))
    limiter = RateLimiter(lambda: send_limits(outbound, sender),
                          in_flight_limit=timedelta(seconds=worker.visibility_timeout))
    outbox = Outbox(engine, queue, sender, max_attempts=outbound.max_attempts, limiter=limiter, verp=verp,
                    paused_recheck=outbound.paused_recheck_seconds, guard=guard, on_refused=intake.recipient_refused,
                    recipient_domains=_recipient_domains(settings))
    ensure_send_lock(engine)
    tokens = UnsubscribeTokens(keys)
    composer = Composer(settings, [JOURNEY_TEMPLATES, OPERATOR_TEMPLATES, RELAY_TEMPLATES], tokens,
                        filters={"moment": describe_moment})
    images = ImagePool(settings.journeys.image_workers or default_workers())
    places = default_index()
    journeys_app = JourneysApp(settings.journeys, blobs, outbox, composer, settings.public_base_url,
                               envelope_sender=settings.reply_address, mail_domain=settings.mail_domain,
                               images=images, locate=places.lookup, zone_at=zone_at,
                               rate_window=timedelta(minutes=settings.gate.sender_window_minutes))
    allowlist = Allowlist(engine)
    unsubscriber = Unsubscriber(tokens, hooks=core.leave_hooks)
    apps: list[App] = [journeys_app, UnsubscribeApp(outbound.unsubscribe_mailbox, unsubscriber),
                       *_feedback_apps(settings, intake),
                       DmarcReportsApp(settings.dmarc.mailbox, max_report_bytes=settings.dmarc.max_report_bytes,
                                       keep_days=settings.feedback.keep_reports_days),
                       _relay_app(settings, engine, blobs, outbox, composer, allowlist)]
    served = {app.mailbox for app in apps if (app.domain or settings.mail_domain) == settings.mail_domain}
    router = Router(settings.mail_domain, [*apps, *_operator_apps(settings, composer, outbox, served)])
    gate = _gate(settings, engine, allowlist, router)

    def snapshot() -> Snapshot:
        return read_snapshot(engine, limiter, guard, stale_after=timedelta(seconds=settings.alarms.stale_job_seconds),
                             setup_alarm_after=settings.feedback.setup_alarm_count)

    mailer = alarm_mailer(composer, outbox, operator=settings.operator_delivery_address,
                          envelope_sender=settings.reply_address, interval_hours=settings.alarms.mail_interval_hours)
    caught = catcher_dir(settings)
    return Runtime(
        settings=settings,
        engine=engine,
        blobs=blobs,
        queue=queue,
        doorbell=doorbell,
        inbox=core.inbox,
        allowlist=allowlist,
        router=router,
        outbox=outbox,
        processor=InboundProcessor(engine, blobs, queue, gate, router, MimeLimits.from_settings(settings.mime),
                                   duplicate_window=timedelta(days=settings.gate.duplicate_window_days)),
        journeys=JourneyReader(engine, rules=route_rules(settings.journeys), locate=places.lookup),
        images=images,
        unsubscriber=unsubscriber,
        verp=verp,
        guard=guard,
        intake=intake,
        alarms=AlarmMonitor(engine, settings.alarms, snapshot, mailer, judge=guard.enforce),
        snapshot=snapshot,
        authenticate=arrival_authentication(gate, router,
                                            Authenticator(settings.dns_nameservers, settings.dns_timeout)),
        screen=arrival_screen(gate, router),
        trusted=gate.is_trusted,
        digest=OperatorDigest(engine, composer, outbox, operator=settings.operator_delivery_address,
                              envelope_sender=settings.reply_address,
                              interval=timedelta(minutes=settings.alarms.digest_interval_minutes)),
        people=PeopleJobs(engine, queue, blobs, outbox, composer, envelope_sender=settings.reply_address,
                          journeys_address=f"{settings.journeys.mailbox}@{settings.mail_domain}",
                          base_url=settings.public_base_url, link_days=settings.journeys.export_link_days,
                          rules=route_rules(settings.journeys), locate=places.lookup,
                          forget_sent=forget_files(caught) if caught is not None else None),
        composer=composer,
        places=places,
    )


def catcher_dir(settings: Settings) -> Path | None:
    """The catcher's folder of sent mail (``outbox/*.eml``) in catcher mode; None otherwise."""
    return settings.outbox_dir if settings.outbound.transport == "catcher" else None


def _recipient_domains(settings: Settings) -> RecipientDomains | None:
    """The MX check before a domain's first send. The drill's domains are exempt: the local one
    is reserved (RFC 6761 .invalid) and served by the drill's own MX, and SES answers for its
    mailbox simulator itself."""
    check = settings.outbound.check_recipient_domains
    if check is False or (check is None and settings.outbound.transport == "catcher"):
        return None
    return RecipientDomains(lambda: make_resolver(settings.dns_nameservers, settings.dns_timeout),
                            exempt=(DRILL_DOMAIN, SIMULATOR_DOMAIN),
                            ttl=settings.outbound.recipient_domain_cache_seconds)


def _operator_apps(settings: Settings, composer: Composer, outbox: Outbox,
                   served: set[str]) -> list[OperatorInboxApp]:
    """postmaster@, abuse@, the operator address on mail_domain and the verification mailboxes no
    app serves (``served``): kept, and forwarded when operator_forward_to is set."""
    forwarding = None
    if settings.operator_forward_to:
        forwarding = Forwarding(settings.operator_forward_to, composer, outbox, settings.reply_address)
    mailboxes = operator_mailboxes(settings.mail_domain, [settings.operator_address])
    mailboxes += [m for m in settings.verification_mailboxes if m not in mailboxes and m not in served]
    return [OperatorInboxApp(mailbox, settings.mail_domain, forwarding) for mailbox in mailboxes]


def retention_periods(settings: Settings) -> Periods:
    """The retention.* periods of the other stores of personal data; None keeps a store."""
    kept = settings.retention

    def days(value: float | None) -> timedelta | None:
        return None if value is None else timedelta(days=value)

    return Periods(service_mail=days(kept.service_mail_days), sent_raw=days(kept.sent_raw_days),
                   message_rows=days(kept.message_rows_days), feedback_raw=days(kept.feedback_raw_days),
                   audit=days(kept.audit_days), audit_views=days(kept.audit_views_days),
                   idle_journeys=days(kept.idle_journeys_days))


def _job_queue(settings: Settings, engine: Engine) -> TableJobQueue:
    worker, outbound = settings.worker, settings.outbound
    return TableJobQueue(engine, visibility_timeout=worker.visibility_timeout,
                    retry=RetryPolicy(worker.retry_base_delay, worker.retry_max_delay),
                    retry_by_kind={SEND_JOB: RetryPolicy(outbound.retry_base_delay, outbound.retry_max_delay)})


def _relay_app(settings: Settings, engine: Engine, blobs: BlobStore, outbox: Outbox, composer: Composer,
               allowlist: Allowlist) -> RelayApp:
    """The device relay (apps/relay): devices' mail forwarded with links instead of attachments."""
    return RelayApp(RelayContext(
        settings.relay, engine, blobs, outbox, composer, settings.public_base_url, settings.mail_domain,
        envelope_sender=settings.reply_address, operator_address=settings.operator_delivery_address,
        gate=Gate(allowlist, settings.trusted_networks,
                  require_dkim_without_dmarc=settings.gate.require_dkim_without_dmarc),
        spike=SpikeRule(settings.guard.spike_factor, settings.relay.spike_min_per_hour)))


def _feedback_apps(settings: Settings, intake: FeedbackIntake) -> list[FeedbackMailApp]:
    """Bounces to the VERP address and complaints to the feedback-loop mailbox: the same
    intake as queue-borne feedback, applied inside each report's processing transaction."""
    feedback, keep_days = settings.feedback, settings.feedback.keep_reports_days
    return [FeedbackMailApp("bounces", settings.outbound.bounce_mailbox, settings.bounce_domain, intake,
                            keep_days=keep_days),
            FeedbackMailApp("complaints", feedback.complaints_mailbox, None, intake, keep_days=keep_days)]


def _gate(settings: Settings, engine: Engine, allowlist: Allowlist, router: Router) -> Gate:
    history = SenderHistory(engine, timedelta(minutes=settings.gate.sender_window_minutes))
    reply_from = settings.reply_address.lower()

    def is_own(address: str) -> bool:  # our domains' mailboxes and our From: mail from them is a loop
        return router.is_local_domain(address) or address.lower() == reply_from

    return Gate(allowlist, settings.trusted_networks, has_left=history.has_left,
                require_dkim_without_dmarc=settings.gate.require_dkim_without_dmarc,
                sender_limit=settings.gate.sender_max_messages, recent_count=history.recent_count,
                is_own=is_own, stopped_by_self=history.stopped_by_self)
