"""The wiring of taking mail and feedback in, and nothing more.

The database, the blob store, the Inbox, the feedback intake (policy and reputation guard) and
the two queue consumers that feed them: SES receipts (``ingress/ses.py``) and SES feedback
(``feedback/sqs.py``). ``runtime.build`` builds the whole service on top of ``build`` here; the
Lambda handler (``aws/lambda_handler.py``) builds only this, so its cold start loads no image
library, template engine, places index or journeys app. Part of the wiring ring with
``runtime``: only the wiring and the entry points import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from waypost.config import Settings
from waypost.feedback.intake import FeedbackIntake
from waypost.feedback.policy import FeedbackPolicy
from waypost.keys import signing_keys
from waypost.outbound import control, suppression
from waypost.outbound.outbox import Verp
from waypost.outbound.unsubscribe import StreamHook
from waypost.pipeline.allowlist import Allowlist
from waypost.pipeline.inbox import Inbox
from waypost.reputation.guard import ReputationGuard
from waypost.store import migrate
from waypost.store.blobs import BlobStore, LocalBlobStore
from waypost.store.db import create_engine
from waypost.store.queue import Doorbell
from waypost.store.s3blobs import S3BlobStore

if TYPE_CHECKING:  # boto3 loads only in a process that consumes a queue
    from waypost.feedback.sqs import SqsFeedbackConsumer
    from waypost.ingress.ses import SesReceiptConsumer

# JourneysApp.name: its leave hook forgets a person who complains or unsubscribes (named here so
# that the journeys app need not load; tests/unit/test_lambda_cold_start.py holds them equal)
JOURNEYS_APP = "journeys"
STREAMS = (JOURNEYS_APP, control.OPERATOR_STREAM)  # the kinds of mail Waypost sends


@dataclass(frozen=True)
class Intake:
    settings: Settings
    engine: Engine
    blobs: BlobStore
    # rung when this process commits inbound mail, so its worker takes it without polling delay
    doorbell: Doorbell
    inbox: Inbox
    keys: tuple[bytes, ...]
    verp: Verp
    guard: ReputationGuard
    intake: FeedbackIntake
    # what a person's leave (complaint, opt-out) runs, by stream
    leave_hooks: dict[str, StreamHook]

    def ses_ingress(self) -> SesReceiptConsumer:
        return ses_ingress(self.settings, self.inbox, self.blobs, self.intake)

    def feedback_consumer(self) -> SqsFeedbackConsumer:
        return feedback_consumer(self.settings, self.intake)


def build(settings: Settings, *, engine: Engine | None = None, upgrade: bool = True) -> Intake:
    """The parts that take mail and feedback in; ``upgrade`` brings the schema up to date first."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = engine or create_engine(settings.database_url)
    if upgrade:
        migrate.upgrade(engine)
    blobs = blob_store(settings)
    keys = signing_keys(settings)
    verp = Verp(settings.outbound.bounce_mailbox, settings.bounce_domain, keys)
    guard = ReputationGuard(settings.guard, lambda: STREAMS)
    leave_hooks: dict[str, StreamHook] = {JOURNEYS_APP: Allowlist.forget}
    policy = FeedbackPolicy(settings.feedback, verp_outbound_id=verp.outbound_id, hooks=leave_hooks)
    suppression.push_to_ses(engine, settings.outbound.transport == "ses")
    suppression.hash_addresses_with(engine, keys)  # erased people stay suppressed under a keyed hash
    doorbell = Doorbell()
    return Intake(settings=settings, engine=engine, blobs=blobs, doorbell=doorbell,
                  inbox=Inbox(engine, blobs, max_attempts=settings.worker.max_attempts, doorbell=doorbell),
                  keys=keys, verp=verp, guard=guard, intake=FeedbackIntake(engine, policy, guard),
                  leave_hooks=leave_hooks)


def blob_store(settings: Settings) -> BlobStore:
    """The data directory, or the S3 bucket of blobs.backend = "s3"."""
    kept = settings.blobs
    if kept.backend == "local":
        return LocalBlobStore(settings.blob_dir)
    name_key = kept.s3_name_key.get_secret_value().encode() if kept.s3_name_key else b""
    return S3BlobStore.connect(kept.s3_bucket or "", region=kept.s3_region or settings.ses.region, name_key=name_key,
                               prefix=kept.s3_prefix, kms_key_id=kept.s3_kms_key_id, endpoint_url=kept.s3_endpoint_url)


def ses_ingress(settings: Settings, inbox: Inbox, blobs: BlobStore, intake: FeedbackIntake) -> SesReceiptConsumer:
    """The consumer of SES receipt notifications (ses_ingress.sqs_queue_url)."""
    from waypost.ingress import ses

    ingress = settings.ses_ingress
    return ses.connect(ingress.sqs_queue_url or "", region=ingress.region or settings.ses.region,
                       wait_seconds=ingress.sqs_wait_seconds, endpoint_url=settings.ses.endpoint_url,
                       inbox=inbox, blobs=blobs, topic_arns=ingress.sns_topic_arns,
                       max_bytes=settings.smtp.max_message_size, delete_received=ingress.delete_received,
                       keep_unreadable=lambda body, why: intake.keep_unreadable(body, why, "ses-ingress"))


def feedback_consumer(settings: Settings, intake: FeedbackIntake) -> SqsFeedbackConsumer:
    """The SQS consumer of SES feedback (feedback.sqs_queue_url)."""
    from waypost.feedback.sqs import SqsFeedbackConsumer

    return SqsFeedbackConsumer.from_settings(
        settings.feedback, settings.ses.region, intake.apply,
        keep_unreadable=lambda body, reason: intake.keep_unreadable(body, reason, "sqs"))
