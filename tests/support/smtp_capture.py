"""A capturing SMTP server on loopback (aiosmtpd), for tests of code that sends mail.

It binds 127.0.0.1 on a port the kernel picks and keeps every accepted message with its
envelope. Its behaviour is scripted per test: STARTTLS or implicit TLS with a given context,
AUTH for one user, and queued replies for RCPT and for the end of DATA, including
``DROP_CONNECTION`` (take the data, then close without answering). A shared event log
records the transaction steps in order; tests may add their own entries with ``note`` to
check the order of client-side actions against the server's.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DROP_CONNECTION = "<drop the connection without answering>"
TlsMode = Literal["starttls", "implicit"]


@dataclass(frozen=True)
class CapturedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes  # as received: dot-stuffing undone, CRLF line ends, nothing added
    mail_options: tuple[str, ...]
    login: str | None  # the AUTH user, None without AUTH
    tls: bool  # the transaction ran over TLS (STARTTLS or implicit)
    received_at: float  # time.time()


class SmtpCapture:
    """Runs for the life of a ``with`` block; thread-safe accessors for what it saw."""

    def __init__(self, *, tls_context: ssl.SSLContext | None = None, tls: TlsMode = "starttls",
                 auth: tuple[str, str] | None = None, auth_require_tls: bool = True,
                 rcpt_replies: Iterable[str] = (), data_replies: Iterable[str] = (),
                 hostname: str = "localhost", start_timeout: float = 10.0) -> None:
        self._changed = threading.Condition()
        self._messages: list[CapturedMessage] = []
        self._events: list[tuple[str, str]] = []
        self._connections = 0
        self._rcpt_replies = deque(rcpt_replies)
        self._data_replies = deque(data_replies)
        self._auth = auth
        smtp_options: dict[str, Any] = {"server_hostname": hostname, "auth_require_tls": auth_require_tls}
        if tls_context is not None and tls == "starttls":
            smtp_options.update(tls_context=tls_context, require_starttls=True)
        if auth is not None:
            smtp_options["authenticator"] = self._authenticate
            # aiosmtpd warns when AUTH is required without TLS; a plain-text test server
            # then accepts unauthenticated mail too, and tests check ``login`` instead
            smtp_options["auth_required"] = auth_require_tls
        implicit = tls_context if tls == "implicit" else None
        self._controller = _PortZeroController(self, hostname="127.0.0.1", port=0, ssl_context=implicit,
                                               ready_timeout=start_timeout, **smtp_options)
        self.host = "127.0.0.1"
        self.port = 0

    def __enter__(self) -> SmtpCapture:
        self._controller.start()
        self.port = self._controller.port
        # start() ends only after its readiness probe reached our factory; that probe is
        # not a client of the test, so the count starts here
        with self._changed:
            self._connections = 0
            self._events.clear()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[CapturedMessage]:
        with self._changed:
            return list(self._messages)

    @property
    def events(self) -> list[tuple[str, str]]:
        """(step, detail) in the order they happened: CONNECT, AUTH, MAIL, RCPT, DATA, QUIT,
        plus whatever tests added with ``note``."""
        with self._changed:
            return list(self._events)

    @property
    def connections(self) -> int:
        with self._changed:
            return self._connections

    def note(self, step: str, detail: str = "") -> None:
        self._record(step, detail)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[CapturedMessage]:
        """The captured messages once there are at least ``count``; TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._messages)} of {count} messages arrived within {timeout}s")
                self._changed.wait(remaining)
            return list(self._messages)

    def wait_for_event(self, step: str, timeout: float = 10.0) -> tuple[str, str]:
        """The first event named ``step``, waiting for it up to the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (found := [event for event in self._events if event[0] == step]):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {step} event within {timeout}s; saw {self._events}")
                self._changed.wait(remaining)
            return found[0]

    # -- called on the server's event loop thread --------------------------------------

    def _record(self, step: str, detail: str = "", message: CapturedMessage | None = None) -> None:
        with self._changed:
            self._events.append((step, detail))
            if message is not None:
                self._messages.append(message)
            self._changed.notify_all()

    def _connected(self) -> None:
        with self._changed:
            self._connections += 1
        self._record("CONNECT")

    def _next_reply(self, script: deque[str], default: str) -> str:
        with self._changed:
            return script.popleft() if script else default

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        assert self._auth is not None
        user, password = self._auth
        ok = isinstance(auth_data, LoginPassword) and auth_data == (user.encode(), password.encode())
        self._record("AUTH", f"{mechanism} {'ok' if ok else 'refused'}")
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self._record("MAIL", address)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self._next_reply(self._rcpt_replies, "250 OK")
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        self._record("RCPT", f"{address} {reply}")
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self._next_reply(self._data_replies, f"250 2.0.0 Ok: queued as C{len(self.messages) + 1:04X}")
        if reply == DROP_CONNECTION:
            self._record("DATA", "dropped")
            assert server.transport is not None
            server.transport.abort()
            await asyncio.Event().wait()  # connection_lost cancels this; no reply is ever sent
        captured = None
        if reply.startswith("2"):
            raw = envelope.original_content or b""
            captured = CapturedMessage(
                mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos), raw=raw,
                mail_options=tuple(envelope.mail_options), login=session.auth_data,
                tls=_over_tls(server), received_at=time.time())
        self._record("DATA", reply, captured)
        return reply

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._record("QUIT")
        return "221 Bye"


def _over_tls(server: SMTP) -> bool:
    return server.transport is not None and server.transport.get_extra_info("sslcontext") is not None


class _PortZeroController(Controller):
    """aiosmtpd's threaded controller, bound to port 0 and counting connections."""

    def __init__(self, capture: SmtpCapture, **kwargs: Any) -> None:
        super().__init__(capture, **kwargs)
        self._capture = capture

    def factory(self) -> SMTP:
        # asyncio calls the protocol factory once per accepted connection (STARTTLS keeps it)
        self._capture._connected()
        return super().factory()

    def _trigger_server(self) -> None:
        # aiosmtpd's readiness probe connects to self.port; learn the bound one first
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def self_signed_cert(directory: Path, *, name: str = "localhost", ip: str | None = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and ``ip`` (None: no address), and its key,
    written as PEM.

    The certificate is its own CA, so a client trusts exactly it by passing the
    certificate file as its CA file; hostname checks still apply.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    addresses = [x509.IPAddress(ipaddress.ip_address(ip))] if ip else []
    san = x509.SubjectAlternativeName([x509.DNSName(name), *addresses])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_tls_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server-side context presenting ``cert_path``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context
