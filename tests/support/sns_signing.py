"""Everything a test needs to play Amazon SNS on loopback.

``make_pki`` writes a throwaway CA, a TLS server certificate for ``localhost`` signed by
it, and an RSA 2048 signing certificate and key (the role of SNS's
``SimpleNotificationService-*.pem``). ``sign_envelope`` signs an envelope the way SNS does,
version 1 (SHA1) or 2 (SHA256); it builds the string to sign itself, from the reference,
so it does not share a bug with the code under test. ``SnsHttpsServer`` is an HTTPS server
on 127.0.0.1, port 0, that serves the signing certificate, answers SubscribeURL GETs, and
records every connection and request.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import socket
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_PATH = "/SimpleNotificationService-test.pem"
CONFIRM_PATH = "/confirm"
# other routes, for the fetcher's limits: a body over its cap, a redirect, a non-certificate
HUGE_PATH, REDIRECT_PATH, NOT_PEM_PATH = "/huge.pem", "/redirect.pem", "/not-a-certificate.pem"
# when the envelopes below were "sent": a verifier's clock set to it sees them as just arrived
SENT_AT = datetime.datetime(2026, 3, 1, 10, 0, 3, 210000, tzinfo=datetime.UTC)
_CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_SIGNED_KEYS = {  # REFERENCE-SES.md §2, "Signature verification algorithm", step 4
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION_KEYS,
    "UnsubscribeConfirmation": _CONFIRMATION_KEYS,
}


@dataclass(frozen=True)
class SnsPki:
    ca_path: Path  # PEM of the CA; a fetcher given it as ca_path trusts the TLS server below
    server_cert_path: Path  # TLS certificate for "localhost", issued by the CA
    server_key_path: Path
    signing_key: rsa.RSAPrivateKey  # what SNS signs with
    signing_pem: bytes  # its certificate, as served at CERT_PATH


def make_pki(directory: Path, *, name: str = "Waypost SNS test CA") -> SnsPki:
    """A fresh CA, TLS certificate and signing key, written under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(name)
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key(), ca_key.public_key())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_key_usage(cert_sign=True), critical=True)
               .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _leaf(ca_key, ca_name, server_key.public_key(), "localhost", tls=True)
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_cert = _leaf(ca_key, ca_name, signing_key.public_key(), "sns.test.invalid", tls=False)
    paths = directory / "ca.pem", directory / "localhost.pem", directory / "localhost.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return SnsPki(*paths, signing_key=signing_key, signing_pem=signing_cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any, issuer_public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False))


def _leaf(ca_key: CertificateIssuerPrivateKeyTypes, ca_name: x509.Name, public_key: Any, common_name: str, *,
          tls: bool) -> x509.Certificate:
    builder = (_builder(_name(common_name), ca_name, public_key, ca_key.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(cert_sign=False), critical=True))
    if tls:
        builder = (builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                         key_agreement=False, encipher_only=False, decipher_only=False)


def sign_envelope(envelope: Mapping[str, Any], key: rsa.RSAPrivateKey, *, cert_url: str,
                  version: str = "2") -> dict[str, Any]:
    """A copy of ``envelope`` signed as SNS would: SignatureVersion, SigningCertURL and a
    base64 Signature over the string to sign (SHA1 for "1", SHA256 otherwise)."""
    signed = {k: v for k, v in envelope.items() if k not in ("Signature", "SignatureVersion", "SigningCertURL")}
    signed |= {"SignatureVersion": version, "SigningCertURL": cert_url}
    text = "".join(f"{k}\n{signed[k]}\n" for k in _SIGNED_KEYS.get(signed["Type"], ()) if k in signed)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signed["Signature"] = base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), digest)).decode()
    return signed


def sns_timestamp(moment: datetime.datetime) -> str:
    """``moment`` as SNS writes a Timestamp: ISO 8601 in UTC with milliseconds and a Z."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sent_at(moment: datetime.datetime = SENT_AT) -> Callable[[], datetime.datetime]:
    """A verifier's clock that always reads ``moment``."""
    return lambda: moment


def notification(topic: str, message: str = '{"notificationType":"Bounce"}', *, subject: str | None = None,
                 message_id: str = "7c1d2c0e-0000-4000-8000-000000000001",
                 timestamp: str = sns_timestamp(SENT_AT)) -> dict[str, Any]:
    """An unsigned Notification envelope in SNS's shape."""
    envelope = {"Type": "Notification", "MessageId": message_id, "TopicArn": topic, "Message": message,
                "Timestamp": timestamp,
                "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x"}
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def confirmation(topic: str, subscribe_url: str, *, kind: str = "SubscriptionConfirmation",
                 timestamp: str = "2026-03-01T10:00:00.000Z") -> dict[str, Any]:
    """An unsigned SubscriptionConfirmation (or UnsubscribeConfirmation) envelope."""
    return {"Type": kind, "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b", "Token": "2336412f37fb687f",
            "TopicArn": topic, "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm ...",
            "SubscribeURL": subscribe_url, "Timestamp": timestamp}


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True

    def __init__(self, owner: SnsHttpsServer, context: ssl.SSLContext) -> None:
        self.owner = owner
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket, Any]:
        sock, address = self.socket.accept()
        self.owner._record_connection()
        sock.settimeout(10)
        # the handshake happens here; a failure (the client refused our certificate) is an
        # OSError, which socketserver drops along with the connection
        return self.context.wrap_socket(sock, server_side=True), address


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        owner = self.server.owner
        owner._record_request(self.path)
        path = self.path.split("?", 1)[0]
        if path == CERT_PATH:
            self._answer(200, owner.pki.signing_pem, "application/x-pem-file")
        elif path == CONFIRM_PATH:
            self._answer(200, _CONFIRM_ANSWER, "text/xml")
        elif path == HUGE_PATH:
            # a valid certificate, then a megabyte of padding: only the size cap refuses it
            self._answer(200, owner.pki.signing_pem + b"\n" + b"#" * (1024 * 1024), "application/x-pem-file")
        elif path == REDIRECT_PATH:
            self.send_response(302)
            self.send_header("Location", CERT_PATH)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == NOT_PEM_PATH:
            self._answer(200, b"<html>not a certificate</html>", "text/html")
        else:
            self._answer(404, b"not found", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client stopped reading (the fetcher's size cap)
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- http.server's signature
        pass


_CONFIRM_ANSWER = b"""<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">
  <ConfirmSubscriptionResult>
    <SubscriptionArn>arn:aws:sns:eu-west-1:111122223333:ses-feedback:0c1d2c0e</SubscriptionArn>
  </ConfirmSubscriptionResult>
  <ResponseMetadata><RequestId>0c1d2c0e-0000-4000-8000-000000000002</RequestId></ResponseMetadata>
</ConfirmSubscriptionResponse>
"""


class SnsHttpsServer:
    """HTTPS on 127.0.0.1:<port 0> for the life of a ``with`` block, which yields the base URL
    ``https://localhost:<port>``. It serves ``pki``'s signing certificate at CERT_PATH and
    answers CONFIRM_PATH with a ConfirmSubscription XML body. TLS presents the certificate
    of ``tls_pki`` (default: ``pki``), so a test can serve from an untrusted CA.

    Requests are recorded before the answer is written, so they are visible as soon as the
    client's (synchronous) fetch has returned.
    """

    def __init__(self, pki: SnsPki, *, tls_pki: SnsPki | None = None) -> None:
        self.pki = pki
        tls = tls_pki or pki
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(tls.server_cert_path, tls.server_key_path)
        self._lock = threading.Lock()
        self._connections = 0
        self._requests: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def __enter__(self) -> str:
        self._server = _Server(self, self._context)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sns-https-server")
        self._thread.start()
        self.base_url = f"https://localhost:{self._server.server_address[1]}"
        return self.base_url

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()

    @property
    def cert_url(self) -> str:
        return self.base_url + CERT_PATH

    def url(self, path: str) -> str:
        return self.base_url + path

    def connections(self) -> int:
        with self._lock:
            return self._connections

    def requests(self) -> list[str]:
        """Paths (with query) of every GET, in order."""
        with self._lock:
            return list(self._requests)

    def cert_fetches(self) -> int:
        return sum(1 for path in self.requests() if path == CERT_PATH)

    def confirmations(self) -> list[str]:
        return [path for path in self.requests() if path.split("?", 1)[0] == CONFIRM_PATH]

    def _record_connection(self) -> None:
        with self._lock:
            self._connections += 1

    def _record_request(self, path: str) -> None:
        with self._lock:
            self._requests.append(path)
