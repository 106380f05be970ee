"""SES feedback JSON read into ``FeedbackEvent``s, one per recipient (REFERENCE-SES §1).

Two formats carry the same facts: identity notifications (``notificationType``: Bounce,
Complaint, Delivery) and event publishing records (``eventType``: also Send, Reject, Open,
Click, "Rendering Failure", DeliveryDelay, Subscription). Both are read here, so a bounce
reported through both gives events with equal ``dedupe_key``s.

What arrives on a queue is either the SES JSON itself (SNS raw message delivery on) or the
SNS envelope around it (raw delivery off); ``unwrap_queue_body`` tells them apart (§2).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

import orjson

from waypost.feedback import reasons
from waypost.feedback.dsn import effective_status
from waypost.feedback.events import BounceType, FeedbackEvent, FeedbackFormatError, Kind, Source
from waypost.feedback.mailparts import BARE_ADDRESS

Record = Mapping[str, Any]


def parse_ses_notification(payload: str | dict[str, Any]) -> list[FeedbackEvent]:
    """Read one SES notification or event record; return one event per recipient.

    Returns ``[]`` for inbound ``Received`` notifications (mail we received, not feedback
    on mail we sent) and for types this code does not know; the caller counts those.
    Unknown keys are ignored, as AWS asks (SES adds fields over time).

    Raises ``FeedbackFormatError`` when the payload is not a JSON object, names no type,
    or lacks an object the type needs (``mail``, ``bounce``, ...).
    """
    raw, record = _load(payload)
    ses_type = record.get("eventType", record.get("notificationType"))
    if not isinstance(ses_type, str):
        raise FeedbackFormatError("SES record has neither a notificationType nor an eventType string")
    build = _BUILDERS.get(ses_type)
    if build is None:  # "Received" and anything newer than this code
        return []
    mail = _object(record, "mail", ses_type)
    return build(record, _Context(mail, _common(mail, raw)))


def unwrap_queue_body(body: str) -> tuple[str, str | None]:
    """Return ``(ses_json_text, topic_arn)`` for an SQS message body.

    An SNS envelope (raw delivery off) gives its ``Message`` string and ``TopicArn``; any
    other JSON object is taken as the SES JSON itself (raw delivery on: no topic known).
    Raises ``FeedbackFormatError`` for a body that is not a JSON object, a notification
    envelope without ``Message`` or ``TopicArn``, and subscription (un)confirmations.
    """
    document = _json_object(body, "SQS message body")
    sns_type = document.get("Type")
    if sns_type is None:
        return body, None
    if sns_type == "Notification":
        message, topic = document.get("Message"), document.get("TopicArn")
        if not isinstance(message, str):
            raise FeedbackFormatError("SNS notification envelope has no 'Message' string")
        if not isinstance(topic, str) or not topic:
            # SNS always names the topic; without it the topic allow-list could be sidestepped
            raise FeedbackFormatError("SNS notification envelope has no 'TopicArn'")
        return message, topic
    if sns_type in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        raise FeedbackFormatError(
            f"SNS {sns_type} for topic {document.get('TopicArn')!r} arrived on the queue: SNS confirms "
            "subscriptions of SQS queues itself (when the topic owner subscribes a queue of another "
            "account, confirm with ConfirmSubscription and the Token in this body), so this is unexpected "
            "here and was not applied")
    raise FeedbackFormatError(f"SNS envelope of type {sns_type!r} is not a notification")


# --- reading the JSON ---------------------------------------------------------------------


def _load(payload: str | dict[str, Any]) -> tuple[str, Record]:
    if isinstance(payload, str):
        return payload, _json_object(payload, "SES notification")
    if isinstance(payload, dict):
        try:
            return json.dumps(payload, separators=(",", ":"), ensure_ascii=False), payload
        except (TypeError, ValueError) as err:
            raise FeedbackFormatError(f"SES notification dict is not JSON data: {err}") from err
    raise FeedbackFormatError(f"SES notification must be JSON text or a dict, not {type(payload).__name__}")


def _json_object(text: str, what: str) -> Record:
    # orjson: under half the stdlib's time for a 1.3 KB notification, which a catch-up of
    # thousands feels. It refuses what RFC 8259 does not allow and the stdlib lets through
    # (NaN, Infinity, lone surrogates): such a notification is kept as unreadable. (An integer
    # past 64 bits comes back a float; no field read here is a number.)
    try:
        document = orjson.loads(text)
    except (ValueError, RecursionError) as err:  # orjson.JSONDecodeError is a ValueError
        raise FeedbackFormatError(f"{what} is not JSON: {err}") from err
    if not isinstance(document, dict):
        raise FeedbackFormatError(f"{what} is a JSON {type(document).__name__}, not a JSON object")
    return document


def _object(record: Record, key: str, ses_type: str) -> Record:
    value = record.get(key)
    if not isinstance(value, dict):
        raise FeedbackFormatError(f"SES {ses_type} record has no {key!r} object")
    return value


def _optional_object(record: Record, key: str) -> Record:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _timestamp(section: Record) -> datetime | None:
    """ISO 8601 as SES writes it (``2022-08-03T17:34:55.000Z``); anything else gives None."""
    value = section.get("timestamp")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _address(value: Any) -> str | None:
    """The bare address; ``mail.destination`` may carry display names as given to SendEmail."""
    text = _text(value)
    if text is None or BARE_ADDRESS.fullmatch(text):  # as ``parseaddr`` would give it back, for less
        return text
    _, bare = parseaddr(text)
    return bare if "@" in bare else text


def _recipients(section: Record, key: str) -> list[Record]:
    """Per-recipient entries; strings become ``{"emailAddress": ...}``. None named: one
    entry without an address, so the report is not lost."""
    value = section.get(key)
    if value is None:
        value = []
    if not isinstance(value, list):
        raise FeedbackFormatError(f"{key!r} is a {type(value).__name__}, not a list")
    entries = [{"emailAddress": item} if isinstance(item, str) else item for item in value]
    if not all(isinstance(entry, dict) for entry in entries):
        raise FeedbackFormatError(f"{key!r} holds an entry that is neither an address nor an object")
    return entries or [{}]


# --- common fields --------------------------------------------------------------------------


class _Context:
    def __init__(self, mail: Record, common: dict[str, Any]) -> None:
        self.mail = mail
        self.common = common

    def events(self, kind: Kind, entries: list[Record], occurred_at: datetime | None,
               per_recipient: Callable[[Record], dict[str, Any]] | None = None,
               **shared: Any) -> list[FeedbackEvent]:
        return [FeedbackEvent(kind=kind, recipient=_address(entry.get("emailAddress")), occurred_at=occurred_at,
                              **self.common, **shared, **(per_recipient(entry) if per_recipient else {}))
                for entry in entries]

    def destinations(self) -> list[Record]:
        return _recipients(self.mail, "destination")


def _common(mail: Record, raw: str) -> dict[str, Any]:
    provider_id = _text(mail.get("messageId"))
    return {
        "source": Source.SES,
        "provider_message_id": provider_id,
        "message_id_header": _original_message_id(mail, provider_id),
        "stream": _stream_tag(mail),
        "raw": raw,
    }


def _original_message_id(mail: Record, provider_id: str | None) -> str | None:
    """Our own Message-ID as SES quotes it back: the header itself, else ``commonHeaders``.
    SES's documentation examples echo SES's id there; that is not ours, so it is dropped."""
    headers = mail.get("headers")
    found = None
    if isinstance(headers, list):
        for header in headers:  # the first Message-ID header (a JSON name that is not a string is not one)
            name = header.get("name") if isinstance(header, dict) else None
            if isinstance(name, str) and name.strip().lower() == "message-id":
                found = _text(header.get("value"))
                break
    if found is None:
        found = _text(_optional_object(mail, "commonHeaders").get("messageId"))
    return None if found == provider_id else found


def _stream_tag(mail: Record) -> str | None:
    value = _optional_object(mail, "tags").get("stream")
    if isinstance(value, list):  # event publishing: every tag is a list of values
        value = value[0] if value else None
    return _text(value)


# --- one builder per SES type ---------------------------------------------------------------

Builder = Callable[[Record, _Context], list[FeedbackEvent]]


def _bounce_type(value: Any) -> BounceType:
    try:
        return BounceType(value)
    except ValueError:  # missing or new: SES's own word for "could not classify"
        return BounceType.UNDETERMINED


def _bounce(record: Record, ctx: _Context) -> list[FeedbackEvent]:
    bounce = _object(record, "bounce", "Bounce")
    bounce_type, subtype = _bounce_type(bounce.get("bounceType")), _text(bounce.get("bounceSubType"))

    def per_recipient(entry: Record) -> dict[str, Any]:
        status, diagnostic = _text(entry.get("status")), _text(entry.get("diagnosticCode"))
        reason, reply_code = _bounce_reason(bounce_type, subtype, status, diagnostic)
        return {"action": _text(entry.get("action")), "status": status, "diagnostic": diagnostic,
                "reason": reason, "reply_code": reply_code}

    return ctx.events(Kind.BOUNCE, _recipients(bounce, "bouncedRecipients"), _timestamp(bounce), per_recipient,
                      feedback_id=_text(bounce.get("feedbackId")), bounce_type=bounce_type, bounce_subtype=subtype)


@functools.lru_cache(maxsize=4096)
def _bounce_reason(bounce_type: BounceType, subtype: str | None, status: str | None,
                   diagnostic: str | None) -> tuple[str, str | None]:
    """The reason and the SMTP reply code of a bounced recipient: worked out once per distinct
    answer (a provider gives many recipients the same status and diagnostic)."""
    code = effective_status(status, diagnostic)
    return reasons.classify_ses(bounce_type, subtype, code, diagnostic), reasons.reply_code(diagnostic)


def _complaint(record: Record, ctx: _Context) -> list[FeedbackEvent]:
    complaint = _object(record, "complaint", "Complaint")
    feedback_type = _text(complaint.get("complaintFeedbackType"))
    return ctx.events(
        Kind.COMPLAINT, _recipients(complaint, "complainedRecipients"), _timestamp(complaint),
        feedback_id=_text(complaint.get("feedbackId")), reason="feedback",
        feedback_type=feedback_type.lower() if feedback_type else None,
        complaint_subtype=_text(complaint.get("complaintSubType")))


def _delivery(record: Record, ctx: _Context) -> list[FeedbackEvent]:
    delivery = _object(record, "delivery", "Delivery")
    return ctx.events(Kind.DELIVERY, _recipients(delivery, "recipients"), _timestamp(delivery),
                      diagnostic=_text(delivery.get("smtpResponse")), reason="delivered")


def _delivery_delay(record: Record, ctx: _Context) -> list[FeedbackEvent]:
    delay = _object(record, "deliveryDelay", "DeliveryDelay")
    return ctx.events(
        Kind.DELAY, _recipients(delay, "delayedRecipients"), _timestamp(delay),
        lambda r: {"status": _text(r.get("status")), "diagnostic": _text(r.get("diagnosticCode"))},
        bounce_subtype=_text(delay.get("delayType")))


def _subscription(record: Record, ctx: _Context) -> list[FeedbackEvent]:
    subscription = _object(record, "subscription", "Subscription")
    preferences = _optional_object(subscription, "newTopicPreferences")
    topics = preferences.get("topicSubscriptionStatus")
    opted_out = isinstance(topics, list) and any(
        isinstance(t, dict) and str(t.get("subscriptionStatus", "")).lower() == "optout" for t in topics)
    return ctx.events(Kind.SUBSCRIPTION, ctx.destinations(), _timestamp(subscription),
                      unsubscribe=preferences.get("unsubscribeAll") is True or opted_out)


def _no_diagnostic(section: Record) -> str | None:
    return None


def _at_send_time(kind: Kind, key: str,
                  diagnostic: Callable[[Record], str | None] = _no_diagnostic) -> Builder:
    """Send, Reject and Rendering Failure happen when the mail is handed to SES; their
    objects carry no timestamp, so the mail's own one stands in (it keeps Send's dedupe
    key stable across redeliveries)."""
    def build(record: Record, ctx: _Context) -> list[FeedbackEvent]:
        section = _optional_object(record, key)
        return ctx.events(kind, ctx.destinations(), _timestamp(section) or _timestamp(ctx.mail),
                          diagnostic=diagnostic(section))
    return build


def _engagement(kind: Kind, key: str) -> Builder:
    def build(record: Record, ctx: _Context) -> list[FeedbackEvent]:
        return ctx.events(kind, ctx.destinations(), _timestamp(_optional_object(record, key)))
    return build


def _rendering_failure_text(failure: Record) -> str | None:
    parts = [p for p in (_text(failure.get("templateName")), _text(failure.get("errorMessage"))) if p]
    return ": ".join(parts) or None


_BUILDERS: dict[str, Builder] = {
    "Bounce": _bounce,
    "Complaint": _complaint,
    "Delivery": _delivery,
    "DeliveryDelay": _delivery_delay,
    "Subscription": _subscription,
    "Send": _at_send_time(Kind.SEND, "send"),
    "Reject": _at_send_time(Kind.REJECT, "reject", lambda reject: _text(reject.get("reason"))),
    "Rendering Failure": _at_send_time(Kind.RENDERING_FAILURE, "failure", _rendering_failure_text),
    "Open": _engagement(Kind.OPEN, "open"),
    "Click": _engagement(Kind.CLICK, "click"),
}
