"""SES feedback from an SQS queue (SES → SNS → SQS), applied a batch at a time.

The SQS client is built by the wiring module; nothing here imports boto3.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

from waypost.config import FeedbackSettings
from waypost.feedback.events import FeedbackEvent, FeedbackFormatError
from waypost.feedback.ses_events import parse_ses_notification, unwrap_queue_body

log = logging.getLogger(__name__)

Message = dict[str, Any]


_QUEUE_REGION = re.compile(r"https://sqs\.([a-z0-9-]+)\.amazonaws\.com")


def queue_region(queue_url: str, default: str) -> str:
    """The region a queue lives in, as its URL names it (it need not be SES's sending region)."""
    found = _QUEUE_REGION.match(queue_url)
    return found.group(1) if found else default


class SqsPoller:
    """The loop every SQS consumer shares: long-poll a batch, handle it (``poll_once``, which a
    subclass defines), delete what was handled, back off after failures. The SES receipt
    ingress (ingress/ses.py) is the other subclass."""

    BACKOFF_START = 1.0  # seconds after the first failure in a row; doubles per failure
    BACKOFF_CAP = 60.0

    def __init__(self, client: Any, queue_url: str, *, wait_seconds: int = 20, batch: int = 10,
                 visibility_timeout: int | None = None) -> None:
        if not 1 <= batch <= 10:
            raise ValueError(f"batch must be 1..10 (the SQS ReceiveMessage limit), not {batch}")
        if not 0 <= wait_seconds <= 20:
            raise ValueError(f"wait_seconds must be 0..20 (the SQS long-polling limit), not {wait_seconds}")
        self.client = client
        self.queue_url = queue_url
        self.wait_seconds = wait_seconds
        self.batch = batch
        self.visibility_timeout = visibility_timeout
        self.counts: Counter[str] = Counter()

    @staticmethod
    def make_client(queue_url: str, default_region: str, wait_seconds: int) -> Any:
        """A boto3 SQS client for ``queue_url`` (retries by the SDK, a read timeout above the long poll)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "sqs", region_name=queue_region(queue_url, default_region),
            config=Config(retries={"total_max_attempts": 3, "mode": "standard"}, read_timeout=wait_seconds + 10))

    def poll_once(self) -> int:
        """Receive, handle and delete one batch; return how many messages were handled."""
        raise NotImplementedError

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set. Any failure (network, AWS, ``apply``) is logged and
        retried after an exponential back-off capped at ``BACKOFF_CAP`` seconds; ``stop``
        ends a back-off at once and a long poll within ``wait_seconds``."""
        failures = 0
        while not stop.is_set():
            try:
                handled = self.poll_once()
            except Exception:
                failures += 1
                delay = min(self.BACKOFF_CAP, self.BACKOFF_START * 2 ** min(failures - 1, 16))
                log.exception("polling SQS queue %s failed (%d in a row); trying again in %.1fs",
                              self.queue_url, failures, delay)
                stop.wait(delay)
                continue
            failures = 0
            if handled == 0 and self.wait_seconds == 0:
                stop.wait(self.BACKOFF_START)  # short polling: do not spin on an empty queue

    # --- the steps every consumer shares ----------------------------------------------------

    def _receive(self) -> list[Message]:
        request: dict[str, Any] = {"QueueUrl": self.queue_url, "MaxNumberOfMessages": self.batch,
                                   "WaitTimeSeconds": self.wait_seconds}
        if self.visibility_timeout is not None:
            request["VisibilityTimeout"] = self.visibility_timeout
        return list(self.client.receive_message(**request).get("Messages", []))

    def _delete(self, messages: list[Message]) -> None:
        """Delete, retrying failed entries once. What still fails comes back later and is
        applied again, which the dedupe on the applying side makes harmless."""
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        failed = self._delete_batch(entries)
        if failed:
            failed = self._delete_batch([e for e in entries if e["Id"] in failed])
        for entry_id, reason in failed.items():
            log.warning("could not delete SQS message %s (%s); it will be delivered again",
                        messages[int(entry_id)].get("MessageId"), reason)
        self.counts["deleted"] += len(entries) - len(failed)

    def _delete_batch(self, entries: list[dict[str, str]]) -> dict[str, str]:
        if not entries:
            return {}
        response = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return {f["Id"]: f"{f.get('Code', '?')}: {f.get('Message', '')}" for f in response.get("Failed", [])}


class SqsFeedbackConsumer(SqsPoller):
    """Reads SES notifications off one SQS queue and hands their events to ``apply``.

    Contract (at-least-once): **an SQS message is deleted only after its work is
    committed.** Each ``poll_once`` receives up to ``batch`` messages and calls ``apply``
    once with the events of all readable ones; only after it returns are they deleted.
    If ``apply`` raises, nothing is deleted and SQS delivers the messages again after the
    visibility timeout, so ``apply`` must be idempotent (``FeedbackEvent.dedupe_key``).
    A message that fails ``apply`` every time comes back every time: give the queue a
    redrive policy (dead-letter queue, ``maxReceiveCount``) so it ends somewhere visible.

    A body that cannot be read (not JSON, not SES, an SNS confirmation, a topic outside a
    non-empty ``topic_arns``) goes to ``keep_unreadable(body, reason)`` and is then deleted,
    so one bad message cannot loop forever; if ``keep_unreadable`` raises, it stays.
    Messages without feedback (``Received`` notifications, SES types unknown here) are
    deleted and counted in ``counts["ignored"]``.
    """

    @classmethod
    def from_settings(cls, feedback: FeedbackSettings, default_region: str,
                      apply: Callable[[list[FeedbackEvent]], object],
                      keep_unreadable: Callable[[str, str], None]) -> SqsFeedbackConsumer:
        """The consumer of ``feedback.sqs_queue_url`` with its own boto3 client (retries by the
        SDK, a read timeout above the long poll)."""
        queue_url = feedback.sqs_queue_url or ""
        client = cls.make_client(queue_url, default_region, feedback.sqs_wait_seconds)
        return cls(client, queue_url, apply, topic_arns=feedback.sns_topic_arns, keep_unreadable=keep_unreadable,
                   wait_seconds=feedback.sqs_wait_seconds)

    def __init__(self, client: Any, queue_url: str, apply: Callable[[list[FeedbackEvent]], object], *,
                 topic_arns: Collection[str] = (), keep_unreadable: Callable[[str, str], None],
                 wait_seconds: int = 20, batch: int = 10, visibility_timeout: int | None = None) -> None:
        super().__init__(client, queue_url, wait_seconds=wait_seconds, batch=batch,
                         visibility_timeout=visibility_timeout)  # counts: events, ignored, unreadable, deleted
        self.apply = apply
        self.topic_arns = frozenset(topic_arns)
        self.keep_unreadable = keep_unreadable

    def poll_once(self) -> int:
        """Receive one batch, apply it, delete what was handled; return how many messages
        were handled (applied, without feedback, or kept as unreadable).

        ``apply`` is not called for a batch without events; ``keep_unreadable`` runs only
        after ``apply`` returned. Re-raises what ``apply`` raises, having deleted nothing."""
        messages = self._receive()
        events: list[FeedbackEvent] = []
        readable: list[Message] = []
        unreadable: list[tuple[Message, str]] = []
        without_feedback: list[str | None] = []
        for message in messages:
            try:
                found = self._read(message.get("Body", ""))
            except FeedbackFormatError as err:
                unreadable.append((message, str(err)))
                continue
            readable.append(message)
            events.extend(found)
            if not found:
                without_feedback.append(message.get("MessageId"))
        if events:
            self.apply(events)  # raises: nothing deleted, SQS redelivers
        self._count(events, without_feedback)
        handled = readable + self._keep(unreadable)
        self._delete(handled)
        return len(handled)

    def handle_body(self, body: str) -> None:
        """One message's body on its own (the Lambda handler, which SQS hands a batch already
        received): apply its events, or keep it as unreadable. Raises what ``apply`` or
        ``keep_unreadable`` raises; then the message must stay on the queue."""
        try:
            events = self._read(body)
        except FeedbackFormatError as err:
            self.keep_unreadable(body, str(err))
            self.counts["unreadable"] += 1
            return
        if events:
            self.apply(events)
        self._count(events, [] if events else [None])

    # --- steps ------------------------------------------------------------------------------

    def _read(self, body: str) -> list[FeedbackEvent]:
        payload, topic = unwrap_queue_body(body)
        if self.topic_arns and topic is not None and topic not in self.topic_arns:
            raise FeedbackFormatError(f"topic not allowed: {topic}")
        return parse_ses_notification(payload)

    def _count(self, events: list[FeedbackEvent], without_feedback: list[str | None]) -> None:
        self.counts["events"] += len(events)
        self.counts["ignored"] += len(without_feedback)
        for message_id in without_feedback:
            log.info("SQS message %s carries no feedback (Received or an SES type unknown here); deleting it",
                     message_id)

    def _keep(self, unreadable: list[tuple[Message, str]]) -> list[Message]:
        kept = []
        for message, reason in unreadable:
            try:
                self.keep_unreadable(message.get("Body", ""), reason)
            except Exception:
                log.exception("could not keep unreadable SQS message %s; it stays on the queue",
                              message.get("MessageId"))
                continue
            log.warning("unreadable SQS message %s kept for the operator: %s", message.get("MessageId"), reason)
            self.counts["unreadable"] += 1
            kept.append(message)
        return kept
