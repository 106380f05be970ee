"""Sender port: hands one finished message to a transport.

Contract: ``send`` returns the provider's message id once the transport has accepted the
message, raises TransientError when a later retry may succeed and PermanentError when it
cannot. It may be called again with the same ``idempotency_key`` after a crash; adapters
that can deduplicate on it must.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Envelope:
    sender: str  # MAIL FROM / Return-Path
    recipient: str
    idempotency_key: str


class Sender(Protocol):
    name: str

    def send(self, envelope: Envelope, raw: bytes) -> str: ...
