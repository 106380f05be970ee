"""The feedback loop against a running `waypost serve`: SES feedback POSTed by "SNS" to
/hooks/sns (signed by a test CA, its certificate fetched over real TLS on loopback), and a DSN
mailed over SMTP to the VERP address of a reply Waypost sent. Then `waypost status` and
/metrics show the result."""

from __future__ import annotations

import json
import smtplib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.test_serve import cli, rows
from tests.support.sns_signing import (
    SnsHttpsServer,
    confirmation,
    make_pki,
    notification,
    sign_envelope,
    sns_timestamp,
)
from waypost.store.models import outbound_messages

TOPIC = "arn:aws:sns:eu-west-1:111122223333:ses-feedback"


@pytest.fixture
def sns_server(tmp_path: Path) -> Any:
    pki = make_pki(tmp_path / "pki")
    https = SnsHttpsServer(pki)
    with https as base_url:
        yield pki, https, base_url


def post(http_url: str, envelope: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{http_url}/hooks/sns", content=json.dumps(envelope).encode(), timeout=30,
                      headers={"x-amz-sns-message-type": envelope["Type"], "Content-Type": "text/plain"})


def suppressed(http_url: str, address: str) -> dict[str, Any] | None:
    response = httpx.get(f"{http_url}/api/suppressions/{address}", timeout=30)
    return response.json() if response.status_code == 200 else None


def test_sns_hook_confirms_applies_and_refuses(live_server: Any, sns_server: Any, tmp_path: Path) -> None:
    pki, https, base_url = sns_server
    server = live_server(WAYPOST_FEEDBACK__SNS_TOPIC_ARNS=TOPIC, WAYPOST_FEEDBACK__SNS_CERT_HOST_PATTERN="^localhost$",
                         WAYPOST_FEEDBACK__SNS_CERT_CA_PATH=str(pki.ca_path))
    cert_url = f"{base_url}/SimpleNotificationService-test.pem"
    bounce = json.dumps({
        "notificationType": "Bounce",
        "mail": {"messageId": "0102-not-ours", "timestamp": "2026-11-23T10:00:00.000Z", "source": "x@waypost.test",
                 "destination": ["ann@example.net"]},
        "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail", "feedbackId": "fb-1",
                   "timestamp": "2026-11-23T10:00:02.000Z",
                   "bouncedRecipients": [{"emailAddress": "ann@example.net", "status": "5.1.1",
                                          "diagnosticCode": "smtp; 550 5.1.1 no such user"}]}})

    now = sns_timestamp(datetime.now(UTC))  # SNS stamps what it sends; the default refuses the old
    subscribe = post(server.http_url, sign_envelope(confirmation(TOPIC, f"{base_url}/confirm?Token=abc",
                                                                 timestamp=now), pki.signing_key, cert_url=cert_url))
    tampered = sign_envelope(notification(TOPIC, bounce, timestamp=now), pki.signing_key, cert_url=cert_url)
    tampered["Message"] = tampered["Message"].replace("ann@", "eve@")
    stranger = sign_envelope(notification("arn:aws:sns:eu-west-1:999999999999:x", bounce, timestamp=now),
                             pki.signing_key, cert_url=cert_url)
    stale = sign_envelope(notification(TOPIC, bounce.replace("ann@", "eve@"),
                                       timestamp=sns_timestamp(datetime.now(UTC) - timedelta(days=2))),
                          pki.signing_key, cert_url=cert_url)
    refused = [post(server.http_url, tampered), post(server.http_url, stranger), post(server.http_url, stale)]
    applied = post(server.http_url, sign_envelope(notification(TOPIC, bounce, timestamp=now), pki.signing_key,
                                                  cert_url=cert_url, version="1"))

    assert subscribe.status_code == 200 and subscribe.text == "subscribed" and len(https.confirmations()) == 1
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert [r.text for r in refused] == ["bad-signature", "topic-not-allowed", "too-old"]
    assert applied.status_code == 200
    entry = suppressed(server.http_url, "ann@example.net")
    assert entry is not None and entry["reason"] == "BOUNCE" and entry["source"] == "ses"
    assert suppressed(server.http_url, "eve@example.net") is None
    assert https.cert_fetches() == 1  # cached after the first; the stranger's topic fetched nothing


def test_a_dsn_to_the_verp_address_suppresses_our_recipient(live_server: Any, tmp_path: Path,
                                                            database_url: str) -> None:
    data_dir = tmp_path / "data"
    server = live_server("--demo", data_dir=data_dir, WAYPOST_DATABASE__URL=database_url)
    reply = wait_until(lambda: [r for r in rows(database_url, outbound_messages) if r.state == "sent"],
                       timeout=60, message="the demo reply")[0]
    assert reply.envelope_sender.startswith("bounces+")
    dsn = (f"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nTo: {reply.envelope_sender}\r\n"
           "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.example.org>\r\n"
           "MIME-Version: 1.0\r\n"
           'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
           "--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
           "--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
           f"Final-Recipient: rfc822; {reply.recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
           f"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {reply.message_id_header}\r\n"
           f"To: {reply.recipient}\r\n\r\n--b1--\r\n").encode()
    # a stranger's bounce: a made-up VERP address, and a Message-ID of ours it cannot know
    forged = (dsn.replace(reply.envelope_sender.encode(), b"bounces+1-aaaaaaaaaaaaa@waypost.test")
              .replace(reply.message_id_header.encode(), b"<guessed@waypost.test>")
              .replace(b"<dsn-1@mx.example.org>", b"<dsn-0@mx.example.org>"))

    with smtplib.SMTP(server.smtp_host, server.smtp_port, timeout=30) as client:
        client.sendmail("", ["bounces+1-aaaaaaaaaaaaa@waypost.test"], forged)
        client.sendmail("", [reply.envelope_sender], dsn)

    entry = wait_until(lambda: suppressed(server.http_url, reply.recipient), timeout=60, message="the suppression")
    assert entry["reason"] == "BOUNCE" and entry["source"] == "dsn" and "5.1.1" in entry["detail"]
    listed = cli(data_dir, "feedback", "list", WAYPOST_DATABASE__URL=database_url).stdout
    assert "dsn bounce" in listed and "-> suppressed" in listed and "-> review" in listed
    assert "5.1.1 userunknown -> suppressed" in listed  # the reason is kept with the event (migration 0008)

    status = cli(data_dir, "status", WAYPOST_DATABASE__URL=database_url).stdout
    assert "queues" in status and "reputation" in status and "suppressed bounce 1" in status
    assert "waiting for review 1" in status
    metrics = httpx.get(f"{server.http_url}/metrics", timeout=30).text
    assert 'waypost_suppressed_addresses{reason="BOUNCE"} 1.0' in metrics
    assert 'waypost_feedback_events_24h{kind="bounce"} 2.0' in metrics
