"""Sender port: hands one finished message to a transport.

Contract
--------
``send(envelope, raw, handoff)`` returns the provider's message id once the transport has
accepted the message. It calls ``handoff()`` exactly once, immediately before the first byte
of the message itself leaves (SMTP: after every RCPT was accepted, before DATA; an API: before
the request; the catcher: before writing). ``handoff`` records durably that delivery may have
happened: from then on the outbox never hands the same message over again unless the
transport said no. What ``send`` raises tells the outbox what happened:

- ``ThrottledError`` (a ``TransientError``): not delivered; the provider asked us to slow down.
  Retried after ``retry_after`` seconds without using up an attempt: throttling never drops a
  recipient.
- ``TransientError``: not delivered; a later attempt may succeed (4xx, network before handoff).
- ``PermanentError``: not delivered and never will be (5xx at RCPT, SES ``MessageRejected``).
  ``SendingPausedError`` (provider paused the account) is permanent for this attempt and also
  pauses the outbox.
- ``DeliveryUnknownError``: the message was handed over and the answer was lost (connection
  dropped after the data). Never sent again; recorded as sent, unconfirmed.

``confirm(envelope)`` answers, after a crash, whether a handed-over message arrived: the
provider id when the adapter can tell, else None (unknown).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from waypost.errors import PermanentError, TransientError


@dataclass(frozen=True)
class Envelope:
    sender: str  # MAIL FROM / Return-Path (a VERP address when a bounce domain is set)
    recipient: str
    idempotency_key: str
    stream: str = "default"  # which kind of mail: a tag for providers, a scope for pauses
    message_id: str = ""  # our Message-ID header, for logs and provider tags


class ThrottledError(TransientError):
    """The provider refused for rate or quota reasons; try again after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecipientRefusedError(PermanentError):
    """The receiving side refused this recipient for good (5xx at RCPT): feedback about the
    address, applied like a bounce."""

    def __init__(self, message: str, *, code: int, reply: str) -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply


class SendingPausedError(PermanentError):
    """The provider paused sending for the whole account or configuration set."""


class DeliveryUnknownError(PermanentError):
    """Handed over, then the answer was lost: sending again could deliver twice."""


Handoff = Callable[[], None]


@dataclass(frozen=True)
class SendLimits:
    """What the provider's account may send; the outbox's rate limiter and quota take these."""

    max_per_second: float
    max_per_day: int | None  # None: unlimited (SES reports -1)
    sent_last_24h: int | None
    production_access: bool | None  # False: sandbox; None: not known (the v1 API cannot tell)
    source: str  # the API that answered, for logs and the readiness report


class Sender(Protocol):
    """The port every transport fills (``BaseSender`` gives the optional parts' defaults)."""

    name: str

    @property
    def confirms(self) -> bool:
        """True when ``confirm`` knows for sure: None from it then means "never arrived", so the
        outbox may send again after a crash; otherwise None means "unknown"."""
        ...

    def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str: ...

    def confirm(self, envelope: Envelope) -> str | None: ...

    def account_limits(self) -> SendLimits | None:
        """The provider account's sending limits, or None where the transport has none to tell."""
        ...

    def ready(self) -> None:
        """Set the transport up now (``serve`` and ``worker`` call it at start), so a bad
        configuration stops the process at once; raises ``ConfigError``."""
        ...

    def close(self) -> None: ...


class BaseSender:
    """Defaults for the optional parts of the Sender port; an adapter overrides what its
    transport can do and implements ``send``."""

    name = "sender"

    @property
    def confirms(self) -> bool:
        return False

    def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
        raise NotImplementedError

    def confirm(self, envelope: Envelope) -> str | None:
        return None

    def account_limits(self) -> SendLimits | None:
        return None

    def ready(self) -> None:
        return None

    def close(self) -> None:
        return None
