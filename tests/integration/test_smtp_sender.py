"""The SMTP smarthost sender and DKIM signing, against real servers on loopback: a capturing
SMTP server (STARTTLS, AUTH, scripted replies) and a DNS server publishing the DKIM key."""

from __future__ import annotations

import base64
import email
import os
import re
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.support.dns_server import LoopbackDns, dkim_dnsfunc
from tests.support.smtp_capture import DROP_CONNECTION, SmtpCapture, self_signed_cert, server_tls_context
from waypost.config import ConfigError, Settings
from waypost.errors import PermanentError, TransientError
from waypost.mail.dkim_sign import DkimSigner, generate_key, public_record, to_crlf
from waypost.outbound.senders.base import DeliveryUnknownError, Envelope, SendingPausedError, ThrottledError
from waypost.outbound.senders.smtp import SmtpSender

DOMAIN = "example.org"
SELECTOR = "s2026"
USER, PASSWORD = "relay-user", "relay-secret"
ENVELOPE = Envelope(sender="bounces+tok@example.org", recipient="ann@example.net", idempotency_key="reply:1",
                    message_id="<reply-1@example.org>")
# LF line ends on purpose: the sender must put CRLF on the wire and sign that form
MESSAGE = b"""\
From: Waypost journeys <journeys@example.org>
To: ann@example.net
Subject: Your journey is ready
Date: Sun, 01 Mar 2026 10:00:00 +0000
Message-ID: <reply-1@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit
List-Unsubscribe: <https://example.org/u/Zm9vYmFy.sig>, <mailto:unsubscribe@example.org?subject=unsubscribe>
List-Unsubscribe-Post: List-Unsubscribe=One-Click
Auto-Submitted: auto-replied

Hello Ann,
.a line that starts with a dot must survive dot-stuffing
..and one with two
Bye
"""


class HandoffProbe:
    """Counts handoff calls and writes them into the server's event log, in order."""

    def __init__(self, server: SmtpCapture | None = None, error: Exception | None = None) -> None:
        self.server, self.error, self.calls = server, error, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.server is not None:
            self.server.note("handoff")
        if self.error is not None:
            raise self.error


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path)


@pytest.fixture
def smtp_server(certificate: tuple[Path, Path]) -> Iterator[Callable[..., SmtpCapture]]:
    """Start a capturing server; STARTTLS with the test certificate unless told otherwise."""
    with ExitStack() as stack:
        def start(*, plain: bool = False, **options: Any) -> SmtpCapture:
            if not plain:
                options.setdefault("tls_context", server_tls_context(*certificate))
            return stack.enter_context(SmtpCapture(**options))

        yield start


@pytest.fixture
def dns_server() -> Iterator[LoopbackDns]:
    with LoopbackDns() as server:
        yield server


@pytest.fixture(params=["rsa", "ed25519"])
def signer(request: pytest.FixtureRequest, tmp_path: Path, dns_server: LoopbackDns) -> DkimSigner:
    """A signer whose public key the loopback DNS publishes."""
    key_file = tmp_path / f"{request.param}.pem"
    dns_server.add_txt(f"{SELECTOR}._domainkey.{DOMAIN}", generate_key(key_file, request.param))
    return DkimSigner(DOMAIN, SELECTOR, key_file.read_bytes())


def make_sender(server: SmtpCapture, certificate: tuple[Path, Path] | None, **options: Any) -> SmtpSender:
    options.setdefault("security", "starttls")
    options.setdefault("ca_file", certificate[0] if certificate else None)
    return SmtpSender(server.host, server.port, timeout=10.0, data_timeout=10.0, local_hostname="sender.waypost.test",
                      **options)


def signature_tags(raw: bytes) -> dict[str, str]:
    value = email.message_from_bytes(raw)["DKIM-Signature"]
    tags = (part.split("=", 1) for part in re.sub(r"\s+", "", value).split(";") if part)
    return {name: tag for name, tag in tags}


def signed_names(raw: bytes) -> list[str]:
    return signature_tags(raw)["h"].lower().split(":")


# -- delivery and DKIM ----------------------------------------------------------------------


def test_signed_message_over_starttls_with_auth_arrives_once_and_verifies(
        smtp_server: Callable[..., SmtpCapture], certificate: tuple[Path, Path], signer: DkimSigner,
        dns_server: LoopbackDns) -> None:
    server = smtp_server(auth=(USER, PASSWORD))
    sender = make_sender(server, certificate, username=USER, password=PASSWORD, signer=signer)
    handoff = HandoffProbe()

    provider_id = sender.send(ENVELOPE, MESSAGE, handoff)

    (received,) = server.wait_for(1)
    assert provider_id == "Ok: queued as C0001"
    assert (received.mail_from, received.rcpt_tos) == (ENVELOPE.sender, (ENVELOPE.recipient,))
    assert received.login == USER and received.tls
    assert handoff.calls == 1 and server.connections == 1 and len(server.messages) == 1
    assert received.raw.startswith(b"DKIM-Signature: ")
    assert b"\n" not in received.raw.replace(b"\r\n", b""), "bare LF on the wire"
    assert received.raw.endswith(to_crlf(MESSAGE)), "the message changed on the way"
    assert signature_tags(received.raw)["a"] == signer.algorithm
    assert signature_tags(received.raw)["c"] == "relaxed/relaxed"
    assert dkim.verify(received.raw, dnsfunc=dkim_dnsfunc(dns_server))
    assert (f"{SELECTOR}._domainkey.{DOMAIN}.", "TXT") in dns_server.queries


def test_signature_covers_one_click_headers_and_over_signs_from(signer: DkimSigner) -> None:
    names = signed_names(signer.sign(MESSAGE))
    assert {"list-unsubscribe", "list-unsubscribe-post", "subject", "to", "message-id", "date"} <= set(names)
    assert [names.count(n) for n in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post")] == [2, 2, 2, 2]
    assert "cc" not in names and "reply-to" not in names, "absent fields are left out of h="


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda raw: raw.replace(b"Hello Ann", b"Hello Bob"), id="body"),
    pytest.param(lambda raw: raw.replace(b"/u/Zm9vYmFy.sig", b"/u/attacker.sig"), id="list-unsubscribe"),
    pytest.param(lambda raw: raw.replace(b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Never"),
                 id="list-unsubscribe-post"),
    pytest.param(lambda raw: b"From: Mallory <ceo@example.org>\r\n" + raw, id="second-from"),
])
def test_changes_after_signing_break_the_signature(
        smtp_server: Callable[..., SmtpCapture], certificate: tuple[Path, Path], signer: DkimSigner,
        dns_server: LoopbackDns, tamper: Callable[[bytes], bytes]) -> None:
    server = smtp_server()
    make_sender(server, certificate, signer=signer).send(ENVELOPE, MESSAGE, HandoffProbe())
    (received,) = server.wait_for(1)
    assert dkim.verify(received.raw, dnsfunc=dkim_dnsfunc(dns_server))

    tampered = tamper(received.raw)
    assert tampered != received.raw
    assert not dkim.verify(tampered, dnsfunc=dkim_dnsfunc(dns_server))


def test_handoff_comes_after_rcpt_and_before_data(smtp_server: Callable[..., SmtpCapture],
                                                  certificate: tuple[Path, Path]) -> None:
    server = smtp_server()
    handoff = HandoffProbe(server)
    make_sender(server, certificate).send(ENVELOPE, MESSAGE, handoff)
    assert handoff.calls == 1
    assert [step for step, _ in server.events] == ["CONNECT", "MAIL", "RCPT", "handoff", "DATA", "QUIT"]


def test_implicit_tls(smtp_server: Callable[..., SmtpCapture], certificate: tuple[Path, Path]) -> None:
    server = smtp_server(tls="implicit")
    make_sender(server, certificate, security="tls").send(ENVELOPE, MESSAGE, HandoffProbe())
    (received,) = server.wait_for(1)
    assert received.tls


def test_eight_bit_content_is_declared(smtp_server: Callable[..., SmtpCapture],
                                       certificate: tuple[Path, Path]) -> None:
    server = smtp_server()
    message = MESSAGE.replace(b"Bye", "Grüße".encode()).replace(b"7bit", b"8bit")
    make_sender(server, certificate).send(ENVELOPE, message, HandoffProbe())
    (received,) = server.wait_for(1)
    assert "BODY=8BITMIME" in received.mail_options
    assert received.raw == to_crlf(message)


def test_sender_built_from_settings(smtp_server: Callable[..., SmtpCapture],
                                    make_settings: Callable[..., Settings]) -> None:
    server = smtp_server(plain=True, auth=(USER, PASSWORD), auth_require_tls=False)
    settings = make_settings(smarthost={"host": server.host, "port": server.port, "security": "none",
                                        "username": USER, "password": PASSWORD, "timeout": 10})
    sender = SmtpSender.from_settings(settings, None)
    sender.data_timeout = 10.0  # a broken transfer fails the test in seconds, not ten minutes
    assert PASSWORD not in repr(sender)
    sender.send(ENVELOPE, MESSAGE, HandoffProbe())
    (received,) = server.wait_for(1)
    assert received.login == USER and not received.tls
    assert b"DKIM-Signature" not in received.raw


# -- refusals and failures ------------------------------------------------------------------


def test_5xx_at_rcpt_is_permanent_and_nothing_is_handed_over(smtp_server: Callable[..., SmtpCapture],
                                                            certificate: tuple[Path, Path]) -> None:
    server = smtp_server(rcpt_replies=["550 5.1.1 <ann@example.net>: user unknown"])
    handoff = HandoffProbe()
    with pytest.raises(PermanentError, match=r"550 5\.1\.1 <ann@example\.net>: user unknown") as caught:
        make_sender(server, certificate).send(ENVELOPE, MESSAGE, handoff)
    assert not isinstance(caught.value, DeliveryUnknownError)
    assert handoff.calls == 0
    assert "DATA" not in [step for step, _ in server.events]


def test_4xx_at_rcpt_is_transient(smtp_server: Callable[..., SmtpCapture], certificate: tuple[Path, Path]) -> None:
    server = smtp_server(rcpt_replies=["451 4.3.0 Temporary lookup failure"])
    handoff = HandoffProbe()
    with pytest.raises(TransientError, match="451") as caught:
        make_sender(server, certificate).send(ENVELOPE, MESSAGE, handoff)
    assert not isinstance(caught.value, ThrottledError)
    assert handoff.calls == 0 and server.messages == []


@pytest.mark.parametrize(("reply", "low", "high"), [
    ("454 4.7.0 Throttling failure: Maximum sending rate exceeded.", 1.0, 5.0),
    ("454 4.7.0 Throttling failure: Daily message quota exceeded.", 60.0, 3600.0),
])
def test_throttling_at_data_asks_to_slow_down(smtp_server: Callable[..., SmtpCapture], certificate: tuple[Path, Path],
                                              reply: str, low: float, high: float) -> None:
    server = smtp_server(data_replies=[reply])
    sender = make_sender(server, certificate)
    with pytest.raises(ThrottledError, match="Throttling failure") as caught:
        sender.send(ENVELOPE, MESSAGE, HandoffProbe())
    assert low <= caught.value.retry_after <= high
    assert server.messages == []

    sender.send(ENVELOPE, MESSAGE, HandoffProbe())  # the next attempt is answered 250
    assert len(server.wait_for(1)) == 1 and server.connections == 2


@pytest.mark.parametrize(("reply", "error"), [
    ("554 5.6.0 Message rejected: content", PermanentError),
    ("451 4.3.0 Queue file write error", TransientError),
])
def test_refusal_of_the_data_means_not_delivered(smtp_server: Callable[..., SmtpCapture],
                                                 certificate: tuple[Path, Path], reply: str,
                                                 error: type[Exception]) -> None:
    server = smtp_server(data_replies=[reply])
    handoff = HandoffProbe()
    with pytest.raises(error, match=reply.split()[0]) as caught:
        make_sender(server, certificate).send(ENVELOPE, MESSAGE, handoff)
    assert type(caught.value) is error, "a refusal is an answer: never 'unknown', never throttling"
    assert handoff.calls == 1 and server.messages == []


def test_connection_dropped_after_the_data_is_delivery_unknown(smtp_server: Callable[..., SmtpCapture],
                                                               certificate: tuple[Path, Path]) -> None:
    server = smtp_server(data_replies=[DROP_CONNECTION])
    handoff = HandoffProbe()
    with pytest.raises(DeliveryUnknownError, match="answer was lost"):
        make_sender(server, certificate).send(ENVELOPE, MESSAGE, handoff)
    assert handoff.calls == 1
    assert ("DATA", "dropped") in server.events


def test_failing_handoff_abandons_the_transaction(smtp_server: Callable[..., SmtpCapture],
                                                  certificate: tuple[Path, Path]) -> None:
    server = smtp_server()
    handoff = HandoffProbe(server, error=RuntimeError("database is gone"))
    with pytest.raises(RuntimeError, match="database is gone"):
        make_sender(server, certificate).send(ENVELOPE, MESSAGE, handoff)
    assert handoff.calls == 1 and server.messages == []
    server.wait_for_event("QUIT")
    assert [step for step, _ in server.events] == ["CONNECT", "MAIL", "RCPT", "handoff", "QUIT"]


def test_server_without_starttls_gets_nothing(smtp_server: Callable[..., SmtpCapture],
                                              certificate: tuple[Path, Path]) -> None:
    server = smtp_server(plain=True)
    handoff = HandoffProbe()
    with pytest.raises(TransientError, match="does not offer STARTTLS"):
        make_sender(server, certificate).send(ENVELOPE, MESSAGE, handoff)
    assert handoff.calls == 0 and server.connections == 1
    assert "MAIL" not in [step for step, _ in server.events]


@pytest.mark.parametrize("trust", ["system store", "wrong name"])
def test_unverifiable_certificate_gets_nothing(smtp_server: Callable[..., SmtpCapture], tmp_path: Path,
                                               trust: str) -> None:
    if trust == "system store":  # self-signed, and we do not trust it
        certificate, ca_file = self_signed_cert(tmp_path), None
    else:  # trusted, but issued to another name than the host we connect to (127.0.0.1)
        certificate = self_signed_cert(tmp_path, name="mail.example.org", ip=None)
        ca_file = certificate[0]
    server = smtp_server(tls_context=server_tls_context(*certificate))
    handoff = HandoffProbe()
    with pytest.raises(TransientError, match="the smarthost's TLS certificate was not accepted"):
        make_sender(server, None, ca_file=ca_file).send(ENVELOPE, MESSAGE, handoff)
    assert handoff.calls == 0
    assert "MAIL" not in [step for step, _ in server.events]


def test_refused_credentials_pause_sending(smtp_server: Callable[..., SmtpCapture],
                                           certificate: tuple[Path, Path]) -> None:
    server = smtp_server(auth=(USER, PASSWORD))
    handoff = HandoffProbe()
    with pytest.raises(SendingPausedError, match="535"):
        make_sender(server, certificate, username=USER, password="wrong").send(ENVELOPE, MESSAGE, handoff)
    assert handoff.calls == 0 and server.messages == []


def test_unreachable_smarthost_is_transient() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handoff = HandoffProbe()
    with pytest.raises(TransientError, match="cannot reach smarthost"):
        SmtpSender("127.0.0.1", port, security="none", timeout=5.0, data_timeout=5.0).send(ENVELOPE, MESSAGE, handoff)
    assert handoff.calls == 0


@pytest.mark.parametrize("host", ["192.0.2.10", "mail.example.org", "::ffff:127.0.0.1"])
def test_no_password_in_plain_text_except_to_loopback(host: str) -> None:
    with pytest.raises(ConfigError, match="without encryption"):
        SmtpSender(host, 25, security="none", username=USER, password=PASSWORD)
    for loopback in ("127.0.0.1", "localhost", "::1"):
        SmtpSender(loopback, 25, security="none", username=USER, password=PASSWORD)


def test_username_and_password_come_together() -> None:
    with pytest.raises(ConfigError, match="together"):
        SmtpSender("127.0.0.1", 25, security="starttls", username=USER)


# -- keys and signer configuration ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_generate_key_writes_a_private_file_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "dkim.pem"
    record = generate_key(path, kind)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    pem = path.read_bytes()
    assert record == public_record(pem)
    key = serialization.load_pem_private_key(pem, password=None)
    public_der = dkim_public_key(record)
    if kind == "rsa":
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        assert public_der == key.public_key().public_bytes(serialization.Encoding.DER,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        assert public_der == key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert record.startswith(f"v=DKIM1; k={kind}; p=")

    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_key(path, kind)
    assert path.read_bytes() == pem


def dkim_public_key(record: str) -> bytes:
    return base64.b64decode(record.rsplit("p=", 1)[1])


def test_lf_and_crlf_input_give_the_same_wire_form() -> None:
    assert to_crlf(b"a\nb\r\nc\rd") == b"a\r\nb\r\nc\r\nd\r\n"
    assert to_crlf(to_crlf(MESSAGE)) == to_crlf(MESSAGE)


def test_signer_refuses_a_message_without_from(tmp_path: Path) -> None:
    generate_key(tmp_path / "k.pem", "ed25519")
    signer = DkimSigner(DOMAIN, SELECTOR, (tmp_path / "k.pem").read_bytes())
    with pytest.raises(ValueError, match="no From header"):
        signer.sign(b"To: ann@example.net\nSubject: x\n\nbody\n")


def signer_from(settings: Settings) -> DkimSigner | None:
    return DkimSigner.from_settings(settings.dkim, domain=settings.dkim_domain)


def test_signer_from_settings(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    assert signer_from(make_settings()) is None
    key_file = tmp_path / "dkim.pem"
    generate_key(key_file, "rsa")
    signer = signer_from(make_settings(mail_domain="Example.ORG",
                                       dkim={"selector": SELECTOR, "private_key_path": key_file}))
    assert signer is not None
    assert (signer.domain, signer.selector, signer.algorithm) == ("example.org", SELECTOR, "rsa-sha256")
    signer = signer_from(make_settings(dkim={"selector": SELECTOR, "private_key_path": key_file,
                                             "domain": "mail.example.org"}))
    assert signer is not None and signer.domain == "mail.example.org"


def write_pem(path: Path, key: Any, password: bytes | None = None) -> Path:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return path


@pytest.mark.parametrize(("dkim_settings", "message"), [
    ({"selector": SELECTOR}, r"dkim\.private_key_path is not set"),
    ({"private_key_path": "{key}"}, r"dkim\.selector is not set"),
    ({"selector": SELECTOR, "private_key_path": "{dir}/missing.pem"}, r"cannot read .*missing\.pem"),
    ({"selector": SELECTOR, "private_key_path": "{dir}/garbage.pem"}, "not a PEM private key"),
    ({"selector": SELECTOR, "private_key_path": "{dir}/ec.pem"}, "unsupported key type"),
    ({"selector": SELECTOR, "private_key_path": "{dir}/encrypted.pem"}, "encrypted"),
    ({"selector": "bad selector!", "private_key_path": "{key}"}, "not a DNS name"),
])
def test_signer_settings_errors_name_the_problem(tmp_path: Path, make_settings: Callable[..., Settings],
                                                 dkim_settings: dict[str, str], message: str) -> None:
    generate_key(tmp_path / "good.pem", "rsa")
    (tmp_path / "garbage.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    write_pem(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    write_pem(tmp_path / "encrypted.pem", ed25519.Ed25519PrivateKey.generate(), password=b"pw")
    dkim_settings = {k: v.format(key=tmp_path / "good.pem", dir=tmp_path) for k, v in dkim_settings.items()}
    with pytest.raises(ConfigError, match=message):
        signer_from(make_settings(dkim=dkim_settings))
