"""The built-in mail catcher: every outbound message becomes an ``.eml`` file in the outbox
directory, with the envelope sender written as ``Return-Path:`` the way a delivering MTA
records it (RFC 5321 §4.4). The file name comes from the idempotency key, so the catcher can
tell after a crash whether a message arrived (``confirms``), and a repeated send replaces the
same file instead of delivering twice."""

from __future__ import annotations

import re
from pathlib import Path

from waypost.errors import TransientError
from waypost.outbound.senders.base import BaseSender, Envelope, Handoff
from waypost.store.blobs import write_atomically

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def catcher_file_name(idempotency_key: str) -> str:
    return _UNSAFE.sub("_", idempotency_key) + ".eml"


class CatcherSender(BaseSender):
    name = "catcher"
    confirms = True  # confirm() knows for sure: the file is there or it is not

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
        name = catcher_file_name(envelope.idempotency_key)
        stamped = f"Return-Path: <{envelope.sender}>\r\n".encode() + raw
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TransientError(f"catcher cannot create {self.directory}: {err}") from err
        handoff()
        try:
            write_atomically(self.directory / name, stamped)
        except OSError as err:
            raise TransientError(f"catcher cannot write {name}: {err}") from err
        return name

    def confirm(self, envelope: Envelope) -> str | None:
        name = catcher_file_name(envelope.idempotency_key)
        return name if (self.directory / name).exists() else None
