"""SMTP hardening against real listeners on loopback: every limit with its exact reply,
STARTTLS, the submission port (TLS before AUTH, logins, lockout), slow clients, and the
`waypost submission` commands. Raw sockets where smtplib would tidy up what we send."""

from __future__ import annotations

import base64
import ipaddress
import re
import select
import smtplib
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.integration.test_smtp_ingress import SmtpListener, listeners, small_message, stored
from tests.support.smtp_capture import self_signed_cert
from waypost.cli import cli
from waypost.ingress.smtp import (
    DATA_PROGRESS_BYTES,
    ConnectionCeiling,
    IngressHandler,
    SessionLimits,
    server_tls_context,
)
from waypost.ingress.submission import (
    LoginThrottle,
    SubmissionHandler,
    SubmissionUsers,
    start_submission_server,
)
from waypost.passwords import verify_password
from waypost.pipeline.inbox import ReceivedMail
from waypost.store.models import inbound_messages

PASSWORD = "correct horse battery"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: storage on both databases is covered by test_smtp_ingress; these are
    protocol tests."""
    return f"sqlite:///{tmp_path / 'waypost.sqlite3'}"


@pytest.fixture
def listen(runtime: Any) -> Iterator[Callable[..., SmtpListener]]:
    with listeners(runtime) as start:
        yield start


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return server_tls_context(*certificate)


@pytest.fixture
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


class RawClient:
    """A plain socket speaking SMTP line by line, reading replies against a deadline."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.pending = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """The next complete reply (all lines of a multi-line one); EOFError if the server
        closed first, TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while not (match := re.search(rb"^(\d{3}) ([^\r\n]*)\r\n", self.pending, re.MULTILINE)):
            self._receive(deadline)
        self.pending = self.pending[match.end():]
        return int(match[1]), match[2]

    def command(self, line: str | bytes) -> tuple[int, bytes]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def closed(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the connection (waiting up to the deadline)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._receive(deadline)
        except EOFError:
            return True
        except TimeoutError:
            return False

    def spoke_within(self, seconds: float) -> bool:
        """Whether the server sent anything (or closed) within ``seconds``."""
        return bool(self.pending) or bool(select.select([self.sock], [], [], seconds)[0])

    def _receive(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete reply; have {self.pending[-200:]!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(f"no complete reply; have {self.pending[-200:]!r}") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise EOFError(f"connection closed; unread {self.pending!r}")
        self.pending += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[[SmtpListener], RawClient]]:
    opened: list[RawClient] = []

    def connect(listener: SmtpListener) -> RawClient:
        client = RawClient(listener.port)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


def greeted(client: RawClient) -> RawClient:
    code, _ = client.reply()
    assert code == 220
    assert client.command("EHLO client.example.org")[0] == 250
    return client


def in_transaction(client: RawClient) -> RawClient:
    greeted(client)
    assert client.command("MAIL FROM:<ann@example.org>")[0] == 250
    assert client.command("RCPT TO:<journeys@waypost.test>")[0] == 250
    return client


def message_with(header_lines: list[str], body: bytes = b"hello\r\n") -> bytes:
    return "".join(line + "\r\n" for line in header_lines).encode() + b"\r\n" + body


def send(listener: SmtpListener, data: bytes, recipients: tuple[str, ...] = ("journeys@waypost.test",)
         ) -> tuple[int, bytes]:
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        for recipient in recipients:
            client.rcpt(recipient)
        return client.data(data)


# -- limits ----------------------------------------------------------------------------------

def test_recipients_beyond_the_limit_get_452(runtime: Any, listen: Callable[..., SmtpListener]) -> None:
    listener = listen(runtime.inbox, limits=SessionLimits(max_recipients=3))
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        codes = [client.rcpt(f"journeys+{n}@waypost.test") for n in range(4)]
        assert [code for code, _ in codes] == [250, 250, 250, 452]
        assert codes[-1][1].startswith(b"4.5.3")
        assert client.data(small_message().as_bytes(policy=SMTP))[0] == 250
    with runtime.engine.connect() as conn:
        assert len(conn.execute(sa.select(inbound_messages.c.rcpt_tos)).scalar_one()) == 3


LINE_LIMIT = 2000  # above aiosmtpd's own 1001, so its default cannot pass for ours


@pytest.mark.parametrize("line, accepted", [
    (b"x" * (LINE_LIMIT - 2), True),  # exactly the limit with its CRLF
    (b"." + b"x" * (LINE_LIMIT - 3), True),  # the same, sent with a transparency dot in front
    (b"x" * (LINE_LIMIT - 1), False),  # one octet over
    (b"x" * (LINE_LIMIT * 5), False),  # far over: aiosmtpd's reader refuses it, with our reply
])
def test_data_lines_over_the_limit_get_500_5_5_2(runtime: Any, listen: Callable[..., SmtpListener],
                                               line: bytes, accepted: bool) -> None:
    listener = listen(runtime.inbox, limits=SessionLimits(max_line_length=LINE_LIMIT))
    code, text = send(listener, message_with(["Subject: long"], b"before\r\n" + line + b"\r\nafter\r\n"))
    if accepted:
        assert code == 250, text
        assert stored(runtime)[:2] == (1, 1)
    else:
        assert (code, text[:5]) == (500, b"5.5.2"), text
        assert b"Line too long: at most 2000 octets" in text
        assert stored(runtime)[:2] == (0, 0)


def test_session_goes_on_after_a_refused_long_line(runtime: Any, listen: Callable[..., SmtpListener]) -> None:
    listener = listen(runtime.inbox, limits=SessionLimits(max_line_length=LINE_LIMIT))
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        client.rcpt("journeys@waypost.test")
        assert client.data(message_with(["Subject: x"], b"y" * 5000 + b"\r\n"))[0] == 500
        client.mail("ann@example.org")
        client.rcpt("journeys@waypost.test")
        assert client.data(small_message().as_bytes(policy=SMTP))[0] == 250


HEADER_LIMIT = 1024


def headers_of_size(total: int) -> list[str]:
    """A header section of exactly ``total`` octets, line ends included."""
    first = "Subject: sized"
    filler = total - len(first) - 2 - len("X-Filler: ") - 2
    return [first, "X-Filler: " + "f" * filler]


@pytest.mark.parametrize("size, accepted", [(HEADER_LIMIT, True), (HEADER_LIMIT + 1, False)])
def test_header_section_over_the_limit_gets_552(runtime: Any, listen: Callable[..., SmtpListener],
                                               size: int, accepted: bool) -> None:
    listener = listen(runtime.inbox, limits=SessionLimits(max_header_bytes=HEADER_LIMIT))
    lines = headers_of_size(size)
    assert sum(len(line) + 2 for line in lines) == size
    code, text = send(listener, message_with(lines))
    if accepted:
        assert code == 250, text
    else:
        assert (code, text) == (552, b"5.3.4 Header section too large: at most 1024 octets")
        assert stored(runtime)[:2] == (0, 0)


def test_a_message_without_body_is_all_header(runtime: Any, listen: Callable[..., SmtpListener]) -> None:
    listener = listen(runtime.inbox, limits=SessionLimits(max_header_bytes=HEADER_LIMIT))
    lines = [f"X-Line-{n}: {'v' * 40}" for n in range(40)]  # 40 × 53 octets, no empty line, no body
    code, text = send(listener, "".join(line + "\r\n" for line in lines).encode())
    assert (code, text[:5]) == (552, b"5.3.4")


@pytest.mark.parametrize("fields, accepted", [(10, True), (11, False)])
def test_header_fields_over_the_limit_get_552(runtime: Any, listen: Callable[..., SmtpListener],
                                             fields: int, accepted: bool) -> None:
    listener = listen(runtime.inbox, limits=SessionLimits(max_header_count=10))
    # one field folded over three lines: it counts once
    lines = ["Subject: folded", "\tacross", " lines"] + [f"X-Field-{n}: v" for n in range(fields - 1)]
    code, text = send(listener, message_with(lines))
    if accepted:
        assert code == 250, text
    else:
        assert (code, text) == (552, b"5.3.4 Too many header fields: at most 10")


@pytest.mark.parametrize("length", [600, 10_000, 30_000])
def test_overlong_command_lines_get_500_and_the_session_goes_on(listen: Callable[..., SmtpListener],
                                                               runtime: Any, raw: Any, length: int) -> None:
    listener = listen(runtime.inbox)
    client = greeted(raw(listener))
    code, text = client.command("NOOP " + "x" * length)
    assert (code, text) == (500, b"Command line too long")
    assert client.command(b"MAIL FROM:<" + b"a" * length + b"@example.org>")[0] == 500
    assert client.command("NOOP")[0] == 250


def test_connections_per_client_are_limited(runtime: Any, listen: Callable[..., SmtpListener], raw: Any) -> None:
    listener = listen(runtime.inbox, limits=SessionLimits(max_connections_per_ip=3))
    clients = [raw(listener) for _ in range(3)]
    assert [client.reply()[0] for client in clients] == [220, 220, 220]
    extra = raw(listener)
    assert extra.reply() == (421, b"4.7.0 Too many connections from your address")
    assert extra.closed(), "refused, then closed"
    assert clients[0].command("QUIT")[0] == 221
    clients[0].close()
    deadline = time.monotonic() + 10
    while (code := raw(listener).reply()[0]) != 220 and time.monotonic() < deadline:
        pass  # the server counts the closed one down as it notices; try again
    assert code == 220, "a place freed by a closed connection is given to the next"


def test_the_ceiling_counts_sessions_on_every_listener_sharing_it(runtime: Any, listen: Callable[..., SmtpListener],
                                                                 raw: Any) -> None:
    ceiling = ConnectionCeiling(2)
    limits = SessionLimits(max_connections_per_ip=1)
    public, submission, third = (listen(runtime.inbox, limits=limits, ceiling=ceiling) for _ in range(3))
    assert raw(public).reply()[0] == 220
    assert raw(public).reply() == (421, b"4.7.0 Too many connections from your address")
    assert raw(submission).reply()[0] == 220, "a client refused by its own limit holds no place in the total"
    over = raw(third)
    assert over.reply() == (421, b"4.7.0 waypost.test Too many connections, try again later")
    assert over.closed(), "refused before reading anything, then closed"
    assert ceiling.open == 2


def test_trusted_networks_are_not_limited(runtime: Any, listen: Callable[..., SmtpListener], raw: Any) -> None:
    limits = SessionLimits(max_connections_per_ip=1, unlimited_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    listener = listen(runtime.inbox, limits=limits)
    assert [raw(listener).reply()[0] for _ in range(3)] == [220, 220, 220]


# -- slow clients ----------------------------------------------------------------------------

def test_a_client_trickling_a_byte_at_a_time_is_cut_off_with_421(runtime: Any, listen: Callable[..., SmtpListener],
                                                                 raw: Any) -> None:
    listener = listen(runtime.inbox, limits=SessionLimits(timeout=1.0))
    client = raw(listener)
    assert client.reply()[0] == 220
    command = b"EHLO a-rather-long-name.client.example.org\r\n"
    sent = 0
    for byte in command:  # four bytes a second: the command would take 11 s
        client.send(bytes([byte]))
        sent += 1
        if client.spoke_within(0.25):
            break
    code, text = client.reply()
    assert (code, text) == (421, b"4.4.2 waypost.test Timeout exceeded, closing connection")
    assert client.closed()
    assert sent < len(command), "cut off after about the timeout, not after the whole command"


def test_a_client_stalling_in_data_is_cut_off_while_others_are_served(
        runtime: Any, listen: Callable[..., SmtpListener], raw: Any) -> None:
    timeout = 3.0
    listener = listen(runtime.inbox, limits=SessionLimits(timeout=timeout))
    slow = in_transaction(raw(listener))
    assert slow.command("DATA")[0] == 354
    slow.send(b"Subject: half a message\r\n\r\nand then noth")
    stalled = time.monotonic()
    assert send(listener, small_message().as_bytes(policy=SMTP))[0] == 250
    assert not slow.spoke_within(0), "the other client was served while this one stalled"
    assert slow.reply(timeout=timeout + 10) == (421, b"4.4.2 waypost.test Timeout exceeded, closing connection")
    assert slow.closed()
    assert time.monotonic() - stalled >= timeout * 0.9
    assert stored(runtime)[:2] == (1, 1), "only the complete message was stored"


def test_a_slow_but_steady_data_transfer_outlives_the_timeout(runtime: Any, listen: Callable[..., SmtpListener],
                                                              raw: Any) -> None:
    timeout = 1.0
    listener = listen(runtime.inbox, limits=SessionLimits(timeout=timeout), max_message_size=4 * 1024 * 1024)
    client = in_transaction(raw(listener))
    assert client.command("DATA")[0] == 354
    client.send(b"Subject: steady\r\n\r\n")
    chunk = (b"z" * 998 + b"\r\n") * (DATA_PROGRESS_BYTES // 1000 + 1)
    started = time.monotonic()
    while time.monotonic() - started < 3 * timeout:
        client.send(chunk)
        assert not client.spoke_within(0.4 * timeout), "the server gave up on a client that keeps sending"
    assert client.command(".")[0] == 250


def test_storing_does_not_count_against_the_client(runtime: Any, raw: Any) -> None:
    """The timer stops after the final dot: slow storage must not earn the client a 421."""
    timeout = 1.0
    release = threading.Event()

    def slow_accept(mail: ReceivedMail) -> str:
        assert release.wait(30), "the test never released storage"
        return runtime.inbox.accept(mail)

    handler = IngressHandler(slow_accept, runtime.router.accepts, runtime.router.is_local_domain,
                             limits=SessionLimits(timeout=timeout))
    with listeners(runtime) as start:
        client = in_transaction(raw(start(handler=handler)))
        assert client.command("DATA")[0] == 354
        client.send(small_message().as_bytes(policy=SMTP) + b".\r\n")
        assert not client.spoke_within(3 * timeout), "cut off while we were storing"
        release.set()
        assert client.reply()[0] == 250
        assert client.command("QUIT")[0] == 221


# -- STARTTLS on the public port ---------------------------------------------------------------

def test_starttls_is_offered_but_not_required_on_the_public_port(
        runtime: Any, listen: Callable[..., SmtpListener], server_tls: ssl.SSLContext,
        client_tls: ssl.SSLContext) -> None:
    listener = listen(runtime.inbox, tls_context=server_tls)
    assert send(listener, small_message().as_bytes(policy=SMTP))[0] == 250, "plain text still accepted"
    with listener.client() as client:
        client.ehlo("client.example.org")
        assert client.has_extn("starttls") and not client.has_extn("auth")
        assert client.starttls(context=client_tls)[0] == 220
        client.ehlo("client.example.org")
        assert not client.has_extn("starttls") and not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0journeys\0x").decode())[0] == 502
        client.mail("ann@example.org")
        assert client.rcpt("victim@elsewhere.example")[0] == 550
        client.rcpt("journeys@waypost.test")
        assert client.data(small_message().as_bytes(policy=SMTP))[0] == 250
    with runtime.engine.connect() as conn:
        keys = conn.execute(sa.select(inbound_messages.c.blob_key).order_by(inbound_messages.c.received_at)).scalars()
        protocols = [re.search(rb" with (\w+)", runtime.blobs.get(key))[1] for key in keys]  # type: ignore[index]
    assert sorted(protocols) == [b"ESMTP", b"ESMTPS"]


def test_starttls_is_not_offered_without_a_certificate(runtime: Any, listen: Callable[..., SmtpListener]) -> None:
    with listen(runtime.inbox).client() as client:
        client.ehlo("client.example.org")
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 454


# -- the submission port -----------------------------------------------------------------------

class Submission:
    def __init__(self, listener: SmtpListener, handler: SubmissionHandler, accepted: list[ReceivedMail],
                 client_tls: ssl.SSLContext) -> None:
        self.listener, self.handler, self.accepted, self.client_tls = listener, handler, accepted, client_tls

    def client(self, tls: bool = True) -> smtplib.SMTP:
        client = self.listener.client()
        client.ehlo("device.example.org")
        if tls:
            client.starttls(context=self.client_tls)
            client.ehlo("device.example.org")
        return client


@pytest.fixture
def submission(runtime: Any, listen: Callable[..., SmtpListener], server_tls: ssl.SSLContext,
               client_tls: ssl.SSLContext, tmp_path: Path) -> Callable[..., Submission]:
    def start(*, throttle: LoginThrottle | None = None, failure_delay: float = 0.0,
              users_file: Path | None = None) -> Submission:
        users = SubmissionUsers(users_file or tmp_path / "users")
        if users_file is None:
            users.set_password("scanner", PASSWORD)
        accepted: list[ReceivedMail] = []

        def accept(mail: ReceivedMail) -> str:
            accepted.append(mail)
            return runtime.inbox.accept(mail)

        handler = SubmissionHandler(accept, runtime.router.accepts, runtime.router.is_local_domain, users=users,
                                    throttle=throttle, failure_delay=failure_delay)
        listener = listen(handler=handler, start=start_submission_server, tls_context=server_tls)
        return Submission(listener, handler, accepted, client_tls)

    return start


def plain(user: str, password: str, authzid: str = "") -> str:
    return "PLAIN " + base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def test_submission_requires_tls_before_auth_and_mail(submission: Callable[..., Submission]) -> None:
    port = submission()
    with port.client(tls=False) as client:
        assert client.has_extn("starttls") and not client.has_extn("auth")
        for verb, argument in (("AUTH", plain("scanner", PASSWORD)), ("MAIL", "FROM:<ann@example.org>")):
            code, text = client.docmd(verb, argument)
            assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
    assert port.handler.throttle.failures == 0


def test_submission_requires_auth_before_mail(submission: Callable[..., Submission]) -> None:
    with submission().client() as client:
        assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        assert client.docmd("MAIL", "FROM:<ann@example.org>") == (530, b"5.7.0 Authentication required")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_login_then_mail_for_our_domain_only(runtime: Any, submission: Callable[..., Submission],
                                                       mechanism: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="waypost.ingress.submission")
    port = submission()
    with port.client() as client:
        client.user, client.password = "scanner", PASSWORD
        authobject = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        assert client.auth(mechanism, authobject, initial_response_ok=mechanism == "PLAIN")[0] == 235
        client.mail("scanner@example.org")
        assert client.rcpt("victim@elsewhere.example") == (
            550, b"5.7.1 Relaying denied: we accept mail only for our own domain"), "logging in unlocks no relay"
        assert client.rcpt("journeys@waypost.test")[0] == 250
        code, reply = client.data(small_message().as_bytes(policy=SMTP))
    assert code == 250
    [mail] = port.accepted
    assert (mail.ingress, mail.extra, mail.rcpt_tos) == ("submission", {"auth_user": "scanner"},
                                                         ("journeys@waypost.test",))
    assert re.match(rb"Received: from device\.example\.org \(\[127\.0\.0\.1\]\)\r\n\tby waypost\.test \(Waypost\) "
                    rb"with ESMTPSA\r\n", mail.raw)
    message_id = reply.split()[-1].decode()
    assert any(message_id in line and "'scanner'" in line for line in caplog.messages)
    assert stored(runtime)[:2] == (1, 1)


@pytest.mark.parametrize("argument", [
    plain("scanner", "wrong password"),
    plain("nobody", PASSWORD),
    plain("scanner", PASSWORD, authzid="someone-else"),  # acting as another user is not offered
    "PLAIN " + base64.b64encode(b"\0scanner\0\xff\xfe").decode(),  # not UTF-8
])
def test_submission_refuses_bad_credentials_slowly_and_counts_them(
        submission: Callable[..., Submission], argument: str, caplog: pytest.LogCaptureFixture) -> None:
    port = submission(failure_delay=0.3)
    with port.client() as client:
        started = time.monotonic()
        assert client.docmd("AUTH", argument) == (535, b"5.7.8 Authentication credentials invalid")
        assert time.monotonic() - started >= 0.3, "a failure is answered only after the delay"
        assert client.docmd("MAIL", "FROM:<ann@example.org>")[0] == 530
    assert port.handler.throttle.failures == 1
    assert any("login failed" in message for message in caplog.messages)


def test_submission_auth_exchange_errors(submission: Callable[..., Submission]) -> None:
    port = submission()
    with port.client() as client:
        assert client.docmd("AUTH", "PLAIN")[0] == 334
        assert client.docmd("*")[0] == 501, "the client may abort (RFC 4954)"
        assert client.docmd("AUTH", "PLAIN not-base64!")[0] == 501
        assert client.docmd("AUTH", "PLAIN " + base64.b64encode(b"no separators").decode())[0] == 501
        assert client.docmd("AUTH", "CRAM-MD5")[0] == 504
    assert port.handler.throttle.failures == 0, "malformed exchanges are not password guesses"


def test_repeated_failures_lock_the_client_out(submission: Callable[..., Submission], raw: Any) -> None:
    now = [1000.0]
    port = submission(throttle=LoginThrottle(max_failures=3, window=600, clock=lambda: now[0]))
    with port.client() as client:
        for _ in range(2):
            assert client.docmd("AUTH", plain("scanner", "guess"))[0] == 535
        assert client.docmd("AUTH", plain("scanner", "guess")) == (
            421, b"4.7.0 Too many failed logins from your address, try again later")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    with port.client() as client:  # a new connection from the same address, the right password
        assert client.docmd("AUTH", plain("scanner", PASSWORD))[0] == 421, "locked: not even checked"
    assert port.handler.throttle.failures == 3
    now[0] += 601  # the failures leave the window
    with port.client() as client:
        assert client.docmd("AUTH", plain("scanner", PASSWORD))[0] == 235


# -- `waypost submission` ----------------------------------------------------------------------

def run_cli(data_dir: Path, *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, ["submission", *args, "--data-dir", str(data_dir)], input=input,
                              env={"WAYPOST_DATA_DIR": None})


def test_submission_cli_manages_the_users_file(tmp_path: Path, submission: Callable[..., Submission]) -> None:
    data_dir = tmp_path / "cli-data"
    users_file = data_dir / "submission-users"
    assert "no submission users" in run_cli(data_dir, "list").output

    result = run_cli(data_dir, "passwd", "scanner", "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0 and "added: scanner" in result.output, result.output
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    [line] = users_file.read_text().splitlines()
    user, stored_hash = line.split(":", 1)
    assert user == "scanner" and re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}",
                                              stored_hash)
    assert verify_password(PASSWORD, stored_hash) and not verify_password(PASSWORD + "x", stored_hash)

    # prompted: the two entries must match; the first pair does not, so it asks again
    result = run_cli(data_dir, "passwd", "printer", input=f"{PASSWORD}\nsomething else!\n{PASSWORD}2\n{PASSWORD}2\n")
    assert result.exit_code == 0 and "added: printer" in result.output, result.output
    assert run_cli(data_dir, "list").output.split() == ["printer", "scanner"]

    port = submission(users_file=users_file)  # the listener reads the file the CLI wrote
    with port.client() as client:
        assert client.docmd("AUTH", plain("printer", PASSWORD + "2"))[0] == 235
    assert run_cli(data_dir, "remove", "printer").output.strip() == "removed: printer"
    with port.client() as client:  # no restart needed
        assert client.docmd("AUTH", plain("printer", PASSWORD + "2"))[0] == 535
        assert client.docmd("AUTH", plain("scanner", PASSWORD))[0] == 235

    result = run_cli(data_dir, "passwd", "scanner", "--password-stdin", input="newpassword-123\n")
    assert "password changed: scanner" in result.output
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600, "still 0600 after a rewrite"
    assert run_cli(data_dir, "remove", "nobody").exit_code == 1


@pytest.mark.parametrize("user, password, complaint", [
    ("has:colon", PASSWORD, "user name"),
    ("has space", PASSWORD, "user name"),
    ("scanner", "short", "at least 12"),
])
def test_submission_cli_refuses_unusable_names_and_passwords(tmp_path: Path, user: str, password: str,
                                                             complaint: str) -> None:
    result = run_cli(tmp_path, "passwd", user, "--password-stdin", input=password + "\n")
    assert result.exit_code == 1 and complaint in result.output, result.output
    assert not (tmp_path / "submission-users").exists()


# -- `waypost serve` wiring ----------------------------------------------------------------------

def test_serve_starts_the_submission_listener_with_the_settings(live_server: Any, tmp_path: Path,
                                                               certificate: tuple[Path, Path],
                                                               client_tls: ssl.SSLContext) -> None:
    data_dir = tmp_path / "serve-data"
    assert run_cli(data_dir, "passwd", "scanner", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    cert, key = certificate
    server = live_server(data_dir=data_dir, WAYPOST_SMTP__SUBMISSION_PORT="0", WAYPOST_SMTP__TLS_CERT_PATH=str(cert),
                         WAYPOST_SMTP__TLS_KEY_PATH=str(key), WAYPOST_SMTP__MAX_RECIPIENTS="2")
    [port] = [int(line.rsplit(":", 1)[1]) for line in server.lines if line.startswith("submission: ")]
    with smtplib.SMTP(server.smtp_host, server.smtp_port, timeout=10) as client:
        client.ehlo("client.example.org")
        assert client.has_extn("starttls") and not client.has_extn("auth")
        client.mail("ann@example.org")
        assert [client.rcpt(f"journeys+{n}@waypost.test")[0] for n in range(3)] == [250, 250, 452]
    with smtplib.SMTP(server.smtp_host, port, timeout=10) as client:
        client.starttls(context=client_tls)
        client.ehlo("device.example.org")
        assert client.docmd("AUTH", plain("scanner", PASSWORD))[0] == 235


def test_serve_refuses_a_submission_port_without_tls(tmp_path: Path) -> None:
    from tests.conftest import server_env, waypost_command

    result = subprocess.run(waypost_command("serve", "--smtp-port", "0", "--http-port", "0"), capture_output=True,
                            text=True, timeout=60,
                            env=server_env(tmp_path / "data", WAYPOST_SMTP__SUBMISSION_PORT="0"))
    assert result.returncode == 1
    assert "smtp.submission_port needs smtp.tls_cert_path and smtp.tls_key_path" in result.stderr
