"""Amazon SNS HTTP(S) delivery: prove a POSTed envelope came from SNS, then dispatch it.

Contract of ``SnsEndpoint.handle`` (the logic behind ``POST /hooks/sns``, without HTTP):
validate, then parse, then dispatch, and say what became of the POST as an ``SnsOutcome``.
A ``Notification`` reaches ``deliver`` only when its topic is allow-listed and its signature
verifies against a certificate fetched over verified HTTPS from an allow-listed host;
everything else is refused with a reason and logged at WARNING with the reason and TopicArn
(never the body). Framework-free: only the standard library and ``cryptography``; how an
outcome is answered over HTTP is for ``waypost.web`` to say.

Facts followed (docs: REFERENCE-SES.md §2; sources [SNS-VERIFY], [SNS-FMT], [PHP-VAL], [JS-VAL]):

* String to sign: for each key of the type's list, in this (byte) order, when present,
  ``Key + "\\n" + Value + "\\n"``. Notification: Message, MessageId, Subject, Timestamp,
  TopicArn, Type. SubscriptionConfirmation / UnsubscribeConfirmation: Message, MessageId,
  SubscribeURL, Timestamp, Token, TopicArn, Type. Values are the JSON-decoded strings.
* ``SignatureVersion`` "1" is SHA1withRSA, "2" is SHA256withRSA (RSA PKCS#1 v1.5); any
  other version is refused.
* ``SigningCertURL`` must be https, its path must end in ``.pem`` and its host must match
  ``^sns\\.[a-zA-Z0-9\\-]{3,}\\.amazonaws\\.com(\\.cn)?$`` (the pattern of AWS's PHP and JS
  validators). Like them, we do not check the signing certificate's expiry or chain: trust
  comes from fetching it over verified HTTPS from that host. Certificates are cached by URL.
* ``TopicArn`` is allow-listed too; AWS's validators do not check it. The topic is checked
  before any certificate is fetched, so strangers cannot make us fetch URLs.
* Lambda-style keys ``SigningCertUrl``, ``UnsubscribeUrl``, ``SubscribeUrl`` are renamed to
  the HTTP forms, as the PHP validator does.
* ``SubscribeURL`` is fetched only after the signature verifies and only on a host the
  certificate-host pattern allows, so the endpoint cannot be used as an SSRF relay.
* Raw message delivery (``x-amz-sns-rawdelivery: true``) carries no envelope and no
  signature [SNS-RAW]; it is refused.
* SNS messages are at most 256 KB [SNS-LARGE]; larger bodies are refused.
* ``Timestamp`` (ISO 8601, UTC, signed) must be at most ``max_age`` old and at most
  ``CLOCK_SKEW`` in the future, both with ``CLOCK_SKEW`` of slack for clocks that disagree.
  SNS stops retrying an HTTP(S) delivery after 3,600 s [SNS-RETRY], so a genuine delivery is
  never older than the default hour; anything older is a recorded message replayed, and a
  signature never expires by itself. Checked after the signature, so a forgery is reported
  as one.
"""

from __future__ import annotations

import base64
import binascii
import enum
import http.client
import json
import logging
import re
import ssl
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from waypost.clock import utcnow
from waypost.errors import WaypostError

log = logging.getLogger(__name__)

DEFAULT_CERT_HOST_PATTERN = r"^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$"
# SNS caps a message at 256 KB [SNS-LARGE]; in the envelope the Message is a JSON string
# whose escaping (quotes of an SES JSON document) makes it longer, hence the margin.
MAX_ENVELOPE_BYTES = 512 * 1024
MAX_FETCH_BYTES = 64 * 1024  # a PEM certificate or a ConfirmSubscription answer is a few KB
# SNS's total retry time for HTTP(S) is capped at 3,600 s [SNS-RETRY]: older is a replay
DEFAULT_MAX_AGE = timedelta(minutes=60)
CLOCK_SKEW = timedelta(minutes=5)  # our clock and AWS's may disagree by this much either way
MESSAGE_TYPE_HEADER = "x-amz-sns-message-type"
RAW_DELIVERY_HEADER = "x-amz-sns-rawdelivery"

_CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SIGNED_KEYS: Mapping[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION_KEYS,
    "UnsubscribeConfirmation": _CONFIRMATION_KEYS,
}
_SIGNATURE_KEYS = ("Signature", "SignatureVersion", "SigningCertURL")
_OPTIONAL_KEYS = frozenset({"Subject"})
_STRING_KEYS = frozenset({*SIGNED_KEYS["Notification"], *_CONFIRMATION_KEYS, *_SIGNATURE_KEYS, "UnsubscribeURL"})
_LAMBDA_KEYS = {"SigningCertUrl": "SigningCertURL", "UnsubscribeUrl": "UnsubscribeURL", "SubscribeUrl": "SubscribeURL"}
_HASHES: Mapping[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_SUBSCRIPTION_ARN = re.compile(r"<SubscriptionArn>([^<]{1,512})</SubscriptionArn>")


class SnsResult(enum.Enum):
    """What became of one POST."""

    APPLIED = "applied"  # a Notification was handed to ``deliver``
    SUBSCRIBED = "subscribed"  # a SubscriptionConfirmation was confirmed at its SubscribeURL
    NOTED = "noted"  # an UnsubscribeConfirmation was logged; nothing else happens
    REFUSED = "refused"  # not authentic, not for us, or malformed: sending it again cannot help
    RETRY_LATER = "retry-later"  # our own fetch failed, not their message: SNS should try again


@dataclass(frozen=True)
class SnsOutcome:
    """The result of ``SnsEndpoint.handle``; ``reason`` is the short machine word
    ("bad-signature", "cert-fetch", ...) of a REFUSED or RETRY_LATER outcome, else None."""

    result: SnsResult
    reason: str | None = None


class SnsRejected(WaypostError):
    """An SNS POST we refuse. ``reason`` is a short machine word ("bad-signature", ...)
    that the web layer may answer with; ``detail`` is for people and logs."""

    result: ClassVar[SnsResult] = SnsResult.REFUSED

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SnsFetchFailed(SnsRejected):
    """A certificate or SubscribeURL we could not fetch (network, TLS, an HTTP error, not a
    certificate): the fault may be ours or passing, so the POST is worth sending again."""

    result: ClassVar[SnsResult] = SnsResult.RETRY_LATER


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # a redirect would take us to a host nobody checked; a 3xx becomes an HTTPError instead
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class CertificateFetcher:
    """Fetches SNS signing certificates (and SubscribeURLs) over verified HTTPS.

    URLs must be https, carry no user info, and have a host that fully matches
    ``host_pattern``; certificate URLs must also end in ``.pem``. TLS verifies the server's
    certificate and host name against ``ca_path`` (None: the system trust store). No proxy
    is used, redirects are not followed, and bodies are capped at ``MAX_FETCH_BYTES``.
    Certificates are cached by URL (the newest ``cache_size``, thread-safe).

    ``pinned`` maps certificate URLs to PEM bytes that are used instead of fetching: for
    air-gapped installs, and for tests. A pinned URL must pass the URL checks, and a bad
    pin raises ``ValueError`` at construction (a configuration error, outside SnsRejected).

    Raises ``SnsRejected`` with reason "cert-url" / "subscribe-url" for a refused URL, and
    its subclass ``SnsFetchFailed`` with "cert-fetch" / "subscribe-fetch" when the fetch or
    the PEM parse fails.
    """

    def __init__(self, ca_path: Path | None = None, *, timeout: float = 10.0,
                 host_pattern: str = DEFAULT_CERT_HOST_PATTERN, pinned: Mapping[str, bytes] | None = None,
                 cache_size: int = 32) -> None:
        self._host = re.compile(host_pattern)
        self._timeout = timeout
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_tls_context(ca_path)),
            _RefuseRedirects())
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._pinned = {url: self._pin(url, pem) for url, pem in (pinned or {}).items()}

    def certificate(self, url: str) -> x509.Certificate:
        """The certificate at ``url``, from the pins, the cache, or a fetch."""
        self._check_url(url, reason="cert-url", suffix=".pem")
        cached = self._cached(url)
        if cached is not None:
            return cached
        body = self._get(url, reason="cert-fetch")
        try:
            certificate = x509.load_pem_x509_certificate(body)
        except ValueError as err:
            raise SnsFetchFailed("cert-fetch", f"{_where(url)} did not serve a PEM certificate") from err
        self._remember(url, certificate)
        return certificate

    def get_text(self, url: str) -> str:
        """GET ``url`` (same host check and TLS, any path) and return the body as text."""
        self._check_url(url, reason="subscribe-url", suffix=None)
        return self._get(url, reason="subscribe-fetch").decode("utf-8", "replace")

    def _pin(self, url: str, pem: bytes) -> x509.Certificate:
        try:
            self._check_url(url, reason="cert-url", suffix=".pem")
        except SnsRejected as err:
            raise ValueError(f"pinned SNS certificate URL refused: {err}") from err
        return x509.load_pem_x509_certificate(pem)

    def _check_url(self, url: str, *, reason: str, suffix: str | None) -> None:
        problem = self._url_problem(url, suffix)
        if problem is not None:
            raise SnsRejected(reason, f"{problem}: {str(url)[:200]!r}")

    def _url_problem(self, url: str, suffix: str | None) -> str | None:
        if not isinstance(url, str) or not url.isascii() or not url.isprintable() or " " in url:
            return "not a plain ASCII URL"
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a malformed port
        except ValueError:
            return "not a URL"
        if parts.scheme != "https":
            return "not https"
        if "@" in parts.netloc:
            return "user info in URL"
        if not self._host.fullmatch(parts.hostname or ""):
            return "host not allowed"
        if suffix is not None and not parts.path.endswith(suffix):
            return f"path does not end in {suffix}"
        return None

    def _cached(self, url: str) -> x509.Certificate | None:
        if url in self._pinned:
            return self._pinned[url]
        with self._lock:
            certificate = self._cache.get(url)
            if certificate is not None:
                self._cache.move_to_end(url)
            return certificate

    def _remember(self, url: str, certificate: x509.Certificate) -> None:
        with self._lock:
            self._cache[url] = certificate
            self._cache.move_to_end(url)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _get(self, url: str, *, reason: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": "waypost-sns"})
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                body: bytes = response.read(MAX_FETCH_BYTES + 1)
        except urllib.error.HTTPError as err:
            err.close()  # it holds the response open
            raise SnsFetchFailed(reason, f"GET {_where(url)} answered {err.code}") from err
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise SnsFetchFailed(reason, f"GET {_where(url)} failed: {err}") from err
        if len(body) > MAX_FETCH_BYTES:
            raise SnsFetchFailed(reason, f"GET {_where(url)} answered more than {MAX_FETCH_BYTES} bytes")
        return body


def _tls_context(ca_path: Path | None) -> ssl.SSLContext:
    # create_default_context: CERT_REQUIRED and check_hostname; a cafile replaces the system store
    context = ssl.create_default_context(cafile=str(ca_path) if ca_path is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _where(url: str) -> str:
    """The URL without its query: SubscribeURL queries carry the confirmation token."""
    return url.split("?", 1)[0][:200]


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The SNS envelope in ``body``: a JSON object of at most ``MAX_ENVELOPE_BYTES``, without
    duplicate keys, whose SNS fields are strings (or null), Lambda key spellings renamed.

    Raises ``SnsRejected`` ("too-large", "bad-json"). Does not verify anything.
    """
    if len(body) > MAX_ENVELOPE_BYTES:
        raise SnsRejected("too-large", f"body of {len(body)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        envelope = json.loads(body, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as err:
        raise SnsRejected("bad-json", f"body is not JSON: {err}") from err
    if not isinstance(envelope, dict):
        raise SnsRejected("bad-json", "body is not a JSON object")
    _rename_lambda_keys(envelope)
    wrong = sorted(key for key in _STRING_KEYS if envelope.get(key) is not None and not isinstance(envelope[key], str))
    if wrong:
        raise SnsRejected("bad-json", f"not strings: {', '.join(wrong)}")
    return envelope


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # two values for one key invite a parser differential between us and whoever signed
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate keys in a JSON object")
    return result


def _rename_lambda_keys(envelope: dict[str, Any]) -> None:
    for lambda_key, http_key in _LAMBDA_KEYS.items():
        if lambda_key not in envelope:
            continue
        if http_key in envelope:
            raise SnsRejected("bad-json", f"both {lambda_key} and {http_key}")
        envelope[http_key] = envelope.pop(lambda_key)


def string_to_sign(envelope: Mapping[str, Any]) -> str:
    """The text SNS signs for ``envelope`` (keys of its Type in byte order, absent or null
    keys skipped). Raises ``SnsRejected("unsupported-type")`` for any other Type."""
    message_type = envelope.get("Type")
    keys = SIGNED_KEYS.get(message_type) if isinstance(message_type, str) else None
    if keys is None:
        raise SnsRejected("unsupported-type", f"Type {str(message_type)[:40]!r}")
    return "".join(f"{key}\n{envelope[key]}\n" for key in keys if envelope.get(key) is not None)


class SnsVerifier:
    """Checks an envelope is signed by SNS for one of ``topic_arns`` (empty: none allowed) and
    is recent: at most ``max_age`` old (None: any age) by ``clock``, an aware UTC datetime."""

    def __init__(self, fetcher: CertificateFetcher, topic_arns: Collection[str], *,
                 max_age: timedelta | None = DEFAULT_MAX_AGE, clock: Callable[[], datetime] = utcnow) -> None:
        self._fetcher = fetcher
        self._topics = frozenset(topic_arns)
        self._max_age = max_age
        self._clock = clock

    def verify(self, envelope: Mapping[str, Any]) -> None:
        """Return if ``envelope`` (as ``parse_envelope`` returns it) is authentic and recent,
        else raise ``SnsRejected`` ("unsupported-type", "missing-field", "topic-not-allowed",
        "bad-signature-version", "cert-url", "cert-fetch", "bad-signature", "bad-timestamp",
        "too-old", "from-the-future"). Nothing is fetched for a topic not allow-listed."""
        self._verify_signature(envelope)
        if self._max_age is not None:
            _check_age(envelope["Timestamp"], self._clock(), self._max_age)

    def _verify_signature(self, envelope: Mapping[str, Any]) -> None:
        payload = string_to_sign(envelope).encode("utf-8")
        _require_fields(envelope)
        if envelope["TopicArn"] not in self._topics:
            raise SnsRejected("topic-not-allowed", f"TopicArn {envelope['TopicArn'][:200]!r}")
        algorithm = _HASHES.get(envelope["SignatureVersion"])
        if algorithm is None:
            raise SnsRejected("bad-signature-version", f"SignatureVersion {envelope['SignatureVersion'][:20]!r}")
        signature = _decode_signature(envelope["Signature"])
        public_key = self._fetcher.certificate(envelope["SigningCertURL"]).public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SnsRejected("bad-signature", "signing certificate does not hold an RSA key")
        try:
            public_key.verify(signature, payload, padding.PKCS1v15(), algorithm())
        except InvalidSignature as err:
            raise SnsRejected("bad-signature", "signature does not verify") from err


def _check_age(timestamp: str, now: datetime, max_age: timedelta) -> None:
    """Refuse a signed message sent too long ago, or too far ahead of ``now``."""
    sent = _parse_timestamp(timestamp)
    if now - sent > max_age + CLOCK_SKEW:
        raise SnsRejected("too-old", f"Timestamp {timestamp[:40]!r} is older than {max_age} (+{CLOCK_SKEW} skew)")
    if sent - now > CLOCK_SKEW:
        raise SnsRejected("from-the-future", f"Timestamp {timestamp[:40]!r} is over {CLOCK_SKEW} ahead of us")


def _parse_timestamp(timestamp: str) -> datetime:
    # SNS writes ISO 8601 in UTC ("2026-03-01T10:00:03.210Z"); one without a zone is taken as UTC
    try:
        sent = datetime.fromisoformat(timestamp)
    except ValueError as err:
        raise SnsRejected("bad-timestamp", f"Timestamp {timestamp[:40]!r} is not ISO 8601") from err
    return sent if sent.tzinfo is not None else sent.replace(tzinfo=UTC)


def _require_fields(envelope: Mapping[str, Any]) -> None:
    required = [*SIGNED_KEYS[envelope["Type"]], *_SIGNATURE_KEYS]
    missing = [key for key in required if key not in _OPTIONAL_KEYS and not envelope.get(key)]
    if missing:
        raise SnsRejected("missing-field", f"missing {', '.join(missing)}")


def _decode_signature(text: str) -> bytes:
    # not validate=True: real envelopes (the Rails fixtures) wrap the base64 with newlines
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError) as err:
        raise SnsRejected("bad-signature", "Signature is not base64") from err


class SnsEndpoint:
    """What ``POST /hooks/sns`` does, without HTTP: ``handle`` returns an ``SnsOutcome``.

    Notification: ``deliver(Message, envelope)``, then APPLIED. SubscriptionConfirmation: GET
    the SubscribeURL through the fetcher (host-checked), then SUBSCRIBED.
    UnsubscribeConfirmation: logged, NOTED; never re-subscribed. A refusal is REFUSED, or
    RETRY_LATER when only our fetch of the certificate or SubscribeURL failed; both carry the
    reason. An exception raised by ``deliver`` propagates unchanged: the caller must answer
    5xx so that SNS retries the delivery.
    """

    def __init__(self, verifier: SnsVerifier, fetcher: CertificateFetcher,
                 deliver: Callable[[str, dict[str, Any]], object]) -> None:
        self._verifier = verifier
        self._fetcher = fetcher
        self._deliver = deliver
        self._dispatch: Mapping[str, Callable[[dict[str, Any]], SnsOutcome]] = {
            "Notification": self._notification,
            "SubscriptionConfirmation": self._subscription,
            "UnsubscribeConfirmation": self._unsubscribed,
        }

    def handle(self, headers: Mapping[str, str], body: bytes) -> SnsOutcome:
        envelope: dict[str, Any] | None = None
        try:
            _refuse_raw_delivery(headers)
            envelope = parse_envelope(body)
            _check_type_header(headers, envelope)
            self._verifier.verify(envelope)
        except SnsRejected as err:
            return _rejected(err, envelope)
        return self._dispatch[envelope["Type"]](envelope)

    def _notification(self, envelope: dict[str, Any]) -> SnsOutcome:
        self._deliver(envelope["Message"], envelope)
        return SnsOutcome(SnsResult.APPLIED)

    def _subscription(self, envelope: dict[str, Any]) -> SnsOutcome:
        try:
            answer = self._fetcher.get_text(envelope["SubscribeURL"])
        except SnsRejected as err:
            return _rejected(err, envelope)
        found = _SUBSCRIPTION_ARN.search(answer)
        log.info("SNS subscription to %r confirmed (%s)", envelope["TopicArn"],
                 found.group(1) if found else "no SubscriptionArn in the answer")
        return SnsOutcome(SnsResult.SUBSCRIBED)

    def _unsubscribed(self, envelope: dict[str, Any]) -> SnsOutcome:
        # its SubscribeURL would re-subscribe; that is for an operator to decide, not us
        log.warning("SNS subscription to %r was deleted; feedback from it stops", envelope["TopicArn"])
        return SnsOutcome(SnsResult.NOTED)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value.strip()
    return None


def _refuse_raw_delivery(headers: Mapping[str, str]) -> None:
    if (_header(headers, RAW_DELIVERY_HEADER) or "").lower() == "true":
        raise SnsRejected("raw-delivery", "raw message delivery carries no signature; disable RawMessageDelivery")


def _check_type_header(headers: Mapping[str, str], envelope: Mapping[str, Any]) -> None:
    declared = _header(headers, MESSAGE_TYPE_HEADER)
    body_type = envelope.get("Type")
    if declared is not None and declared != body_type:
        raise SnsRejected("type-mismatch", f"header says {declared[:40]!r}, body says {str(body_type)[:40]!r}")


def _rejected(err: SnsRejected, envelope: Mapping[str, Any] | None) -> SnsOutcome:
    topic = envelope.get("TopicArn") if envelope is not None else None
    log.warning("SNS POST refused (%s): %s; TopicArn %r", err.reason, err.detail, str(topic)[:200] if topic else None)
    return SnsOutcome(err.result, err.reason)
