"""Mail that will never be answered is refused during the SMTP session (550 5.7.1), and only its
metadata is kept; the service mailboxes, trusted networks and mail for several kinds of
mailbox are not screened. Over a real SMTP listener wired as `waypost serve` wires it, on
SQLite and PostgreSQL, with DNS from a real server on loopback."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_pipeline import caught, drain
from tests.integration.test_smtp_ingress import SmtpListener, listeners
from tests.support.dns_server import LoopbackDns
from waypost.ingress.smtp import IngressHandler, Spooling
from waypost.ingress.spool import InflightBudget
from waypost.store.models import inbound_messages

JOURNEYS = "journeys@waypost.test"


@pytest.fixture
def wired(make_settings: Callable[..., Any], database_url: str, dns: LoopbackDns,
          allowing_runtime: Callable[..., Any]) -> Callable[..., Any]:
    def build(**overrides: Any) -> Any:
        # no trusted_networks unless asked: the test client on 127.0.0.1 is an ordinary sending server
        return allowing_runtime(make_settings(database={"url": database_url}, dns_nameservers=[dns.nameserver],
                                              dns_timeout=2.0, **overrides))

    return build


@pytest.fixture
def serve(wired: Callable[..., Any]) -> Iterator[Callable[..., tuple[Any, SmtpListener]]]:
    with listeners(None) as start:
        def listen(runtime: Any, spooling: Spooling | None = None) -> tuple[Any, SmtpListener]:
            handler = IngressHandler(runtime.inbox.accept, runtime.router.accepts, runtime.router.is_local_domain,
                                     mail_domain="waypost.test", authenticate=runtime.authenticate,
                                     authserv_id="mx.waypost.test", screen=runtime.screen,
                                     record_refusal=runtime.inbox.refuse, spooling=spooling)
            return runtime, start(handler=handler, max_message_size=64 * 1024 * 1024)

        yield listen


def mail(sender: str = "mallory@example.net", subject: str = "Secret plans", body: str = "private words",
         with_from: bool = True) -> bytes:
    message = EmailMessage()
    if with_from:
        message["From"] = sender
    message["To"] = JOURNEYS
    message["Subject"] = subject
    message["Message-ID"] = "<m-1@example.net>"
    message.set_content(body)
    return message.as_bytes().replace(b"\n", b"\r\n")


def send(listener: SmtpListener, raw: bytes, to: list[str], mail_from: str = "mallory@example.net") -> bytes:
    """The reply to DATA: code and enhanced status, e.g. b"550 5.7.1"."""
    with listener.client() as client:
        client.ehlo("mail.example.net")
        try:
            client.sendmail(mail_from, to, raw)
        except smtplib.SMTPDataError as refused:
            return b"%d %s" % (refused.smtp_code, refused.smtp_error.split(b" ", 1)[0])
    return b"250 2.0.0"


def rows(runtime: Any) -> list[Any]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(inbound_messages).order_by(inbound_messages.c.received_at)))


def blob_bytes(runtime: Any) -> bytes:
    root = runtime.blobs.root
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file()) if root.exists() else b""


def test_a_stranger_is_refused_during_the_session_and_only_metadata_is_kept(
        wired: Callable[..., Any], serve: Callable[..., Any]) -> None:
    runtime, listener = serve(wired())
    raw = mail()
    assert send(listener, raw, [JOURNEYS]) == b"550 5.7.1"

    [row] = rows(runtime)
    assert row.status == "refused" and row.reason.startswith("sender-not-allowlisted: mallory@example.net")
    assert (row.mail_from, row.rcpt_tos, row.from_address, row.message_id_header, row.peer_ip) == (
        "mallory@example.net", [JOURNEYS], "mallory@example.net", "<m-1@example.net>", "127.0.0.1")
    assert row.size == len(raw) and row.helo == "mail.example.net"
    assert row.subject is None and row.blob_key == "" and row.raw_deleted_at is not None
    assert b"private words" not in blob_bytes(runtime) and b"Secret plans" not in blob_bytes(runtime)
    drain(runtime)
    assert caught(runtime) == []  # the sending server tells its user; we send nothing


def test_mail_without_a_single_from_is_refused_with_its_reason(wired: Callable[..., Any],
                                                               serve: Callable[..., Any]) -> None:
    runtime, listener = serve(wired())
    assert send(listener, mail(with_from=False), [JOURNEYS]) == b"550 5.7.1"
    assert send(listener, mail(sender="a@example.net, b@example.net"), [JOURNEYS]) == b"550 5.7.1"
    assert [row.reason.split(":")[0] for row in rows(runtime)] == ["no-single-from-address"] * 2


def test_an_allowed_sender_whose_mail_fails_dmarc_reject_is_refused(wired: Callable[..., Any], dns: LoopbackDns,
                                                                    serve: Callable[..., Any]) -> None:
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    dns.add_txt("example.org", "v=spf1 ip4:192.0.2.1 -all")  # 127.0.0.1 is not ann's server
    runtime, listener = serve(wired())
    assert send(listener, mail(sender="ann@example.org"), [JOURNEYS], mail_from="ann@example.org") == b"550 5.7.1"
    [row] = rows(runtime)
    assert row.reason.startswith("not-authenticated: DMARC did not pass") and row.auth["dmarc"] == "fail"
    assert row.blob_key == "" and b"private words" not in blob_bytes(runtime)


@pytest.mark.parametrize("recipients", [["postmaster@waypost.test"], ["abuse@waypost.test"],
                                        [JOURNEYS, "postmaster@waypost.test"]],
                         ids=["postmaster", "abuse", "journeys and postmaster"])
def test_service_mailboxes_still_take_mail_from_anyone(wired: Callable[..., Any], serve: Callable[..., Any],
                                                       recipients: list[str]) -> None:
    runtime, listener = serve(wired())
    assert send(listener, mail(), recipients) == b"250 2.0.0"
    [row] = rows(runtime)
    assert row.blob_key and b"private words" in runtime.blobs.get(row.blob_key)


def test_trusted_networks_are_not_screened(wired: Callable[..., Any], serve: Callable[..., Any]) -> None:
    runtime, listener = serve(wired(trusted_networks=["127.0.0.0/8"]))
    assert send(listener, mail(), [JOURNEYS]) == b"250 2.0.0"
    drain(runtime)  # the worker's gate still refuses a stranger, without any reply
    [row] = rows(runtime)
    assert row.status == "refused" and row.blob_key and caught(runtime) == []


def test_mail_from_trusted_networks_skips_the_screen_and_the_checks(wired: Callable[..., Any]) -> None:
    """Decided on the event loop: trusted mail makes one trip to a thread (to be stored), and the
    checks never get a copy of it. Another peer's mail still goes through both."""
    runtime = wired()
    calls: list[str] = []

    def screen(*args: Any) -> Any:
        calls.append("screen")
        return runtime.screen(*args)

    def authenticate(*args: Any) -> Any:
        calls.append("authenticate")
        return runtime.authenticate(*args)

    # ann is allowed, but her mail proves nothing here (no DNS records): only trust lets it in
    for trusted, expected, code in ((True, [], b"250 2.0.0"), (False, ["screen", "authenticate"], b"550 5.7.1")):
        calls.clear()
        with listeners(None) as start:
            handler = IngressHandler(runtime.inbox.accept, runtime.router.accepts, runtime.router.is_local_domain,
                                     mail_domain="waypost.test", authenticate=authenticate, screen=screen,
                                     record_refusal=runtime.inbox.refuse, trusted=lambda peer, answer=trusted: answer)
            listener = start(handler=handler, max_message_size=1024 * 1024)
            answer = send(listener, mail(sender="ann@example.org"), [JOURNEYS], mail_from="ann@example.org")
        assert (answer, calls) == (code, expected)


def test_concurrent_big_messages_wait_for_the_in_flight_budget(wired: Callable[..., Any],
                                                                serve: Callable[..., Any]) -> None:
    """Six 3 MB messages at once through a 4 MB budget: every one is stored intact, and the
    message data in memory never exceeded the budget (what found no room went to a file and was
    authenticated and stored from there, never read back whole)."""
    runtime = wired(trusted_networks=["127.0.0.0/8"])
    budget = InflightBudget(4 * 1024 * 1024)
    runtime, listener = serve(runtime, Spooling(budget, runtime.settings.data_dir / "spool"))
    raws = [b"From: ann@example.org\r\nTo: journeys@waypost.test\r\nSubject: Big %d\r\n\r\n" % n
            + (b"%d" % n * 998 + b"\r\n") * 3000 for n in range(6)]
    replies: list[bytes] = []

    def one(raw: bytes) -> None:
        replies.append(send(listener, raw, [JOURNEYS], mail_from="ann@example.org"))

    threads = [threading.Thread(target=one, args=(raw,)) for raw in raws]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert replies == [b"250 2.0.0"] * 6
    stored = sorted(runtime.blobs.get(row.blob_key) for row in rows(runtime))
    assert all(any(stored_raw.endswith(raw) for stored_raw in stored) for raw in raws)
    assert 0 < budget.peak <= budget.limit
    assert asyncio.run_coroutine_threadsafe(_used(budget), listener.loop).result(5) == 0


async def _used(budget: InflightBudget) -> int:
    return budget.used
