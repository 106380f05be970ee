"""SMTP ingress on aiosmtpd. The hooks do the minimum: refuse at RCPT what can be refused,
store the raw bytes and queue a job, then answer 250 (invariant 1). Only this module knows
SMTP reply codes."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from waypost.errors import StorageError
from waypost.pipeline.inbox import ReceivedMail

log = logging.getLogger(__name__)

# RFC 5321 §4.5.3.1.8 requires room for at least 100 recipients; we need far fewer.
MAX_RECIPIENTS = 100


class IngressHandler:
    def __init__(self, accept: Callable[[ReceivedMail], str], accepts_recipient: Callable[[str], bool],
                 is_local_domain: Callable[[str], bool]) -> None:
        self.accept = accept
        self.accepts_recipient = accepts_recipient
        self.is_local_domain = is_local_domain

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if not self.is_local_domain(address):
            return "550 5.7.1 Relaying denied: we accept mail only for our own domain"
        if not self.accepts_recipient(address):
            return "550 5.1.1 No such mailbox here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        mail = ReceivedMail(raw=raw, mail_from=envelope.mail_from, rcpt_tos=tuple(envelope.rcpt_tos),
                            peer_ip=peer, helo=session.host_name, ingress="smtp")
        loop = asyncio.get_running_loop()
        try:
            message_id = await loop.run_in_executor(None, self.accept, mail)
        except StorageError as err:
            log.error("temporary failure storing mail from %s: %s", envelope.mail_from, err)
            return "451 4.3.0 Temporary storage failure, please try again later"
        except Exception:
            log.exception("unexpected failure storing mail from %s", envelope.mail_from)
            return "451 4.3.0 Temporary failure, please try again later"
        return f"250 2.0.0 OK: queued as {message_id}"


async def start_smtp_server(handler: IngressHandler, *, host: str, port: int, hostname: str,
                            max_message_size: int) -> asyncio.Server:
    """Listen on host:port (0 picks a free port); the caller reads the bound address from
    ``server.sockets``."""
    def factory() -> SMTP:
        return SMTP(handler, data_size_limit=max_message_size, hostname=hostname, ident="Waypost ESMTP",
                    decode_data=False, enable_SMTPUTF8=True)

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return await loop.create_server(factory, sock=sock)
