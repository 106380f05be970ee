"""The AWS Lambda entry: ``waypost.aws.lambda_handler.lambda_handler`` takes one SQS batch.

The event source mapping names the queue each record came from (``eventSourceARN``): the SES
receipt queue (``ses_ingress.sqs_queue_url``) or the SES feedback queue
(``feedback.sqs_queue_url``). Each record's body goes to the same consumer a worker runs
(``SesReceiptConsumer.handle_body``, ``SqsFeedbackConsumer.handle_body``); a record that fails
is reported in ``batchItemFailures`` (the mapping needs ``ReportBatchItemFailures``), so SQS
deletes the others and delivers only it again. A record from a queue neither setting names
fails the same way, and its queue's redrive policy ends it in the dead-letter queue.

Settings come from ``WAYPOST_*`` environment variables as everywhere (the data directory
under /tmp, PostgreSQL, S3 blobs). Cold start: importing this module loads nothing of
Waypost's service; the first batch builds only what takes mail and feedback in
(``intake_wiring.build``: settings, database, blob store, Inbox, feedback intake; no journeys
app, image library, places index or templates) once per execution environment, and later
batches reuse it. The worker builds the same parts (``runtime.build`` starts from them). The
handler never migrates the schema (many environments may start at once, and Alembic is slow to
load): the workers do at their start, or ``waypost db upgrade`` before new code is deployed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from waypost.config import Settings
    from waypost.feedback.sqs import SqsFeedbackConsumer
    from waypost.ingress.ses import SesReceiptConsumer

log = logging.getLogger(__name__)

HandleBody = Callable[[str], None]


class Consumers(Protocol):
    """What gives the queues' consumers: ``intake_wiring.Intake`` here, ``runtime.Runtime`` in a worker."""

    @property
    def settings(self) -> Settings: ...

    def ses_ingress(self) -> SesReceiptConsumer: ...

    def feedback_consumer(self) -> SqsFeedbackConsumer: ...

_handlers: dict[tuple[str, str], HandleBody] | None = None


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """Handle every record of an SQS event; return the ids of those that failed."""
    handlers = _handlers if _handlers is not None else _start()
    failures = []
    for record in event.get("Records", []):
        if not _handled(handlers, record):
            failures.append({"itemIdentifier": str(record.get("messageId", ""))})
    return {"batchItemFailures": failures}


def _handled(handlers: dict[tuple[str, str], HandleBody], record: dict[str, Any]) -> bool:
    handle = handlers.get(queue_of_arn(str(record.get("eventSourceARN", ""))))
    if handle is None:
        log.error("SQS record %s from %s: no Waypost queue setting names that queue",
                  record.get("messageId"), record.get("eventSourceARN"))
        return False
    try:
        handle(str(record.get("body", "")))
    except Exception:
        log.exception("SQS record %s failed; SQS delivers it again", record.get("messageId"))
        return False
    return True


def queue_of_arn(arn: str) -> tuple[str, str]:
    """(account, queue name) of ``arn:aws:sqs:<region>:<account>:<name>``."""
    parts = arn.split(":")
    return (parts[4], parts[5]) if len(parts) == 6 else ("", arn)


def queue_of_url(url: str) -> tuple[str, str]:
    """(account, queue name) of ``https://sqs.<region>.amazonaws.com/<account>/<name>``."""
    parts = url.rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else ("", url)


def handlers_for(consumers: Consumers) -> dict[tuple[str, str], HandleBody]:
    """The consumer of each queue the settings name, by (account, queue name)."""
    settings = consumers.settings
    handlers: dict[tuple[str, str], HandleBody] = {}
    if settings.ses_ingress.sqs_queue_url:
        handlers[queue_of_url(settings.ses_ingress.sqs_queue_url)] = consumers.ses_ingress().handle_body
    if settings.feedback.sqs_queue_url:
        handlers[queue_of_url(settings.feedback.sqs_queue_url)] = consumers.feedback_consumer().handle_body
    return handlers


def _start() -> dict[tuple[str, str], HandleBody]:
    global _handlers
    from waypost import intake_wiring
    from waypost.config import load_settings
    from waypost.logs import configure

    settings = load_settings()
    configure(fmt="json")  # one JSON object per line: CloudWatch Logs Insights reads its fields
    # the schema is the workers' (`waypost db upgrade` before new code): concurrent cold starts never migrate
    _handlers = handlers_for(intake_wiring.build(settings, upgrade=False))
    return _handlers
