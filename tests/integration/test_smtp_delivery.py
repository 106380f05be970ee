"""Journeys replies through the outbox to a real SMTP server on loopback: DKIM-signed over
STARTTLS and verified against a loopback DNS server, delivered once after a 454, and never
twice when the worker is killed between the server's 250 and its own commit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
import sqlalchemy as sa

from tests.conftest import server_env, start_process, stop_process, wait_until, waypost_command
from tests.integration.test_outbox import run_jobs
from tests.integration.test_pipeline import deliver, inbound, photo_mail
from tests.support.dns_server import LoopbackDns, dkim_dnsfunc
from tests.support.smtp_capture import SmtpCapture, self_signed_cert, server_tls_context
from waypost import runtime as wiring
from waypost.mail.dkim_sign import generate_key
from waypost.outbound import suppression
from waypost.store.models import feedback_events, jobs, outbound_messages

SELECTOR = "wp2026"


@pytest.fixture
def dkim_key(tmp_path: Path, dns: LoopbackDns) -> Path:
    key_file = tmp_path / "dkim.pem"
    dns.add_txt(f"{SELECTOR}._domainkey.waypost.test", generate_key(key_file, "rsa"))
    return key_file


def smtp_settings(capture: SmtpCapture, dkim_key: Path, **smarthost: Any) -> dict[str, Any]:
    return {"outbound": {"transport": "smtp"}, "base_url": "https://trips.waypost.test",
            "smarthost": {"host": capture.host, "port": capture.port, "security": "none", **smarthost},
            "dkim": {"selector": SELECTOR, "private_key_path": str(dkim_key)}}


@pytest.fixture
def smtp_runtime(make_settings: Callable[..., Any], database_url: str,
                 allowing_runtime: Callable[..., Any]) -> Callable[..., Any]:
    def build(**settings: Any) -> Any:
        return allowing_runtime(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                              **settings))

    return build


def outbound_rows(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(outbound_messages)))


def test_a_reply_goes_out_signed_over_starttls_and_verifies(smtp_runtime: Any, dkim_key: Path, dns: LoopbackDns,
                                                            tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    with SmtpCapture(tls_context=server_tls_context(cert, key), auth=("waypost", "s3cret")) as capture:
        runtime = smtp_runtime(**smtp_settings(capture, dkim_key, security="starttls", username="waypost",
                                               password="s3cret", ca_path=str(cert), host="localhost"))
        deliver(runtime, photo_mail())
        run_jobs(runtime)
        (received,) = capture.wait_for(1, timeout=10)

    (row,) = outbound_rows(runtime)
    assert row.state == "sent" and row.provider_message_id and not row.unconfirmed
    assert received.tls and received.login == "waypost"
    assert received.mail_from == row.envelope_sender and runtime.verp.outbound_id(received.mail_from) == row.id
    assert list(received.rcpt_tos) == ["ann@example.org"]
    assert dkim.verify(received.raw, dnsfunc=dkim_dnsfunc(dns))
    signature = received.raw.split(b"DKIM-Signature:", 1)[1].split(b"\r\n\r\n", 1)[0]
    signed = [name.strip().lower() for name in
              b"".join(signature.split()).split(b"h=", 1)[1].split(b";", 1)[0].decode().split(":")]
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= set(signed)
    # what the message promises survives the trip: tampering with the one-click header breaks it
    tampered = received.raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                                    b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks")
    assert tampered != received.raw and not dkim.verify(tampered, dnsfunc=dkim_dnsfunc(dns))


def test_a_454_is_retried_and_the_reply_delivered_once_later(smtp_runtime: Any, dkim_key: Path) -> None:
    throttled = "454 4.7.0 Throttling failure: Maximum sending rate exceeded"
    with SmtpCapture(data_replies=[throttled, "250 2.0.0 Ok: queued as ABC123"]) as capture:
        runtime = smtp_runtime(**smtp_settings(capture, dkim_key))
        deliver(runtime, photo_mail())
        run_jobs(runtime, include_deferred=True)
        (received,) = capture.wait_for(1, timeout=10)

    (row,) = outbound_rows(runtime)
    assert row.state == "sent" and row.provider_message_id == "Ok: queued as ABC123"
    assert list(received.rcpt_tos) == ["ann@example.org"]
    with runtime.engine.connect() as conn:
        (job,) = conn.execute(sa.select(jobs).where(jobs.c.kind == "send")).all()
    assert job.state == "done" and job.attempts == 1  # the throttled try did not count


def test_a_permanent_refusal_fails_the_reply_with_the_servers_words(smtp_runtime: Any, dkim_key: Path) -> None:
    with SmtpCapture(rcpt_replies=["550 5.1.1 <ann@example.org>: Recipient address rejected"]) as capture:
        runtime = smtp_runtime(**smtp_settings(capture, dkim_key))
        message_id = deliver(runtime, photo_mail())
        run_jobs(runtime, include_deferred=True)
        assert capture.messages == []

    assert inbound(runtime, message_id).status == "processed"
    (row,) = outbound_rows(runtime)
    assert row.state == "failed" and "550 5.1.1" in row.last_error and row.handoff_at is None
    # no DSN will come for a refusal at RCPT: it is feedback of its own
    with runtime.engine.connect() as conn:
        entry = suppression.lookup(conn, "ann@example.org")
        (event,) = conn.execute(sa.select(feedback_events)).all()
    assert entry is not None and entry.reason == suppression.Reason.BOUNCE and entry.source == "smtp"
    assert (event.bounce_type, event.bounce_subtype, event.status, event.outbound_id) == (
        "Permanent", "NoEmail", "5.1.1", row.id)


def test_a_worker_killed_after_the_servers_250_never_delivers_twice(make_settings: Callable[..., Any],
                                                                    database_url: str, dkim_key: Path,
                                                                    tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with SmtpCapture() as capture:
        runtime = wiring.build(make_settings(data_dir=data_dir, database={"url": database_url},
                                             trusted_networks=["127.0.0.0/8"], **smtp_settings(capture, dkim_key)))
        runtime.allowlist.add("ann@example.org")
        deliver(runtime, photo_mail())
        env = server_env(data_dir, WAYPOST_DATABASE__URL=database_url, WAYPOST_OUTBOUND__TRANSPORT="smtp",
                         WAYPOST_BASE_URL="https://trips.waypost.test", WAYPOST_OPERATOR_EMAIL="ops@example.net",
                         WAYPOST_OUTBOUND__MAX_PER_SECOND="1000", WAYPOST_SMARTHOST__HOST=capture.host,
                         WAYPOST_SMARTHOST__PORT=str(capture.port), WAYPOST_SMARTHOST__SECURITY="none",
                         WAYPOST_DKIM__SELECTOR=SELECTOR, WAYPOST_DKIM__PRIVATE_KEY_PATH=str(dkim_key),
                         WAYPOST_JOURNEYS__IMAGE_WORKERS="1", WAYPOST_WORKER__VISIBILITY_TIMEOUT="3")
        crashing = start_process(waypost_command("worker"), {**env, "WAYPOST_FAILPOINTS": "outbox.after_send=crash"})
        try:
            crashing.wait(timeout=60)  # SIGKILLed itself right after the server's 250
        finally:
            stop_process(crashing)
        assert crashing.returncode == -9
        assert len(capture.wait_for(1, timeout=10)) == 1
        (row,) = outbound_rows(runtime)
        assert row.state == "sending" and row.handoff_at is not None  # the outcome was never recorded

        worker = start_process(waypost_command("worker"), env)
        try:
            wait_until(lambda: outbound_rows(runtime)[0].state == "sent", timeout=30, message="the send settled")
        finally:
            stop_process(worker)
        assert len(capture.messages) == 1  # delivered once
        (row,) = outbound_rows(runtime)
        assert row.unconfirmed and "not sent again" in row.last_error
    runtime.close()
