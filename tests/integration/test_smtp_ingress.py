"""SMTP ingress against a real listener on loopback: what is refused at RCPT, SIZE, and the
durable-accept rule (250 only after storage; 451 and nothing stored on a storage error)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import re
import smtplib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from waypost.errors import StorageError
from waypost.ingress.smtp import IngressHandler, SessionLimits, start_smtp_server
from waypost.pipeline.inbox import Inbox
from waypost.store.models import inbound_messages, jobs

MAX_SIZE = 64 * 1024


class SmtpListener:
    """Runs a listener on its own event loop thread, bound to port 0. ``start`` is
    ``start_smtp_server`` or ``start_submission_server``; ``options`` go to it."""

    def __init__(self, handler: IngressHandler, start: Callable[..., Any] = start_smtp_server,
                 **options: Any) -> None:
        options.setdefault("max_message_size", MAX_SIZE)
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            start(handler, host="127.0.0.1", port=0, hostname="waypost.test", **options), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    def client(self, timeout: float = 10) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=timeout)

    def close(self) -> None:
        async def shutdown() -> None:  # asyncio.Server is not thread-safe: close it on its loop
            self.server.close()
            await self.server.wait_closed()
            # sessions still open end as if their clients had gone, closing their transports
            sessions = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in sessions:
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)
            await asyncio.sleep(0)  # one turn of the loop for the transports' close callbacks

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def listeners(runtime: Any) -> Iterator[Callable[..., SmtpListener]]:
    """``start(inbox, limits=..., tls_context=...)``: the public listener with a handler
    wired to the runtime's router; ``start(handler=h, start=...)`` for any other. All are
    closed at the end."""
    started: list[SmtpListener] = []

    def start(inbox: Inbox | None = None, *, handler: IngressHandler | None = None, limits: SessionLimits | None = None,
              **options: Any) -> SmtpListener:
        if handler is None:
            assert inbox is not None
            handler = IngressHandler(inbox.accept, runtime.router.accepts, runtime.router.is_local_domain,
                                     limits=limits, mail_domain="waypost.test")
        listener = SmtpListener(handler, **options)
        started.append(listener)
        return listener

    try:
        yield start
    finally:
        for listener in started:
            listener.close()


@pytest.fixture
def listen(runtime: Any) -> Iterator[Callable[..., SmtpListener]]:
    with listeners(runtime) as start:
        yield start


def small_message(to: str = "journeys@waypost.test", body: str = "hello") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "ann@example.org"
    message["To"] = to
    message["Subject"] = "test"
    message.set_content(body)
    return message


def stored(runtime: Any) -> tuple[int, int, list[Path]]:
    with runtime.engine.connect() as conn:
        messages = conn.execute(sa.select(sa.func.count()).select_from(inbound_messages)).scalar()
        queued = conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar()
    blobs = [p for p in runtime.blobs.root.rglob("*") if p.is_file()] if runtime.blobs.root.exists() else []
    return messages, queued, blobs


def test_accepted_message_is_stored_before_250(runtime: Any, listen: Callable[..., SmtpListener]) -> None:
    listener = listen(runtime.inbox)
    with listener.client() as client:
        client.ehlo("client.example.org")
        code, reply = client.docmd("MAIL FROM:<ann@example.org>")
        client.rcpt("journeys@waypost.test")
        code, reply = client.data(small_message().as_bytes(policy=SMTP))
    assert code == 250 and b"queued as" in reply
    message_id = reply.split()[-1].decode()
    with runtime.engine.connect() as conn:
        row = conn.execute(sa.select(inbound_messages).where(inbound_messages.c.id == message_id)).one()
    assert row.status == "queued" and row.peer_ip == "127.0.0.1" and row.helo == "client.example.org"
    assert row.rcpt_tos == ["journeys@waypost.test"]
    assert b"Subject: test" in runtime.blobs.get(row.blob_key)
    assert stored(runtime)[:2] == (1, 1)


@pytest.mark.parametrize("recipient, expected_code, expected_text", [
    ("someone@elsewhere.example", 550, b"Relaying denied"),
    ("journeys@waypost.test.evil.example", 550, b"Relaying denied"),
    ("nobody@waypost.test", 550, b"No such mailbox"),
])
def test_recipients_we_do_not_serve_are_refused(runtime: Any, listen: Callable[..., SmtpListener],
                                                recipient: str, expected_code: int, expected_text: bytes) -> None:
    listener = listen(runtime.inbox)
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        code, reply = client.rcpt(recipient)
    assert code == expected_code and expected_text in reply
    assert stored(runtime)[:2] == (0, 0)


def test_postmaster_is_accepted(runtime: Any, listen: Callable[..., SmtpListener]) -> None:
    listener = listen(runtime.inbox)
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        assert client.rcpt("postmaster@waypost.test")[0] == 250


def test_size_is_advertised_and_enforced(runtime: Any, listen: Callable[..., SmtpListener]) -> None:
    listener = listen(runtime.inbox)
    with listener.client() as client:
        client.ehlo("client.example.org")
        assert client.has_extn("size") and int(client.esmtp_features["size"]) == MAX_SIZE
        code, text = client.mail("ann@example.org", [f"SIZE={MAX_SIZE + 1}"])
        assert (code, text[:5]) == (552, b"5.3.4"), "a declared size over the limit is refused at MAIL FROM"
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        client.rcpt("journeys@waypost.test")
        code, text = client.data(small_message(body=("x" * 70 + "\n") * (MAX_SIZE // 70 + 10)).as_bytes(policy=SMTP))
    assert (code, text[:5]) == (552, b"5.3.4"), f"an undeclared oversize message is refused after DATA: {text!r}"
    assert stored(runtime)[:2] == (0, 0)


class FailingBlobs:
    def __init__(self, real: Any) -> None:
        self.real = real

    def put(self, key: str, data: bytes) -> None:
        raise StorageError("disk full (injected)")

    def put_stream(self, key: str, stream: Any) -> int:
        raise StorageError("disk full (injected)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FailingCommitEngine:
    """An engine whose transactions fail at commit, like a full disk or a lost database."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def begin(self) -> Any:
        real = self.real

        class Failing:
            def __enter__(self) -> Any:
                self.conn = real.connect()
                self.tx = self.conn.begin()
                return self.conn

            def __exit__(self, *exc: Any) -> None:
                self.tx.rollback()
                self.conn.close()
                raise OperationalError("COMMIT", {}, Exception("database is locked (injected)"))

        return Failing()


@pytest.mark.parametrize("where", ["blob", "database"])
def test_storage_failure_answers_451_and_stores_nothing(runtime: Any, listen: Callable[..., SmtpListener],
                                                       where: str) -> None:
    blobs = FailingBlobs(runtime.blobs) if where == "blob" else runtime.blobs
    engine = FailingCommitEngine(runtime.engine) if where == "database" else runtime.engine
    listener = listen(Inbox(engine, blobs, max_attempts=3))  # type: ignore[arg-type]
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        client.rcpt("journeys@waypost.test")
        code, reply = client.data(small_message().as_bytes(policy=SMTP))
    assert code == 451 and reply.startswith(b"4.3.0")
    messages, queued, blob_files = stored(runtime)
    assert (messages, queued) == (0, 0)
    assert blob_files == [], "a blob written before the failed commit must be removed"


# -- never a relay ---------------------------------------------------------------------------

@pytest.mark.parametrize("probe, expected_code, expected_text", [
    ("<victim@elsewhere.example>", 550, b"5.7.1 Relaying denied"),
    ("<user%elsewhere.example@waypost.test>", 550, b"5.7.1 Relaying denied"),  # the %-hack
    ("<journeys%elsewhere.example@waypost.test>", 550, b"5.7.1 Relaying denied"),  # ... via a real mailbox
    ("<elsewhere.example!victim@waypost.test>", 550, b"5.7.1 Relaying denied"),  # a UUCP bang path
    ("<@waypost.test:victim@elsewhere.example>", 550, b"5.7.1 Relaying denied"),  # a source route
    ("<@waypost.test,@relay.example:victim@elsewhere.example>", 550, b"5.7.1 Relaying denied"),
    ('<"victim@elsewhere.example"@waypost.test>', 550, b"5.7.1 Relaying denied"),  # a quoted "@"
    ("victim@elsewhere.example@waypost.test", 553, b"5.1.3"),  # two "@": not an address at all
    ("<victim@elsewhere.example@waypost.test>", 553, b"5.1.3"),
    ("<journeys>", 550, b"5.7.1 Relaying denied"),  # a bare local part names no domain of ours
    ("journeys", 550, b"5.7.1 Relaying denied"),
    ("<journeys@[127.0.0.1]>", 550, b"5.7.1 Relaying denied"),  # an address literal, even our own
])
def test_open_relay_probes_are_refused(runtime: Any, listen: Callable[..., SmtpListener], probe: str,
                                       expected_code: int, expected_text: bytes) -> None:
    listener = listen(runtime.inbox)
    with listener.client() as client:
        client.ehlo("probe.example")
        assert client.mail("spammer@example.net")[0] == 250
        code, reply = client.docmd("RCPT", f"TO:{probe}")
        assert (code, expected_text in reply) == (expected_code, True), reply
        assert client.docmd("DATA")[0] == 503, "no recipient was taken, so there is no transaction"
    assert stored(runtime)[:2] == (0, 0)


@pytest.mark.parametrize("recipient, stored_as", [
    ("<Postmaster>", "postmaster@waypost.test"),  # RFC 5321 §4.1.1.3: no domain needed
    ("<@relay.example:journeys@waypost.test>", "journeys@waypost.test"),  # route ignored: the mailbox is ours
])
def test_local_recipients_in_unusual_forms_are_accepted(runtime: Any, listen: Callable[..., SmtpListener],
                                                       recipient: str, stored_as: str) -> None:
    listener = listen(runtime.inbox)
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        assert client.docmd("RCPT", f"TO:{recipient}")[0] == 250
        code, _ = client.data(small_message().as_bytes(policy=SMTP))
    assert code == 250
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(inbound_messages.c.rcpt_tos)).scalar_one() == [stored_as]


def test_auth_on_the_public_port_is_not_offered_and_unlocks_nothing(runtime: Any,
                                                                    listen: Callable[..., SmtpListener]) -> None:
    listener = listen(runtime.inbox)
    with listener.client() as client:
        client.ehlo("probe.example")
        assert not client.has_extn("auth")
        for mechanism in ("PLAIN " + base64.b64encode(b"\0journeys\0secret").decode(), "LOGIN"):
            code, reply = client.docmd("AUTH", mechanism)
            assert (code, reply[:5]) == (502, b"5.5.1"), reply
        client.mail("spammer@example.net")
        code, reply = client.rcpt("victim@elsewhere.example")
    assert (code, reply[:5]) == (550, b"5.7.1")
    assert stored(runtime)[:2] == (0, 0)


# -- the Received header -------------------------------------------------------------------

RECEIVED = re.compile(rb"\AReceived: from (?P<from>[^\r\n]+)\r\n\tby waypost\.test \(Waypost\) with (?P<with>\w+)"
                      rb"(?:\r\n\tfor <(?P<for>[^>]+)>)?; (?P<date>[^\r\n]+)\r\n")


def stored_raw(runtime: Any) -> bytes:
    with runtime.engine.connect() as conn:
        key = conn.execute(sa.select(inbound_messages.c.blob_key)).scalar_one()
    return runtime.blobs.get(key)


def test_received_header_is_prepended_and_the_message_kept_byte_for_byte(
        runtime: Any, listen: Callable[..., SmtpListener]) -> None:
    listener = listen(runtime.inbox)
    sent = small_message().as_bytes(policy=SMTP) + b".leading dot\r\n"  # dot-stuffed on the wire
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        client.rcpt("journeys@waypost.test")
        assert client.data(sent)[0] == 250
    raw = stored_raw(runtime)
    trace = RECEIVED.match(raw)
    assert trace is not None, raw[:300]
    assert trace["from"] == b"client.example.org ([127.0.0.1])"
    assert trace["with"] == b"ESMTP" and trace["for"] == b"journeys@waypost.test"
    when = email.utils.parsedate_to_datetime(trace["date"].decode())
    assert when.utcoffset() is not None and abs((datetime.now(UTC) - when).total_seconds()) < 120
    assert raw[trace.end():] == sent, "everything after our header is exactly what the client sent"


@pytest.mark.parametrize("greeting, name, expected_from, expected_with", [
    ("EHLO", "bad(helo); x", b"[127.0.0.1] ([127.0.0.1])", b"ESMTP"),  # not a domain: left out
    ("EHLO", "[192.0.2.7]", b"[192.0.2.7] ([127.0.0.1])", b"ESMTP"),
    ("HELO", "old.example.org", b"old.example.org ([127.0.0.1])", b"SMTP"),
])
def test_received_header_from_and_with(runtime: Any, listen: Callable[..., SmtpListener], greeting: str,
                                       name: str, expected_from: bytes, expected_with: bytes) -> None:
    listener = listen(runtime.inbox)
    with listener.client() as client:
        assert client.docmd(greeting, name)[0] == 250
        client.mail("ann@example.org")
        client.rcpt("journeys@waypost.test")
        client.rcpt("postmaster@waypost.test")
        assert client.data(small_message().as_bytes(policy=SMTP))[0] == 250
    trace = RECEIVED.match(stored_raw(runtime))
    assert trace is not None
    assert (trace["from"], trace["with"]) == (expected_from, expected_with)
    assert trace["for"] is None, "with two recipients, neither is named to the other"
