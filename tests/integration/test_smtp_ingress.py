"""SMTP ingress against a real listener on loopback: what is refused at RCPT, SIZE, and the
durable-accept rule (250 only after storage; 451 and nothing stored on a storage error)."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from waypost.errors import StorageError
from waypost.ingress.smtp import IngressHandler, start_smtp_server
from waypost.pipeline.inbox import Inbox
from waypost.store.models import inbound_messages, jobs

MAX_SIZE = 64 * 1024


class SmtpListener:
    """Runs the ingress on its own event loop thread, bound to port 0."""

    def __init__(self, handler: IngressHandler) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            start_smtp_server(handler, host="127.0.0.1", port=0, hostname="waypost.test",
                              max_message_size=MAX_SIZE), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=10)

    def close(self) -> None:
        async def shutdown() -> None:  # asyncio.Server is not thread-safe: close it on its loop
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def listen(runtime: Any) -> Iterator[Callable[[Inbox], SmtpListener]]:
    started: list[SmtpListener] = []

    def start(inbox: Inbox) -> SmtpListener:
        handler = IngressHandler(inbox.accept, runtime.router.accepts, runtime.router.is_local_domain)
        listener = SmtpListener(handler)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.close()


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
        code, _ = client.mail("ann@example.org", [f"SIZE={MAX_SIZE + 1}"])
        assert code == 552, "a declared size over the limit is refused at MAIL FROM"
    with listener.client() as client:
        client.ehlo("client.example.org")
        client.mail("ann@example.org")
        client.rcpt("journeys@waypost.test")
        code, text = client.data(small_message(body=("x" * 70 + "\n") * (MAX_SIZE // 70 + 10)).as_bytes(policy=SMTP))
    assert code == 552, f"an undeclared oversize message is refused after DATA: {text!r}"
    assert stored(runtime)[:2] == (0, 0)


class FailingBlobs:
    def __init__(self, real: Any) -> None:
        self.real = real

    def put(self, key: str, data: bytes) -> None:
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
