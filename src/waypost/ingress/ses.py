"""Mail received by Amazon SES: receipt notifications off an SQS queue, the raw mail from S3.

SES stores a mail in S3 (receipt rule, S3 action) and says so on SNS, which delivers to an SQS
queue (wrapped in the SNS envelope, or raw); or the bucket itself sends S3 event notifications
to the queue; or SES carries a small mail (up to 150 KB) inline in the notification (SNS action).
``SesReceiptConsumer`` takes each, and for **every record** of a message:

1. skips a mail already taken (SES's ``mail.messageId``, unique on the row): SQS delivers at
   least once, and one mail may be announced by both its SES and its S3 notification;
2. streams the raw mail from S3 into the BlobStore (64 KB at a time, never whole in memory);
3. commits the message row and its job (``Inbox.accept_stored``), with SES's receipt verdicts
   as the mail's authentication verdict (``mail/ses_receipt.py``): the gate judges
   them as it judges our own SMTP-time checks, and a virus or spam FAIL refuses. Headers inside
   the mail (``X-SES-*``, ``Authentication-Results``) are never read for this;
4. then deletes SES's own copy in S3 (``delete_received``, on by default: raw mail is kept once,
   in the BlobStore, under Waypost's retention; a failed delete is logged, and the bucket's
   lifecycle rule removes the object later). A mail that could not be committed keeps its object;
5. only then is the SQS message deleted.

A notification that cannot be read, an object that is missing, or a mail over the size limit is
kept whole with its reason (``keep_unreadable``: the console's unreadable feedback) and
deleted from the queue. Any other failure (S3, the database) leaves the message on the queue:
SQS delivers it again after its visibility timeout, and its redrive policy moves it to the
dead-letter queue after ``maxReceiveCount`` attempts.

S3 event notifications carry no verdicts and no envelope: such a mail is recorded with its
recipients read from its To and Cc and without a verdict, so the gate answers nobody for it;
point the S3 action's SNS topic at the queue to have it judged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from typing import Any
from urllib.parse import unquote_plus

from sqlalchemy import select

from waypost.errors import StorageError
from waypost.feedback.events import FeedbackFormatError
from waypost.feedback.ses_events import unwrap_queue_body
from waypost.feedback.sqs import Message, SqsPoller
from waypost.mail.ses_receipt import from_ses_receipt
from waypost.mail.verdict import AuthVerdict
from waypost.pipeline.inbox import Inbox, StoredMail, inbound_blob_key
from waypost.store.blobs import CHUNK, BlobStore
from waypost.store.models import inbound_messages, utcnow

log = logging.getLogger(__name__)

INGRESS = "ses"
HEADER_BYTES = 1024 * 1024  # the most of a mail read to find its To and Cc (S3 events only)
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


class ReceiptFormatError(ValueError):
    """A queue message that is not a receipt notification this ingress can act on."""


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str


@dataclass(frozen=True)
class Arrival:
    """One mail announced on the queue: where its bytes are and what SES said about it.
    ``recipients`` None: not known (an S3 event), read from the mail's To and Cc."""

    ses_message_id: str
    source: S3Object | bytes
    mail_from: str | None = None
    recipients: tuple[str, ...] | None = None
    auth: AuthVerdict | None = None


# --- reading notifications ----------------------------------------------------------------


def read_notification(body: str, topic_arns: Collection[str] = ()) -> list[Arrival]:
    """Every mail one SQS message body announces; [] for S3's test event. Raises
    ReceiptFormatError for anything else (feedback, another SES action, bad JSON)."""
    try:
        payload, topic = unwrap_queue_body(body)
    except FeedbackFormatError as err:
        raise ReceiptFormatError(str(err)) from None
    if topic_arns and topic is not None and topic not in topic_arns:
        raise ReceiptFormatError(f"topic not allowed: {topic}")
    try:
        document = json.loads(payload)
    except ValueError as err:
        raise ReceiptFormatError(f"notification is not JSON: {err}") from None
    if not isinstance(document, dict):
        raise ReceiptFormatError("notification is not a JSON object")
    if "Records" in document:
        return _s3_events(document["Records"])
    if document.get("Event") == "s3:TestEvent":
        return []  # S3 sends it once when the notification is configured
    if document.get("notificationType") == "Received":
        return [_received(document)]
    kind = document.get("notificationType", document.get("eventType"))
    raise ReceiptFormatError(f"not a receipt notification (type {kind!r})")


def _s3_events(records: Any) -> list[Arrival]:
    if not isinstance(records, list):
        raise ReceiptFormatError("'Records' is not a list")
    arrivals = []
    for record in records:
        s3 = record.get("s3") if isinstance(record, Mapping) else None
        if not isinstance(s3, Mapping) or not str(record.get("eventName", "")).startswith("ObjectCreated"):
            raise ReceiptFormatError(f"not an S3 ObjectCreated record: {str(record)[:200]}")
        bucket, key = s3.get("bucket", {}).get("name"), s3.get("object", {}).get("key")
        if not isinstance(bucket, str) or not isinstance(key, str) or not key:
            raise ReceiptFormatError("S3 record without bucket name or object key")
        key = unquote_plus(key)  # S3 encodes the key form-style (space as +)
        arrivals.append(Arrival(key.rsplit("/", 1)[-1], S3Object(bucket, key)))  # SES names it by messageId
    return arrivals


def _received(document: Mapping[str, Any]) -> Arrival:
    receipt, mail = document.get("receipt"), document.get("mail")
    if not isinstance(receipt, Mapping) or not isinstance(mail, Mapping):
        raise ReceiptFormatError("Received notification without 'receipt' and 'mail' objects")
    ses_id = mail.get("messageId")
    if not isinstance(ses_id, str) or not ses_id:
        raise ReceiptFormatError("Received notification without mail.messageId")
    action = receipt.get("action")
    if not isinstance(action, Mapping):
        raise ReceiptFormatError("Received notification without receipt.action")
    recipients = receipt.get("recipients")
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise ReceiptFormatError("Received notification without receipt.recipients")
    source = mail.get("source")
    return Arrival(ses_id, _location(document, action), mail_from=source if isinstance(source, str) else None,
                   recipients=tuple(recipients), auth=from_ses_receipt(receipt, _from_domain(mail)))


def _location(document: Mapping[str, Any], action: Mapping[str, Any]) -> S3Object | bytes:
    kind = action.get("type")
    if kind == "S3":
        bucket, key = action.get("bucketName"), action.get("objectKey")
        if not isinstance(bucket, str) or not isinstance(key, str) or not key:
            raise ReceiptFormatError("S3 action without bucketName and objectKey")
        return S3Object(bucket, key)
    if kind == "SNS":
        content = document.get("content")
        if not isinstance(content, str):
            raise ReceiptFormatError("SNS action without the mail's content")
        return _content(content, action.get("encoding"))
    raise ReceiptFormatError(f"receipt action {kind!r} carries no mail (use an S3 or SNS action)")


def _content(content: str, encoding: Any) -> bytes:
    """The SNS action's ``Encoding`` (UTF-8 by default, or Base64) is not in the notification
    itself: a mail always has a header line with a colon, which base64 never contains."""
    if str(encoding).lower() == "base64" or (":" not in content and content.strip()):
        try:
            return base64.b64decode(content, validate=False)
        except (binascii.Error, ValueError) as err:
            raise ReceiptFormatError(f"base64 content that does not decode: {err}") from None
    return content.encode("utf-8", "surrogateescape")


def _from_domain(mail: Mapping[str, Any]) -> str | None:
    """The From domain as SES parsed it (commonHeaders.from): only a label on SES's verdict."""
    found = mail.get("commonHeaders", {}).get("from") if isinstance(mail.get("commonHeaders"), Mapping) else None
    first = found[0] if isinstance(found, list) and found and isinstance(found[0], str) else ""
    address = parseaddr(first)[1]
    return address.rsplit("@", 1)[1] if "@" in address else None


# --- the consumer -------------------------------------------------------------------------


class SesReceiptConsumer(SqsPoller):
    """Takes the mail of SES receipt notifications from one SQS queue (module docstring).

    Contract: an SQS message is deleted only after every mail it announces is committed
    (or was already), or kept as unreadable with its reason. ``handle_body`` raises when a
    mail could not be stored or committed; the message then stays on the queue."""

    def __init__(self, client: Any, queue_url: str, *, s3: Any, inbox: Inbox, blobs: BlobStore,
                 keep_unreadable: Callable[[str, str], None], max_bytes: int, topic_arns: Collection[str] = (),
                 delete_received: bool = True, wait_seconds: int = 20, batch: int = 10,
                 visibility_timeout: int | None = None) -> None:
        # counts: accepted, duplicates, unreadable, deleted (SQS messages), received_deleted (S3 objects)
        super().__init__(client, queue_url, wait_seconds=wait_seconds, batch=batch,
                         visibility_timeout=visibility_timeout)
        self.s3 = s3
        self.inbox = inbox
        self.blobs = blobs
        self.keep_unreadable = keep_unreadable
        self.max_bytes = max_bytes
        self.topic_arns = frozenset(topic_arns)
        self.delete_received = delete_received

    def poll_once(self) -> int:
        handled: list[Message] = []
        for message in self._receive():
            try:
                self.handle_body(message.get("Body", ""))
            except Exception:
                log.exception("SES receipt %s not taken; SQS delivers it again", message.get("MessageId"))
                continue
            handled.append(message)
        self._delete(handled)
        return len(handled)

    def handle_body(self, body: str) -> None:
        try:
            arrivals = read_notification(body, self.topic_arns)
        except ReceiptFormatError as err:
            self._unreadable(body, str(err))
            return
        for arrival in arrivals:
            reason = self.take(arrival)
            if reason is not None:
                self._unreadable(body, f"mail {arrival.ses_message_id}: {reason}")

    def take(self, arrival: Arrival) -> str | None:
        """Store and queue one mail; return why it cannot be taken, or None once it is (or was).
        SES's object of a mail committed (now or before) is deleted when ``delete_received``."""
        if self._known(arrival.ses_message_id):
            self.counts["duplicates"] += 1
            self._forget_received(arrival.source)
            return None
        received_at, message_id = utcnow(), uuid.uuid4().hex
        blob_key = inbound_blob_key(message_id, received_at)
        reason, size = self._store(arrival.source, blob_key)
        if reason is not None:
            return reason
        mail = StoredMail(message_id, received_at, blob_key, size, arrival.mail_from,
                          arrival.recipients or self._header_recipients(blob_key), INGRESS, arrival.auth,
                          arrival.ses_message_id[:255])
        try:
            self.inbox.accept_stored(mail)
        except StorageError:
            self.blobs.delete(blob_key)
            if self._known(arrival.ses_message_id):  # another worker took it meanwhile
                self.counts["duplicates"] += 1
                self._forget_received(arrival.source)
                return None
            raise
        self.counts["accepted"] += 1
        log.info("SES mail %s queued as %s (%d bytes)", arrival.ses_message_id, message_id, size)
        self._forget_received(arrival.source)
        return None

    # --- steps ------------------------------------------------------------------------------

    def _store(self, source: S3Object | bytes, blob_key: str) -> tuple[str | None, int]:
        if isinstance(source, bytes):
            if len(source) > self.max_bytes:
                return f"{len(source)} bytes, over the limit of {self.max_bytes}", 0
            self.blobs.put(blob_key, source)
            return None, len(source)
        try:
            response = self.s3.get_object(Bucket=source.bucket, Key=source.key)
        except Exception as err:
            code = getattr(err, "response", {}).get("Error", {}).get("Code")
            if code in _MISSING:
                return f"s3://{source.bucket}/{source.key} is missing ({code})", 0
            raise
        body = response["Body"]
        with body:
            if int(response.get("ContentLength", 0)) > self.max_bytes:
                return f"s3://{source.bucket}/{source.key} has {response['ContentLength']} bytes, " \
                       f"over the limit of {self.max_bytes}", 0
            return None, self.blobs.put_stream(blob_key, body)

    def _forget_received(self, source: S3Object | bytes) -> None:
        """Delete SES's object of a committed mail; a failure only leaves it to the lifecycle rule."""
        if not self.delete_received or not isinstance(source, S3Object):
            return
        try:
            self.s3.delete_object(Bucket=source.bucket, Key=source.key)
        except Exception:
            log.warning("SES's object s3://%s/%s not deleted; the bucket's lifecycle rule expires it",
                        source.bucket, source.key, exc_info=True)
            return
        self.counts["received_deleted"] += 1

    def _header_recipients(self, blob_key: str) -> tuple[str, ...]:
        """To and Cc of a stored mail, reading no further than its header (at most HEADER_BYTES)."""
        head = b""
        with self.blobs.open(blob_key) as stream:
            while len(head) < HEADER_BYTES and b"\n\n" not in head.replace(b"\r\n", b"\n"):
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                head += chunk
        headers = BytesHeaderParser().parsebytes(head[:HEADER_BYTES])
        found = getaddresses([str(v) for name in ("to", "cc") for v in headers.get_all(name, [])])
        return tuple(dict.fromkeys(address.lower() for _, address in found if "@" in address))

    def _known(self, ses_message_id: str) -> bool:
        with self.inbox.engine.connect() as conn:
            found = conn.execute(select(inbound_messages.c.id).where(
                inbound_messages.c.ses_message_id == ses_message_id[:255])).first()
        return found is not None

    def _unreadable(self, body: str, reason: str) -> None:
        self.keep_unreadable(body, reason)  # raises: the message stays on the queue
        self.counts["unreadable"] += 1
        log.warning("SES receipt kept as unreadable: %s", reason)


def connect(queue_url: str, *, region: str, wait_seconds: int, endpoint_url: str | None = None,
            **consumer: Any) -> SesReceiptConsumer:
    """A consumer with its own boto3 SQS and S3 clients (retries by the SDK)."""
    import boto3
    from botocore.config import Config

    s3 = boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint_url,
                                        config=Config(retries={"total_max_attempts": 4, "mode": "standard"}))
    return SesReceiptConsumer(SqsPoller.make_client(queue_url, region, wait_seconds), queue_url, s3=s3,
                              wait_seconds=wait_seconds, **consumer)
