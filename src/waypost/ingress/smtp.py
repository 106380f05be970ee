"""SMTP ingress on aiosmtpd. The hooks do the minimum: refuse at RCPT what can be refused,
store the raw bytes and queue a job, then answer 250 (invariant 1). Only this module (and
``submission.py`` beside it) knows SMTP reply codes.

Limits, each answered with its own code (RFC 5321 §4.5.3 names the limits; RFC 3463 the
enhanced codes):

============================  =====================================================  ==========
limit (``SessionLimits``)     reply                                                   when
============================  =====================================================  ==========
recipients                    ``452 4.5.3 Too many recipients``                       RCPT
message size (``SIZE``)       ``552 5.3.4 Message size exceeds fixed maximum ...``    MAIL, DATA
line length                   ``500 5.5.2 Line too long ...``                         end of DATA
header section octets         ``552 5.3.4 Header section too large ...``              end of DATA
header field count            ``552 5.3.4 Too many header fields ...``                end of DATA
command line (512, aiosmtpd)  ``500 Command line too long``                           command
connections from one client   ``421 4.7.0 Too many connections from your address``    connect
connections in all            ``421 4.7.0 <host> Too many connections ...``           connect
timeout                       ``421 4.4.2 <host> Timeout exceeded ...``               any time
never answered (journeys)     ``550 5.7.1 Message refused: <why>``                    end of DATA
============================  =====================================================  ==========

Message data is never gathered in memory: each line goes into a ``MessageSpool``
(``spool.py``), which keeps it in memory only while the process-wide ``InflightBudget`` has
room and the message is small (``FILE_OVER``), and otherwise on disk; the limits on lines and
headers are read on the way in. A message on disk is authenticated and stored from its file,
in pieces (``mail/spooled.py``).

Mail whose every recipient is an app only members may use (journeys) and which the gate would
refuse for good is refused after the final dot with ``550 5.7.1`` (``pipeline/arrival.py``): a
From that is missing or not allowlisted, read from the header alone before the body is read
back, or a message that does not authenticate for its From domain. Only its metadata is
recorded (``RecordRefusal``). The sending server, not Waypost, then tells its user.

Line length gets ``500`` because RFC 5321 §4.5.3.1.9 gives "500 Line too long" for it, and
``5.5.2`` because it is a violation of the data syntax (§4.5.3.1.6), which is the enhanced
code IANA lists beside 500; ``5.3.4`` would say "too big", which the message may not be, and
``5.5.6`` is the AUTH exchange line (RFC 4954). Limits on the data are answered after the
final dot, as RFC 5321 §4.2.5 implies, never by cutting the client off mid-stream.

Mail for an app only members may use (journeys) whose authentication DNS left undecided
(``Arrival.retry_later``: a DKIM key or the DMARC record could not be looked up just now) gets
``451 4.7.0`` after the final dot and is not stored: RFC 7489 §7 answers a temporary error with
a temporary failure, and a 250 would leave the gate to refuse the mail unanswered. Service
mailboxes, trusted networks and authenticated submission never get it.

The timeout bounds each wait for the client: from one command to the next, and during DATA
each stretch in which fewer than ``DATA_PROGRESS_BYTES`` arrive. A client trickling a byte a
second is cut off; a big message on a slow but working link is not (at the default 300 s a
client must manage about 220 bytes a second). The timer stops while we store a message
after the final dot: then the client is waiting on us.

Clients are counted by address, IPv6 ones by their /64 (one host usually holds a whole /64);
``trusted_networks`` (a front relay, the operator's own machines) are not limited.

Sessions in all, over the SMTP and submission listeners together, are capped by a
``ConnectionCeiling`` that ``server.py`` sets below the process's open-file limit: every session
holds a descriptor, and a process out of them can no longer accept anything, HTTP included.
Trusted networks count towards it too. Both refusals are RFC 5321 §3.8's: the server, unable
to serve, answers 421 instead of the greeting and closes the connection, reading nothing.

Never a relay: RCPT accepts only mailboxes of our own domain that an app serves, and refuses
with 5.7.1 the syntaxes that name another host inside a local address: source routes (the
final mailbox is what counts, RFC 5321 Appendix C), the %-hack, bang paths and quoted local
parts holding "@". The public port offers no AUTH, so nothing can unlock anything there.

Each stored message gets our ``Received:`` line (RFC 5321 §4.4) prepended; otherwise it is
kept byte for byte. Its form::

    Received: from <helo> ([<ip>])
            by <hostname> (Waypost) with ESMTP[S][A]
            for <rcpt>; <date>

We do no reverse DNS lookup, so TCP-info is the address literal alone, which RFC 5321's
grammar allows (``TCP-info = address-literal / ( Domain FWS address-literal )``); that is
more honest than Postfix's ``unknown``. A HELO name that is not a domain or an address
literal is left out of the header (``from [ip] ([ip])``) so a client cannot write header
syntax into it; the message row keeps the HELO as given. ``for`` appears only with exactly
one recipient, so no recipient learns of another. There is no ``id`` clause: the queue id is
assigned inside ``Inbox.accept``, after the header must already be written.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from waypost import failpoints
from waypost.errors import StorageError
from waypost.ingress.limits import (
    TOO_MANY_CONNECTIONS,
    ConnectionCeiling,
    ConnectionCounter,
    SessionLimits,
    line_too_long,
    too_many_connections,
)
from waypost.ingress.spool import FILE_OVER, InflightBudget, MessageSpool, WireData, read_data
from waypost.ingress.trace import received_header, with_protocol
from waypost.mail.spooled import SpooledMessage
from waypost.mail.verdict import AuthVerdict
from waypost.pipeline.arrival import Arrival, Authenticate, Screen, Sender
from waypost.pipeline.gate import Refusal, Verdict
from waypost.pipeline.inbox import AcceptMail, ReceivedMail, RecordRefusal, RefusedMail

log = logging.getLogger(__name__)

# during DATA, this much received pushes the timeout back by a whole period
DATA_PROGRESS_BYTES = 64 * 1024
# the listen queue, and how many connections asyncio accepts in one go before any of them is
# refused and closed: a flood past the ceiling briefly holds a few such batches of descriptors
# (server.RESERVED_FILES leaves room for them); a queue this long still absorbs bursts
ACCEPT_BACKLOG = 32
# bytes of message data in memory at once over all sessions, unless smtp.inflight_bytes says
DEFAULT_INFLIGHT_BYTES = 64 * 1024 * 1024

RELAY_DENIED = "550 5.7.1 Relaying denied: we accept mail only for our own domain"
# RFC 7489 §7: a temporary error while evaluating DMARC (a DKIM key or DMARC record that DNS did
# not give) should be answered with a temporary failure, so the sending server retries rather
# than Waypost accepting mail it would then refuse unanswered; 4.7.0: a security status (RFC 3463)
DNS_TEMPFAIL = "451 4.7.0 Temporary DNS failure authenticating your domain (DKIM/DMARC), please try again later"
# _receive's answer when the connection closed before the final dot: nobody to answer
_LOST = "connection lost"
# local-part characters that route to another host: %-hack, UUCP bang path, quoted "@"
_ROUTING_CHARACTERS = frozenset("%!@")


def _routes_elsewhere(address: str) -> bool:
    local = address.rpartition("@")[0]
    return any(ch in _ROUTING_CHARACTERS for ch in local)


class IngressHandler:
    """aiosmtpd hooks for the public port (MX): mail for our own domain only, no AUTH."""

    offers_auth = False
    ingress = "smtp"

    def __init__(self, accept: AcceptMail, accepts_recipient: Callable[[str], bool],
                 is_local_domain: Callable[[str], bool], *, limits: SessionLimits | None = None,
                 mail_domain: str | None = None, authenticate: Authenticate | None = None,
                 authserv_id: str | None = None, screen: Screen | None = None,
                 record_refusal: RecordRefusal | None = None, spooling: Spooling | None = None,
                 trusted: Callable[[str | None], bool] | None = None) -> None:
        """``mail_domain``: where RFC 5321's bare ``<Postmaster>`` is delivered (§4.1.1.3).
        ``authenticate``: SPF/DKIM/DMARC for a message (None for trusted networks); its verdict
        is stored with the message and stamped on it as ``Authentication-Results``. ``screen``:
        refuses from the header section what will never be answered; with ``authenticate``'s
        refusals, recorded by ``record_refusal``. ``spooling``: the in-flight budget and spool
        directory, shared by every listener of the process. ``trusted``: whether a peer's mail
        skips ``screen`` and ``authenticate`` (trusted networks: the gate accepts their mail
        without either), decided on the event loop so such mail makes one trip to a thread, to
        be stored, instead of three."""
        self.accept = accept
        self.accepts_recipient = accepts_recipient
        self.is_local_domain = is_local_domain
        self.limits = limits or SessionLimits()
        self.mail_domain = mail_domain
        self.authenticate = authenticate
        self.authserv_id = authserv_id or mail_domain or "localhost"
        self.screen = screen
        self.record_refusal = record_refusal
        self.spooling = spooling or Spooling()
        self.trusted = trusted

    def new_spool(self) -> MessageSpool:
        return MessageSpool(self.spooling.budget, self.limits, self.spooling.directory, self.spooling.file_over)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to the hook once there is one
        if self.offers_auth:
            return responses
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower() == "postmaster" and self.mail_domain:
            address = f"postmaster@{self.mail_domain}"
        if _routes_elsewhere(address) or not self.is_local_domain(address):
            return RELAY_DENIED
        if not self.accepts_recipient(address):
            return "550 5.1.1 No such mailbox here"
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(server, GuardedSMTP) and server.spool is not None
        spool = server.spool
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        refusal = spool.refusal()
        if refusal is not None:
            log.info("refused mail from %s (peer %s): %s", envelope.mail_from, peer, refusal)
            return refusal
        loop = asyncio.get_running_loop()
        screening = None
        checked = self.trusted is None or not self.trusted(peer)
        if self.screen is not None and checked:  # the header alone: the body is not even read for these
            screening = await loop.run_in_executor(None, self.screen, spool.header, peer, tuple(envelope.rcpt_tos))
            if screening.refusal is not None:
                return await self._refuse(screening.refusal, screening.sender, None, spool.size, session, envelope)
        # in memory: the spool's own buffer; on disk: read from the file in pieces, never whole
        raw: bytearray | SpooledMessage = spool.spooled() if spool.on_disk else spool.load()
        arrival = await self._authenticate(raw, peer, session, envelope) if checked else Arrival()
        if arrival.retry_later:  # nothing stored: the sending server keeps the mail and tries again
            log.info("deferred mail from %s (peer %s) to %s: DNS failed temporarily (%s)", envelope.mail_from,
                     peer, ", ".join(envelope.rcpt_tos), arrival.verdict.detail if arrival.verdict else "")
            return DNS_TEMPFAIL
        if arrival.refusal is not None:
            sender = screening.sender if screening is not None else Sender(None, None)
            return await self._refuse(arrival.refusal, sender, arrival.verdict, spool.size, session, envelope)
        trace = received_header(helo=session.host_name, peer_ip=peer, hostname=server.hostname,
                                protocol=with_protocol(session, envelope, server), recipients=envelope.rcpt_tos,
                                when=datetime.now(UTC))
        verdict = arrival.verdict
        if verdict is not None:  # ours on top; one that arrived with the message is never read (RFC 8601 §5)
            trace = f"Authentication-Results: {verdict.to_header(self.authserv_id)}\r\n".encode() + trace
        stored = raw.with_head(trace) if isinstance(raw, SpooledMessage) else spool.prepend(trace)
        mail = ReceivedMail(raw=stored, mail_from=envelope.mail_from, rcpt_tos=tuple(envelope.rcpt_tos),
                            peer_ip=peer, helo=session.host_name, ingress=self.ingress, extra=self.extra(session),
                            auth=verdict)
        return await self._store(mail, session, envelope)

    async def _authenticate(self, raw: bytearray | SpooledMessage, peer: str | None, session: Session,
                            envelope: Envelope) -> Arrival:
        if self.authenticate is None:
            return Arrival()
        # the checks read bytes; the copy of a message in memory (no bigger than the spool's
        # FILE_OVER) lives only while they run; one on disk is read from its file in pieces.
        # DNS look-ups, off the event loop; verify() never raises (a DNS failure is temperror)
        message = bytes(raw) if isinstance(raw, bytearray) else raw
        return await asyncio.get_running_loop().run_in_executor(
            None, self.authenticate, message, peer, session.host_name, envelope.mail_from, tuple(envelope.rcpt_tos))

    async def _refuse(self, verdict: Verdict, sender: Sender, auth: AuthVerdict | None, size: int,
                      session: Session, envelope: Envelope) -> str:
        """Answer 550 5.7.1 for a mail that will never be answered, keeping only its metadata."""
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        reason = f"{verdict.reason}: {verdict.detail} (refused during the SMTP session)"
        log.info("refused mail from %s (peer %s, From %s) to %s: %s", envelope.mail_from, peer,
                 sender.from_address, ", ".join(envelope.rcpt_tos), reason)
        if self.record_refusal is not None:
            refused = RefusedMail(mail_from=envelope.mail_from, rcpt_tos=tuple(envelope.rcpt_tos), size=size,
                                  reason=reason, peer_ip=peer, helo=session.host_name, ingress=self.ingress,
                                  from_address=sender.from_address, message_id=sender.message_id, auth=auth)
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.record_refusal, refused)
            except Exception:  # the refusal stands; only the operator's record of it is missing
                log.exception("could not record the refused mail from %s", envelope.mail_from)
        return refusal_reply(verdict)

    async def _store(self, mail: ReceivedMail, session: Session, envelope: Envelope) -> str:
        try:
            message_id = await asyncio.get_running_loop().run_in_executor(None, self._accept, mail)
        except StorageError as err:
            log.error("temporary failure storing mail from %s: %s", envelope.mail_from, err)
            return "451 4.3.0 Temporary storage failure, please try again later"
        except Exception:
            log.exception("unexpected failure storing mail from %s", envelope.mail_from)
            return "451 4.3.0 Temporary failure, please try again later"
        self.accepted(message_id, session, envelope)
        return f"250 2.0.0 OK: queued as {message_id}"

    def _accept(self, mail: ReceivedMail) -> str:
        message_id = self.accept(mail)
        # committed, not yet answered: a crash here makes the sender retry a mail we hold
        # (pipeline/duplicates.py); in the executor, so a paused point stops only this session
        failpoints.hit("smtp.after_accept")
        return message_id

    def extra(self, session: Session) -> dict[str, str]:
        return {}

    def accepted(self, message_id: str, session: Session, envelope: Envelope) -> None:
        """Called once a message is stored; a place for subclasses to log."""


def refusal_reply(verdict: Verdict) -> str:
    """550 5.7.1 (RFC 3463: delivery not authorized, message refused), with the gate's reason in
    words the sender's user can act on; the detail (addresses, verdicts) stays in our log."""
    why = {
        Refusal.NO_FROM: "the From header must hold exactly one valid address",
        Refusal.NOT_ALLOWLISTED: "the sender in From is not allowed to use this address",
        Refusal.NOT_AUTHENTICATED: "the message is not authenticated for the domain in From (SPF/DKIM/DMARC)",
    }.get(verdict.reason or Refusal.NOT_ALLOWLISTED, "the message was refused by policy")
    return f"550 5.7.1 Message refused: {why}"


@dataclass(frozen=True)
class Spooling:
    """Where message data waits while it arrives, and how much of it may be in memory at once
    (``ingress/spool.py``). One per process: every listener shares the budget."""

    budget: InflightBudget = field(default_factory=lambda: InflightBudget(DEFAULT_INFLIGHT_BYTES))
    directory: Path | None = None  # None: the system's temporary directory
    file_over: int = FILE_OVER  # octets of a message past which it goes to a file whatever the budget


class GuardedSMTP(SMTP):
    """aiosmtpd's protocol with our limits: line length, connections per client, a timeout
    that answers 421, DATA progress, and enhanced codes on aiosmtpd's own limit replies.

    aiosmtpd exposes no hooks for these, so this class overrides a few of its internals
    (``_timeout_cb``, ``_reset_timeout``, ``_call_handler_hook``); the tests pin each
    behaviour, so an aiosmtpd upgrade that moves them fails loudly.
    """

    def __init__(self, handler: IngressHandler, *, connections: ConnectionCounter,
                 ceiling: ConnectionCeiling | None = None, **options: Any) -> None:
        limits = handler.limits
        # both read by SMTP.__init__; instance values, not aiosmtpd's shared class ones.
        # +1: the wire line may carry the transparency dot (RFC 5321 §4.5.2);
        # SessionLimits.content_refusal then checks the exact limit on the data itself
        self.line_length_limit = limits.max_line_length + 1
        self.command_size_limits = defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(handler, timeout=limits.timeout, **options)
        self._connections = connections
        self._ceiling = ceiling
        self._counted: str | None = None
        self._refused = False
        self._in_data = False
        self._data_progress = 0
        self.spool: MessageSpool | None = None  # the message being answered, for the DATA hook
        size = options.get("data_size_limit")
        self._replies = {
            "500 Line too long (see RFC5321 4.5.3.1.6)": line_too_long(limits.max_line_length),
            "552 Error: Too much mail data": f"552 5.3.4 Message too big for system: at most {size} octets",
            "552 Error: message size exceeds fixed maximum message size":
                f"552 5.3.4 Message size exceeds fixed maximum message size of {size} octets",
            "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
        }

    # -- connections -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # called again after STARTTLS with the TLS transport; count only the first time
        if self._original_transport is None and not self._admit(transport):
            return
        super().connection_made(transport)

    def _admit(self, transport: asyncio.BaseTransport) -> bool:
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else ""
        if self._ceiling is not None and not self._ceiling.enter():
            return self._refuse(transport, too_many_connections(self.hostname))
        if not self._connections.enter(ip):
            if self._ceiling is not None:
                self._ceiling.leave()
            log.warning("refused a connection from %s: over %d at once", ip, self._connections.limit)
            return self._refuse(transport, TOO_MANY_CONNECTIONS)
        self._counted = ip
        return True

    def _refuse(self, transport: asyncio.BaseTransport, reply: str) -> bool:
        self._refused = True
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(reply.encode() + b"\r\n")
        transport.close()  # flushes the reply; nothing from the client is read
        return False

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._counted is not None:
            self._connections.leave(self._counted)
            if self._ceiling is not None:
                self._ceiling.leave()
            self._counted = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self._refused else super().eof_received()

    # -- timeout -----------------------------------------------------------------------

    def _timeout_cb(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            log.info("%r timed out", self.session.peer if self.session else None)
            transport.write(f"421 4.4.2 {self.hostname} Timeout exceeded, closing connection\r\n".encode())
        super()._timeout_cb()

    def data_received(self, data: bytes) -> None:
        if self._in_data:
            self._data_progress += len(data)
            if self._data_progress >= DATA_PROGRESS_BYTES:
                self._data_progress = 0
                self._reset_timeout()
        super().data_received(data)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, but the data goes to a ``MessageSpool`` in large pieces as it arrives,
        instead of line by line into a list that holds the whole message (twice, once joined).
        Refusals for the size limit and for a line past the limit wait for the final dot (RFC
        5321 §4.2.5)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        assert isinstance(self.event_handler, IngressHandler)
        spool = self.event_handler.new_spool()
        self._in_data, self._data_progress = True, 0
        try:
            refusal = await self._receive(spool)
            if refusal is _LOST:
                return
            if refusal is not None:
                await self.push(refusal)
                self._set_post_data_state()
                return
            self.spool = spool
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push("250 OK" if status is MISSING else status)
        finally:
            self._in_data = False
            self.spool = None
            spool.close()

    async def _receive(self, spool: MessageSpool) -> str | None:
        """Read message data up to the final dot into ``spool``, in large pieces (``read_data``);
        a refusal, or None."""
        wire = WireData(spool, size_limit=self.data_size_limit, line_limit=self.line_length_limit)
        try:
            await read_data(self._reader, wire.feed)
        except asyncio.IncompleteReadError:  # the client closed the connection before the final dot
            return _LOST
        except asyncio.CancelledError:  # the connection went away during DATA
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        return wire.refusal

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command != "DATA":  # other hooks may wait on the client (AUTH challenges)
            return await super()._call_handler_hook(command, *args)
        # after the final dot the client waits on us: storing is not its idleness
        assert self._timeout_handle is not None
        self._timeout_handle.cancel()
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            if self.transport is not None:
                self._reset_timeout()

    # -- replies -------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            await super().push(self._replies.get(status, status))
        else:
            await super().push(status)

    async def smtp_AUTH(self, arg: str) -> None:
        handler = self.event_handler  # aiosmtpd keeps it untyped; ours are IngressHandlers
        if not (isinstance(handler, IngressHandler) and handler.offers_auth):
            await self.push("502 5.5.1 AUTH is not offered on this port")
            return
        await super().smtp_AUTH(arg)


def server_tls_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context presenting the certificate chain; raises OSError or ssl.SSLError."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


async def listen(factory: Callable[[], SMTP], *, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return await loop.create_server(factory, sock=sock, backlog=ACCEPT_BACKLOG)


async def start_smtp_server(handler: IngressHandler, *, host: str, port: int, hostname: str,
                            max_message_size: int, tls_context: ssl.SSLContext | None = None,
                            ceiling: ConnectionCeiling | None = None) -> asyncio.Server:
    """Listen on host:port (0 picks a free port); the caller reads the bound address from
    ``server.sockets``. With ``tls_context`` STARTTLS is offered, never required: a
    receiving MX must take mail from servers that cannot encrypt. ``ceiling``: sessions in
    all, shared with the other listeners of the process; None: no total limit."""
    connections = ConnectionCounter(handler.limits.max_connections_per_ip, handler.limits.unlimited_networks)

    def factory() -> SMTP:
        return GuardedSMTP(handler, connections=connections, ceiling=ceiling, data_size_limit=max_message_size,
                           hostname=hostname, ident="Waypost ESMTP", decode_data=False, enable_SMTPUTF8=True,
                           tls_context=tls_context, require_starttls=False,
                           auth_exclude_mechanism=["PLAIN", "LOGIN"])

    return await listen(factory, host=host, port=port)
