"""The loopback MX of `waypost drill`'s local simulator: an aiosmtpd server on 127.0.0.1, on a
port the kernel picks, that lives for one drill.

It accepts mail for the drill domain only, keeps each message with its envelope, and answers
nothing else; what the "mailbox provider" then does with an accepted message (bounce it, report
it as spam, answer out of office) is decided by ``waypost.drill.simulator``, which takes the
messages from here. Mail for any other domain is refused at RCPT (RFC 5321 §3.6.2: no relaying),
so a misrouted real message can never disappear into the drill.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Accepted:
    mail_from: str
    recipient: str
    raw: bytes


class DrillMx:
    """``with DrillMx(domain) as mx:`` serves on ``mx.host:mx.port`` until the block ends."""

    def __init__(self, domain: str, *, hostname: str = "mx.drill.waypost.invalid", start_timeout: float = 10.0) -> None:
        self.domain = domain.lower()
        self.host = "127.0.0.1"
        self.port = 0
        self._lock = threading.Lock()
        self._accepted: list[Accepted] = []
        self._controller = _PortZeroController(self, hostname=self.host, port=0, server_hostname=hostname,
                                               ready_timeout=start_timeout)

    def __enter__(self) -> DrillMx:
        self._controller.start()
        self.port = self._controller.port
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._controller.stop()

    def take(self) -> list[Accepted]:
        """The messages accepted since the last call."""
        with self._lock:
            taken, self._accepted = self._accepted, []
        return taken

    # -- aiosmtpd handler hooks ------------------------------------------------------------

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if not address.lower().endswith("@" + self.domain):
            return "550 5.7.1 relaying denied: this is the drill's simulator, it takes drill addresses only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        with self._lock:
            self._accepted.extend(Accepted(str(envelope.mail_from or ""), rcpt, raw) for rcpt in envelope.rcpt_tos)
        return "250 2.0.0 accepted by the drill simulator"


class _PortZeroController(Controller):
    """aiosmtpd's threaded controller on port 0; its readiness probe needs the bound port."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)

    def _trigger_server(self) -> None:
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()
