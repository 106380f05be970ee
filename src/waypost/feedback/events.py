"""One internal shape for every piece of delivery feedback, whatever brought it: an SES
notification or event (via SQS or the SNS endpoint), a DSN (RFC 3464) or an ARF complaint
(RFC 5965) arriving by mail at the VERP bounce address.

A ``FeedbackEvent`` concerns exactly one recipient. It keeps the payload it was read from
(``raw``), so what the policy did can always be checked against what arrived.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property


class Kind(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    DELIVERY = "delivery"
    DELAY = "delay"  # SES DeliveryDelay, DSN Action: delayed
    REJECT = "reject"  # SES Reject (virus found; SES did not send)
    RENDERING_FAILURE = "rendering-failure"
    SUBSCRIPTION = "subscription"  # SES list management preferences changed
    SEND = "send"
    OPEN = "open"
    CLICK = "click"
    AUTO_REPLY = "auto-reply"  # RFC 3834 vacation and out-of-office answers: never a bounce


class BounceType(StrEnum):
    PERMANENT = "Permanent"
    TRANSIENT = "Transient"
    UNDETERMINED = "Undetermined"


class Source(StrEnum):
    SES = "ses"
    DSN = "dsn"
    ARF = "arf"
    SMTP = "smtp"  # our smarthost refused the recipient at RCPT: no DSN will come


@dataclass(frozen=True)
class FeedbackEvent:
    kind: Kind
    source: Source
    recipient: str | None  # the one address this event is about (None: SES named none)
    occurred_at: datetime | None  # when the receiving side reported it (aware UTC)
    # correlation with our outbox: SES's message id (mail.messageId), our own Message-ID
    # header as quoted back (SES headers, the DSN's or ARF's enclosed original), the VERP
    # address the report came back to
    provider_message_id: str | None = None
    message_id_header: str | None = None
    verp_address: str | None = None
    # the report's own identity: SES feedbackId, or the Message-ID of the DSN/ARF mail
    feedback_id: str | None = None
    bounce_type: BounceType | None = None  # bounces only
    bounce_subtype: str | None = None  # SES subtypes: General, NoEmail, Suppressed, MailboxFull, ...
    action: str | None = None  # DSN Action (failed, delayed, delivered, relayed, expanded)
    status: str | None = None  # enhanced status code, e.g. 5.1.1
    diagnostic: str | None = None  # Diagnostic-Code, SES diagnosticCode, SMTP response, reason
    feedback_type: str | None = None  # complaints: abuse, fraud, not-spam, auth-failure, ...
    complaint_subtype: str | None = None  # SES: None or OnAccountSuppressionList
    stream: str | None = None  # our stream, from the SES message tags when present
    unsubscribe: bool = False  # subscription events: the recipient opted out
    reason: str | None = None  # why it failed, in the ``reasons`` vocabulary (userunknown, blocked, ...)
    reply_code: str | None = None  # the SMTP reply code (RFC 5321 §4.2) the remote server gave
    raw: str = ""  # the payload as received (JSON text, or the report's text part)

    @cached_property  # the fields never change (frozen); the policy asks twice per event
    def dedupe_key(self) -> str:
        """Same report, same key: SES may deliver a notification twice, and identity
        notifications and event publishing both report the same bounce (REFERENCE-SES §1b)."""
        message = self.provider_message_id or self.message_id_header or self.verp_address or ""
        parts: tuple[str, ...] = (self.kind.value, message, self.feedback_id or "", (self.recipient or "").lower())
        # events that happen more than once for one message and carry no feedback id of their own:
        # a second delay, a later opt-out after an opt-in, a second open or click is news, not a copy
        if not self.feedback_id and self.kind in _REPEATABLE:
            parts += (self.occurred_at.isoformat() if self.occurred_at else "",)
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


_REPEATABLE = frozenset({Kind.DELIVERY, Kind.DELAY, Kind.SEND, Kind.SUBSCRIPTION, Kind.OPEN, Kind.CLICK})


class FeedbackFormatError(ValueError):
    """A notification or report that cannot be read: kept with its bytes, never applied."""
