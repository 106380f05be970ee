"""The single wiring module: picks and connects the adapters for a configuration."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from waypost.apps.journeys.build import describe_moment
from waypost.apps.journeys.handler import TEMPLATES as JOURNEY_TEMPLATES
from waypost.apps.journeys.handler import JourneysApp, route_rules
from waypost.apps.journeys.imagepool import ImagePool, default_workers
from waypost.apps.journeys.places import default_index
from waypost.apps.journeys.repository import JourneyReader
from waypost.apps.journeys.zones import zone_at
from waypost.config import Settings
from waypost.outbound.compose import Composer
from waypost.outbound.outbox import Outbox
from waypost.outbound.senders.catcher import CatcherSender
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

    def worker(self) -> Worker:
        return Worker(self.queue, self.processor, self.outbox, poll_interval=self.settings.worker.poll_interval)

    def close(self) -> None:
        self.images.close()
        self.engine.dispose()


def build(settings: Settings, *, engine: Engine | None = None, upgrade: bool = True) -> Runtime:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = engine or create_engine(settings.database_url)
    if upgrade:
        migrate.upgrade(engine)
    worker = settings.worker
    blobs = LocalBlobStore(settings.blob_dir)
    queue = JobQueue(engine, visibility_timeout=worker.visibility_timeout,
                     retry=RetryPolicy(worker.retry_base_delay, worker.retry_max_delay))
    outbox = Outbox(engine, queue, CatcherSender(settings.outbox_dir), max_attempts=worker.max_attempts)
    composer = Composer(settings, [JOURNEY_TEMPLATES], filters={"moment": describe_moment})
    images = ImagePool(settings.journeys.image_workers or default_workers())
    places = default_index()
    journeys_app = JourneysApp(settings.journeys, blobs, outbox, composer, settings.public_base_url,
                               envelope_sender=settings.reply_address, mail_domain=settings.mail_domain,
                               images=images, locate=places.lookup, zone_at=zone_at)
    allowlist = Allowlist(engine)
    router = Router(settings.mail_domain, [journeys_app])
    gate = Gate(allowlist, settings.trusted_networks)
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
    )

