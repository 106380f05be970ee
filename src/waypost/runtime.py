"""The single wiring module: picks and connects the adapters for a configuration."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from waypost.apps.journeys.build import describe_moment
from waypost.apps.journeys.handler import TEMPLATES as JOURNEY_TEMPLATES
from waypost.apps.journeys.handler import JourneysApp, route_rules
from waypost.apps.journeys.imagepool import ImagePool, default_workers
from waypost.apps.journeys.places import default_index
from waypost.apps.journeys.repository import JourneyReader
from waypost.apps.journeys.zones import zone_at
from waypost.apps.unsubscribe import UnsubscribeApp
from waypost.config import Settings
from waypost.keys import signing_keys
from waypost.outbound import suppression
from waypost.outbound.compose import Composer
from waypost.outbound.outbox import Outbox, Verp
from waypost.outbound.ratelimit import Limits, RateLimiter
from waypost.outbound.senders.base import Sender
from waypost.outbound.senders.catcher import CatcherSender
from waypost.outbound.unsubscribe import Unsubscriber, UnsubscribeTokens
from waypost.pipeline.allowlist import Allowlist
from waypost.pipeline.gate import Gate
from waypost.pipeline.inbox import Inbox
from waypost.pipeline.processor import InboundProcessor
from waypost.pipeline.router import Router
from waypost.pipeline.worker import Worker
from waypost.store import migrate
from waypost.store.blobs import LocalBlobStore
from waypost.store.db import create_engine
from waypost.store.queue import JobQueue, RetryPolicy


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

    def worker(self) -> Worker:
        return Worker(self.queue, self.processor, self.outbox, poll_interval=self.settings.worker.poll_interval)

    def close(self) -> None:
        close_sender = getattr(self.outbox.sender, "close", None)
        if close_sender is not None:
            close_sender()
        self.images.close()
        self.engine.dispose()


log = logging.getLogger(__name__)


def build(settings: Settings, *, engine: Engine | None = None, upgrade: bool = True,
          sender: Sender | None = None) -> Runtime:
    """``sender`` replaces the configured transport (tests and benchmarks)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = engine or create_engine(settings.database_url)
    if upgrade:
        migrate.upgrade(engine)
    worker = settings.worker
    blobs = LocalBlobStore(settings.blob_dir)
    queue = JobQueue(engine, visibility_timeout=worker.visibility_timeout,
                     retry=RetryPolicy(worker.retry_base_delay, worker.retry_max_delay))
    keys = signing_keys(settings)
    sender = sender or make_sender(settings)
    verp = Verp(settings.outbound.bounce_mailbox, settings.bounce_domain, keys)
    outbox = Outbox(engine, queue, sender, max_attempts=worker.max_attempts,
                    limiter=RateLimiter(send_limits(settings, sender)), verp=verp,
                    paused_recheck=settings.outbound.paused_recheck_seconds)
    tokens = UnsubscribeTokens(keys)
    composer = Composer(settings, [JOURNEY_TEMPLATES], tokens, filters={"moment": describe_moment})
    images = ImagePool(settings.journeys.image_workers or default_workers())
    places = default_index()
    journeys_app = JourneysApp(settings.journeys, blobs, outbox, composer, settings.public_base_url,
                               envelope_sender=settings.reply_address, mail_domain=settings.mail_domain,
                               images=images, locate=places.lookup, zone_at=zone_at)
    allowlist = Allowlist(engine)
    unsubscriber = Unsubscriber(tokens, hooks={journeys_app.name: Allowlist.forget})
    router = Router(settings.mail_domain, [journeys_app, UnsubscribeApp(settings.outbound.unsubscribe_mailbox,
                                                                        unsubscriber)])
    gate = Gate(allowlist, settings.trusted_networks, has_left=_has_left(engine))
    return Runtime(
        settings=settings,
        engine=engine,
        blobs=blobs,
        queue=queue,
        inbox=Inbox(engine, blobs, max_attempts=worker.max_attempts),
        allowlist=allowlist,
        router=router,
        outbox=outbox,
        processor=InboundProcessor(engine, blobs, queue, gate, router),
        journeys=JourneyReader(engine, rules=route_rules(settings.journeys), locate=places.lookup),
        images=images,
        unsubscriber=unsubscriber,
        verp=verp,
    )


def make_sender(settings: Settings) -> Sender:
    transport = settings.outbound.transport
    if transport == "smtp":
        from waypost.mail.dkim_sign import DkimSigner
        from waypost.outbound.senders.smtp import SmtpSender

        return SmtpSender.from_settings(settings, DkimSigner.from_settings(settings))
    if transport == "ses":
        from waypost.outbound.senders.ses import SesSender

        return SesSender.from_settings(settings.ses)
    return CatcherSender(settings.outbox_dir)


def send_limits(settings: Settings, sender: Sender) -> Limits:
    """The configured limits; in SES mode the account's own when it can be read (a limit set
    explicitly in the configuration still caps them)."""
    outbound = settings.outbound
    configured = Limits(outbound.max_per_second, outbound.max_per_day or None)
    account_limits = getattr(sender, "account_limits", None)
    if not outbound.limits_from_provider or account_limits is None:
        return configured
    account = account_limits()
    if account is None:
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


def _has_left(engine: Engine):  # type: ignore[no-untyped-def]
    def has_left(address: str) -> str | None:
        with engine.connect() as conn:
            entry = suppression.lookup(conn, address)
        if entry is None or entry.reason not in (suppression.Reason.UNSUBSCRIBE, suppression.Reason.COMPLAINT):
            return None
        return "unsubscribed" if entry.reason == suppression.Reason.UNSUBSCRIBE else "complained about our mail"

    return has_left
