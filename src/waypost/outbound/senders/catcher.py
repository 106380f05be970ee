"""The built-in mail catcher: every outbound message becomes an ``.eml`` file in the outbox
directory, with the envelope sender written as ``Return-Path:`` the way a delivering MTA
records it (RFC 5321 §4.4). The file name comes from the idempotency key, so a retried send
replaces the same file instead of delivering twice."""

from __future__ import annotations

import re
from pathlib import Path

from waypost.errors import TransientError
from waypost.outbound.senders.base import Envelope
from waypost.store.blobs import write_atomically

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def catcher_file_name(idempotency_key: str) -> str:
    return _UNSAFE.sub("_", idempotency_key) + ".eml"


class CatcherSender:
    name = "catcher"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def send(self, envelope: Envelope, raw: bytes) -> str:
        name = catcher_file_name(envelope.idempotency_key)
        stamped = f"Return-Path: <{envelope.sender}>\r\n".encode() + raw
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self.directory / name, stamped)
        except OSError as err:
            raise TransientError(f"catcher cannot write {name}: {err}") from err
        return name
