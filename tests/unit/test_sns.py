"""SNS envelope parsing, the string to sign, URL checks, and signature verification over
envelopes signed here with a generated key (tests/support/sns_signing.py) and, when the
corpus is present, over the real fixtures of the shared corpus. Nothing here touches the
network: certificates are pinned, and refused URLs are refused before any fetch (the
loopback tests in tests/integration/test_sns.py prove that part with a server that counts
connections). Tests taking ``source`` run on both: "generated" always, the corpus's
"rails" fixtures only when the corpus is there (marked corpus)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.conftest import corpus_dir
from tests.support.sns_signing import (
    SENT_AT,
    SnsPki,
    confirmation,
    notification,
    sent_at,
    sign_envelope,
    sns_timestamp,
)
from waypost.feedback.sns import (
    DEFAULT_CERT_HOST_PATTERN,
    MAX_ENVELOPE_BYTES,
    CertificateFetcher,
    SnsEndpoint,
    SnsOutcome,
    SnsRejected,
    SnsResult,
    SnsVerifier,
    parse_envelope,
    string_to_sign,
)
from waypost.web.app import sns_response

TOPIC = "arn:aws:sns:eu-west-1:111122223333:ses-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-5f0c1e2d3a4b.pem"
SUBSCRIBE_URL = f"https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f"
SOURCES = ["generated", pytest.param("rails", marks=pytest.mark.corpus)]




def ses_file(name: str) -> Path:
    return corpus_dir() / "ses" / name


def rails_certificate() -> bytes:
    return ses_file("rails_amazon_certificate.pem").read_bytes()


def pinned_verifier(envelope: dict[str, Any], topics: list[str], pem: bytes | None = None) -> SnsVerifier:
    """A verifier whose fetcher holds ``pem`` (default: the Rails test certificate) for the
    envelope's own URL, and whose clock reads the envelope's own Timestamp: the corpus
    fixtures are years old, and age is not what these tests are about."""
    fetcher = CertificateFetcher(pinned={envelope["SigningCertURL"]: pem or rails_certificate()})
    return SnsVerifier(fetcher, topics, clock=sent_at(datetime.fromisoformat(envelope["Timestamp"])))


def received(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope as the endpoint gets it: JSON bytes, parsed again."""
    return parse_envelope(json.dumps(envelope).encode())


@dataclass(frozen=True)
class Signed:
    """A validly signed envelope and the certificate that verifies it."""

    envelope: dict[str, Any]
    pem: bytes

    def verifier(self, topics: list[str] | None = None) -> SnsVerifier:
        return pinned_verifier(self.envelope, [self.envelope["TopicArn"]] if topics is None else topics, self.pem)


@pytest.fixture(params=SOURCES)
def signed_confirmation(request: pytest.FixtureRequest, pki: SnsPki) -> Signed:
    """A SubscriptionConfirmation signed with version 1: ours, or the Rails fixture."""
    if request.param == "rails":
        return Signed(parse_envelope(ses_file("rails_amazon_valid_signature.json").read_bytes()), rails_certificate())
    envelope = sign_envelope(confirmation(TOPIC, SUBSCRIBE_URL), pki.signing_key, cert_url=CERT_URL, version="1")
    return Signed(received(envelope), pki.signing_pem)


@pytest.fixture(params=SOURCES)
def signing_pem(request: pytest.FixtureRequest, pki: SnsPki) -> bytes:
    return rails_certificate() if request.param == "rails" else pki.signing_pem


def rejection(call: Any, *args: Any) -> str:
    with pytest.raises(SnsRejected) as caught:
        call(*args)
    return caught.value.reason


# --- the string to sign --------------------------------------------------------------------

def test_string_to_sign_notification_without_subject() -> None:
    envelope = {"Type": "Notification", "MessageId": "m-1", "TopicArn": TOPIC, "Message": "hello",
                "Timestamp": "2026-03-01T10:00:00.000Z", "SignatureVersion": "2", "Signature": "c2ln",
                "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/x.pem",
                "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
                "MessageAttributes": {"a": {"Type": "String", "Value": "b"}}}

    assert string_to_sign(envelope) == (
        "Message\nhello\nMessageId\nm-1\nTimestamp\n2026-03-01T10:00:00.000Z\n"
        f"TopicArn\n{TOPIC}\nType\nNotification\n")


def test_string_to_sign_notification_with_subject_between_message_id_and_timestamp() -> None:
    envelope = {"Type": "Notification", "MessageId": "m-1", "TopicArn": TOPIC, "Message": "hello",
                "Subject": "Hi", "Timestamp": "t"}

    assert string_to_sign(envelope) == (
        f"Message\nhello\nMessageId\nm-1\nSubject\nHi\nTimestamp\nt\nTopicArn\n{TOPIC}\nType\nNotification\n")
    # Lambda events carry "Subject": null when there was none: the same as absent
    assert string_to_sign(envelope | {"Subject": None}) == string_to_sign(
        {k: v for k, v in envelope.items() if k != "Subject"})


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_string_to_sign_confirmations(kind: str) -> None:
    envelope = {"Type": kind, "MessageId": "m", "Token": "tok", "TopicArn": TOPIC, "Message": "msg",
                "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
                "Timestamp": "t", "Subject": "not signed for confirmations"}

    assert string_to_sign(envelope) == (
        "Message\nmsg\nMessageId\nm\n"
        "SubscribeURL\nhttps://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription\n"
        f"Timestamp\nt\nToken\ntok\nTopicArn\n{TOPIC}\nType\n{kind}\n")


@pytest.mark.parametrize("kind", [None, "Bogus", "notification", ["Notification"]])
def test_string_to_sign_refuses_other_types(kind: Any) -> None:
    assert rejection(string_to_sign, {"Type": kind, "Message": "m"}) == "unsupported-type"


@pytest.mark.corpus
def test_escaped_newline_in_the_message_is_signed_as_a_newline() -> None:
    """REFERENCE-SES.md §2 step 1: JSON escapes are decoded before signing (Relay's capture
    of a real SubscriptionConfirmation has "\\n" in its Message)."""
    body = ses_file("relay_subscription_confirmation_invalid_sns_body.json").read_bytes()
    envelope = parse_envelope(body)

    assert b"\\nTo confirm" in body
    assert "dev-relay-2022-04.\nTo confirm the subscription" in string_to_sign(envelope)


def test_generated_escaped_newline_is_signed_and_verified_as_a_newline(pki: SnsPki) -> None:
    message = f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the URL."
    envelope = sign_envelope(confirmation(TOPIC, SUBSCRIBE_URL) | {"Message": message}, pki.signing_key,
                             cert_url=CERT_URL, version="1")
    body = json.dumps(envelope).encode()

    parsed = parse_envelope(body)

    assert b"ses-feedback.\\nTo confirm" in body  # the JSON carries the escape, not the newline
    assert "ses-feedback.\nTo confirm the subscription" in string_to_sign(parsed)
    pinned_verifier(parsed, [TOPIC], pki.signing_pem).verify(parsed)


def test_a_signature_over_the_escaped_text_is_refused(pki: SnsPki) -> None:
    """Whoever signs the two characters backslash-n signed other text than SNS delivers."""
    message = "first line\nsecond line"
    escaped = sign_envelope(notification(TOPIC, message.replace("\n", "\\n")), pki.signing_key, cert_url=CERT_URL)
    delivered = received(escaped | {"Message": message})

    assert rejection(pinned_verifier(delivered, [TOPIC], pki.signing_pem).verify, delivered) == "bad-signature"


# --- parsing -------------------------------------------------------------------------------

@pytest.mark.corpus
def test_lambda_key_spellings_are_renamed() -> None:
    envelope = parse_envelope(ses_file("sns_ruby_lambda_message.json").read_bytes())

    assert envelope["SigningCertURL"] == (
        "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem")
    assert envelope["UnsubscribeURL"].startswith("https://sns.us-east-2.amazonaws.com/?Action=Unsubscribe")
    assert "SigningCertUrl" not in envelope and "UnsubscribeUrl" not in envelope
    assert parse_envelope(json.dumps({"Type": "SubscriptionConfirmation", "SubscribeUrl": "u"}).encode()) == {
        "Type": "SubscriptionConfirmation", "SubscribeURL": "u"}


@pytest.mark.parametrize("version", ["1", "2"])
def test_generated_lambda_key_spellings_are_renamed_and_still_verify(pki: SnsPki, version: str) -> None:
    envelope = sign_envelope(notification(TOPIC, "Hello from a Lambda event"), pki.signing_key, cert_url=CERT_URL,
                             version=version)
    lambda_style = {{"SigningCertURL": "SigningCertUrl", "UnsubscribeURL": "UnsubscribeUrl"}.get(k, k): v
                    for k, v in envelope.items()}
    assert "SigningCertURL" not in lambda_style and "SigningCertUrl" in lambda_style

    parsed = received(lambda_style)

    assert parsed == envelope
    pinned_verifier(parsed, [TOPIC], pki.signing_pem).verify(parsed)


@pytest.mark.parametrize("body", [
    pytest.param(b"", id="empty"),
    pytest.param(b"Type=Notification", id="not-json"),
    pytest.param(b'["Notification"]', id="array"),
    pytest.param(b'"Notification"', id="string"),
    pytest.param(b'{"Type": "Notification", "Message": "\xff"}', id="not-utf8"),
    pytest.param(b'{"Type": "Notification", "Message": {"not": "a string"}}', id="message-object"),
    pytest.param(b'{"Type": "Notification", "SignatureVersion": 1}', id="version-number"),
    pytest.param(b'{"Type": "Notification", "Type": "SubscriptionConfirmation"}', id="duplicate-key"),
    pytest.param(b'{"SigningCertUrl": "a", "SigningCertURL": "b"}', id="both-spellings"),
    pytest.param(b'{"a":' * 60_000 + b"1" + b"}" * 60_000, id="deeply-nested"),
])
def test_parse_refuses_what_is_not_an_envelope(body: bytes) -> None:
    assert rejection(parse_envelope, body) == "bad-json"


def test_parse_refuses_oversized_bodies() -> None:
    body = json.dumps({"Type": "Notification", "Message": "x" * MAX_ENVELOPE_BYTES}).encode()

    assert rejection(parse_envelope, body) == "too-large"


def test_parse_accepts_an_envelope_with_a_256_kb_message() -> None:
    ses_like = json.dumps({"content": "\"quoted\" " * (256 * 1024 // 12)})  # quotes grow when escaped again

    assert parse_envelope(json.dumps({"Type": "Notification", "Message": ses_like}).encode())["Message"] == ses_like


# --- certificate URLs with the real host pattern -------------------------------------------

@pytest.mark.parametrize("url", [
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-a86cb10b4e1f29c941702d737128f7b6.pem",
    "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem",
    "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://SNS.EU-WEST-1.AMAZONAWS.COM/SimpleNotificationService-x.pem",
])
def test_default_pattern_accepts_sns_hosts(url: str, signing_pem: bytes) -> None:
    fetcher = CertificateFetcher(pinned={url: signing_pem})  # pinned: no fetch

    assert fetcher.certificate(url) == x509.load_pem_x509_certificate(signing_pem)


@pytest.mark.corpus
def test_the_rails_certificate_is_the_one_pinned() -> None:
    url = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem"
    fetcher = CertificateFetcher(pinned={url: rails_certificate()})

    assert fetcher.certificate(url).subject.rfc4514_string() == "CN=Ruby certificate,DC=ruby-lang,DC=org"


@pytest.mark.parametrize("url", [
    "https://evil.example/x.pem",
    "http://sns.eu-west-1.amazonaws.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com/x",
    "https://sns.eu-west-1.amazonaws.com/x.pem/",
    "https://sns.eu-west-1.amazonaws.com.evil.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com./x.pem",
    "https://sns.eu-west-1.amazonaws.com@evil.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com:443@evil.com/x.pem",
    "https://user@sns.eu-west-1.amazonaws.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com\\@evil.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com%2eevil.com/x.pem",
    "https://evil.com#@sns.eu-west-1.amazonaws.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com:notaport/x.pem",
    "https://sns.ab.amazonaws.com/x.pem",  # region part shorter than 3
    "https://s3.amazonaws.com/x.pem",
    "https://bucket.s3.amazonaws.com/sns.eu-west-1.amazonaws.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com\n.evil.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com\u3002evil.com/x.pem",
    "//sns.eu-west-1.amazonaws.com/x.pem",
    "file:///etc/ssl/certs/sns.pem",
    "",
])
def test_default_pattern_refuses_other_urls(url: str) -> None:
    assert rejection(CertificateFetcher().certificate, url) == "cert-url"


def test_host_pattern_must_match_the_whole_host() -> None:
    fetcher = CertificateFetcher(host_pattern=r"sns\.example")  # unanchored on purpose

    assert rejection(fetcher.certificate, "https://sns.example.evil.com/x.pem") == "cert-url"
    assert rejection(fetcher.certificate, "https://evil-sns.example/x.pem") == "cert-url"


def test_subscribe_url_gets_the_same_host_check() -> None:
    fetcher = CertificateFetcher()

    assert rejection(fetcher.get_text, "https://169.254.169.254/latest/meta-data/") == "subscribe-url"
    assert rejection(fetcher.get_text, "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription") == (
        "subscribe-url")


def test_pins_are_checked_at_construction(signing_pem: bytes) -> None:
    with pytest.raises(ValueError, match="pinned"):
        CertificateFetcher(pinned={"https://evil.example/x.pem": signing_pem})
    with pytest.raises(ValueError):
        CertificateFetcher(pinned={"https://sns.eu-west-1.amazonaws.com/x.pem": b"not a certificate"})


# --- verification over the corpus ----------------------------------------------------------

def signed_rails_records() -> list[dict[str, Any]]:
    with (corpus_dir() / "manifest.jsonl").open(encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if "signature_valid_with_test_cert" in r]


@pytest.mark.corpus
def test_rails_fixtures_verify_as_the_manifest_says() -> None:
    records = signed_rails_records()
    assert len(records) >= 4, "the manifest lost its signed Rails fixtures"
    outcomes = {}
    for record in records:
        envelope = parse_envelope((corpus_dir() / record["file"]).read_bytes())
        verifier = pinned_verifier(envelope, [envelope["TopicArn"]])
        try:
            verifier.verify(envelope)
            outcomes[record["file"]] = True
        except SnsRejected as err:
            assert err.reason == "bad-signature", f"{record['file']}: {err}"
            outcomes[record["file"]] = False

    assert outcomes == {r["file"]: r["signature_valid_with_test_cert"] for r in records}
    assert True in outcomes.values() and False in outcomes.values()


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("envelope", [
    pytest.param(notification(TOPIC), id="notification"),
    pytest.param(notification(TOPIC, subject="Amazon SES Email Event Notification"), id="notification-subject"),
    pytest.param(confirmation(TOPIC, SUBSCRIBE_URL), id="subscription-confirmation"),
    pytest.param(confirmation(TOPIC, SUBSCRIBE_URL, kind="UnsubscribeConfirmation"), id="unsubscribe-confirmation"),
])
def test_generated_envelopes_verify(pki: SnsPki, envelope: dict[str, Any], version: str) -> None:
    signed = received(sign_envelope(envelope, pki.signing_key, cert_url=CERT_URL, version=version))

    pinned_verifier(signed, [TOPIC], pki.signing_pem).verify(signed)  # raises when refused


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_envelope_signed_by_another_key_is_refused(pki: SnsPki, rogue_pki: SnsPki, version: str) -> None:
    forged = received(sign_envelope(notification(TOPIC), rogue_pki.signing_key, cert_url=CERT_URL, version=version))

    assert rejection(pinned_verifier(forged, [TOPIC], pki.signing_pem).verify, forged) == "bad-signature"


def test_a_version_2_signature_relabelled_as_version_1_is_refused(pki: SnsPki) -> None:
    signed = received(sign_envelope(notification(TOPIC), pki.signing_key, cert_url=CERT_URL, version="2"))
    verifier = pinned_verifier(signed, [TOPIC], pki.signing_pem)
    verifier.verify(signed)

    assert rejection(verifier.verify, signed | {"SignatureVersion": "1"}) == "bad-signature"


def test_unrecognized_topic_is_not_allowed(signed_confirmation: Signed) -> None:
    verifier = signed_confirmation.verifier(["arn:aws:sns:eu-west-1:111111111111:recognized-topic"])

    assert rejection(verifier.verify, signed_confirmation.envelope) == "topic-not-allowed"


@pytest.mark.corpus
def test_rails_unrecognized_topic_is_not_allowed() -> None:
    envelope = parse_envelope(ses_file("rails_amazon_unrecognized_topic_subscription_request.json").read_bytes())
    verifier = pinned_verifier(envelope, ["arn:aws:sns:eu-west-1:111111111111:recognized-topic"])

    assert rejection(verifier.verify, envelope) == "topic-not-allowed"


def test_empty_allow_list_refuses_a_valid_signature(signed_confirmation: Signed) -> None:
    signed_confirmation.verifier().verify(signed_confirmation.envelope)  # valid for its own topic

    assert rejection(signed_confirmation.verifier([]).verify, signed_confirmation.envelope) == "topic-not-allowed"


@pytest.mark.parametrize("change", [
    {"Token": "abc123"},
    {"SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=other"},
    {"Message": "You have chosen to subscribe."},
    {"SignatureVersion": "2"},  # not signed itself, but it picks the hash: SHA256 over a SHA1 signature
    {"Signature": "bm90IGEgc2lnbmF0dXJl"},
    {"Signature": "not base64!"},
])
def test_valid_confirmation_tampered_is_refused(signed_confirmation: Signed, change: dict[str, str]) -> None:
    envelope = signed_confirmation.envelope
    verifier = signed_confirmation.verifier()
    verifier.verify(envelope)  # as found: valid
    assert any(envelope.get(key) != value for key, value in change.items())  # a change indeed

    assert rejection(verifier.verify, envelope | change) == "bad-signature"


@pytest.mark.parametrize("field", ["Signature", "SigningCertURL", "SignatureVersion", "Token", "MessageId",
                                   "SubscribeURL", "Timestamp", "Message"])
def test_missing_fields_are_refused(signed_confirmation: Signed, field: str) -> None:
    envelope = signed_confirmation.envelope
    verifier = signed_confirmation.verifier()
    assert field in envelope

    assert rejection(verifier.verify, {k: v for k, v in envelope.items() if k != field}) == "missing-field"


@pytest.mark.parametrize("field", ["MessageId", "Message", "Timestamp", "Signature"])
def test_missing_fields_of_a_notification_are_refused(pki: SnsPki, field: str) -> None:
    signed = received(sign_envelope(notification(TOPIC), pki.signing_key, cert_url=CERT_URL))
    verifier = pinned_verifier(signed, [TOPIC], pki.signing_pem)

    assert rejection(verifier.verify, {k: v for k, v in signed.items() if k != field}) == "missing-field"


# --- how old a signed message may be ----------------------------------------------------------

def signed_at(pki: SnsPki, moment: datetime, *, kind: str = "Notification") -> dict[str, Any]:
    stamp = sns_timestamp(moment)
    unsigned = (notification(TOPIC, timestamp=stamp) if kind == "Notification"
                else confirmation(TOPIC, SUBSCRIBE_URL, kind=kind, timestamp=stamp))
    return received(sign_envelope(unsigned, pki.signing_key, cert_url=CERT_URL))


def verifier_at(pki: SnsPki, now: datetime, **age: Any) -> SnsVerifier:
    return SnsVerifier(CertificateFetcher(pinned={CERT_URL: pki.signing_pem}), [TOPIC], clock=sent_at(now), **age)


@pytest.mark.parametrize("kind", ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"])
@pytest.mark.parametrize(("age", "reason"), [
    (timedelta(0), None),
    (timedelta(minutes=65), None),  # SNS's hour of retries, plus five minutes of clock skew
    (timedelta(minutes=65, milliseconds=1), "too-old"),
    (timedelta(days=3 * 365), "too-old"),  # a recorded message replayed years later
    (-timedelta(minutes=5), None),  # our clock five minutes behind AWS's
    (-timedelta(minutes=5, milliseconds=1), "from-the-future"),
])
def test_a_signed_message_must_be_recent_by_default(pki: SnsPki, kind: str, age: timedelta,
                                                     reason: str | None) -> None:
    envelope = signed_at(pki, SENT_AT, kind=kind)
    verifier = verifier_at(pki, SENT_AT + age)
    if reason is None:
        verifier.verify(envelope)
    else:
        assert rejection(verifier.verify, envelope) == reason


def test_the_maximum_age_is_configurable_and_none_turns_the_check_off(pki: SnsPki) -> None:
    envelope = signed_at(pki, SENT_AT)
    assert rejection(verifier_at(pki, SENT_AT + timedelta(minutes=16), max_age=timedelta(minutes=10)).verify,
                     envelope) == "too-old"
    verifier_at(pki, SENT_AT + timedelta(minutes=15), max_age=timedelta(minutes=10)).verify(envelope)
    verifier_at(pki, SENT_AT + timedelta(days=3 * 365), max_age=None).verify(envelope)


def test_age_is_judged_only_after_the_signature(pki: SnsPki, rogue_pki: SnsPki) -> None:
    """A forged old message is reported as forged; an unreadable Timestamp that verifies is refused."""
    forged = received(sign_envelope(notification(TOPIC), rogue_pki.signing_key, cert_url=CERT_URL))
    assert rejection(verifier_at(pki, SENT_AT + timedelta(days=365)).verify, forged) == "bad-signature"
    unreadable = received(sign_envelope(notification(TOPIC, timestamp="yesterday"), pki.signing_key,
                                        cert_url=CERT_URL))
    assert rejection(verifier_at(pki, SENT_AT).verify, unreadable) == "bad-timestamp"


def test_a_message_signed_long_ago_is_refused_by_the_endpoint_with_its_reason(pki: SnsPki) -> None:
    """With the default clock (now): a Notification signed three years before this run."""
    delivered: list[str] = []
    fetcher = CertificateFetcher(pinned={CERT_URL: pki.signing_pem})
    endpoint = SnsEndpoint(SnsVerifier(fetcher, [TOPIC]), fetcher, lambda message, _: delivered.append(message))
    stale = sign_envelope(notification(TOPIC, timestamp=sns_timestamp(datetime.now(UTC) - timedelta(days=3 * 365))),
                          pki.signing_key, cert_url=CERT_URL)
    fresh = sign_envelope(notification(TOPIC, "fresh", timestamp=sns_timestamp(datetime.now(UTC))),
                          pki.signing_key, cert_url=CERT_URL)

    assert endpoint.handle({}, json.dumps(stale).encode()) == SnsOutcome(SnsResult.REFUSED, "too-old")
    assert endpoint.handle({}, json.dumps(fresh).encode()) == SnsOutcome(SnsResult.APPLIED)
    assert delivered == ["fresh"]


@pytest.mark.corpus
def test_the_rails_fixture_signed_in_2020_is_refused_today() -> None:
    envelope = parse_envelope(ses_file("rails_amazon_valid_signature.json").read_bytes())
    pinned_verifier(envelope, [envelope["TopicArn"]]).verify(envelope)  # it does verify: only age refuses it
    fetcher = CertificateFetcher(pinned={envelope["SigningCertURL"]: rails_certificate()})
    assert rejection(SnsVerifier(fetcher, [envelope["TopicArn"]]).verify, envelope) == "too-old"


# --- the AWS documentation examples --------------------------------------------------------

def http_example(name: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a captured ``.http`` request (request line, headers, blank line, body)."""
    head, _, body = ses_file(name).read_bytes().replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = head.decode("ascii").split("\n")[1:]
    headers = dict(line.split(": ", 1) for line in lines)
    return headers, body


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["sns_doc_notification.http", "sns_doc_unsubscribe_confirmation.http"])
def test_documentation_examples_are_never_accepted(name: str) -> None:
    headers, body = http_example(name)
    envelope = parse_envelope(body)
    # the doc's certificate is not in the corpus; pin a real certificate at its URL so the
    # check reaches the signature without the network ("EXAMPLEw6JRN..." is no signature)
    fetcher = CertificateFetcher(pinned={envelope["SigningCertURL"]: rails_certificate()})
    delivered: list[str] = []
    endpoint = SnsEndpoint(SnsVerifier(fetcher, [headers["x-amz-sns-topic-arn"]]), fetcher,
                           lambda message, _: delivered.append(message))

    assert headers["x-amz-sns-message-type"] == envelope["Type"]
    assert endpoint.handle(headers, body) == SnsOutcome(SnsResult.REFUSED, "bad-signature")
    assert delivered == []


DOC_TOPIC = "arn:aws:sns:us-west-2:123456789012:ExampleTopic"
DOC_CERT_URL = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"


def documentation_style(kind: str) -> tuple[dict[str, str], bytes]:
    """An HTTP POST shaped like the examples in AWS's SNS documentation: plausible headers and
    fields, a placeholder where the signature goes."""
    if kind == "Notification":
        envelope = notification(DOC_TOPIC, "Hello world!", subject="My First Message")
    else:
        envelope = confirmation(DOC_TOPIC, "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
                                kind=kind)
    envelope |= {"SignatureVersion": "1", "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0Q",
                 "SigningCertURL": DOC_CERT_URL}
    headers = {"x-amz-sns-message-type": kind, "x-amz-sns-message-id": envelope["MessageId"],
               "x-amz-sns-topic-arn": DOC_TOPIC, "Content-Type": "text/plain; charset=UTF-8",
               "User-Agent": "Amazon Simple Notification Service Agent"}
    return headers, json.dumps(envelope, indent=2).encode()


@pytest.mark.parametrize("kind", ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_documentation_style_examples_are_never_accepted(pki: SnsPki, kind: str) -> None:
    headers, body = documentation_style(kind)
    # a real certificate pinned at the example's URL: the check reaches the signature
    fetcher = CertificateFetcher(pinned={DOC_CERT_URL: pki.signing_pem})
    delivered: list[str] = []
    endpoint = SnsEndpoint(SnsVerifier(fetcher, [DOC_TOPIC]), fetcher, lambda message, _: delivered.append(message))

    assert endpoint.handle(headers, body) == SnsOutcome(SnsResult.REFUSED, "bad-signature")
    assert delivered == []


def test_the_same_example_signed_for_real_is_accepted(pki: SnsPki) -> None:
    """The counter-check: only the placeholder signature made the example fail."""
    headers, body = documentation_style("Notification")
    resigned = sign_envelope(json.loads(body), pki.signing_key, cert_url=DOC_CERT_URL, version="1")
    fetcher = CertificateFetcher(pinned={DOC_CERT_URL: pki.signing_pem})
    delivered: list[str] = []
    endpoint = SnsEndpoint(SnsVerifier(fetcher, [DOC_TOPIC], clock=sent_at()), fetcher,
                           lambda message, _: delivered.append(message))

    assert endpoint.handle(headers, json.dumps(resigned).encode()) == SnsOutcome(SnsResult.APPLIED)
    assert delivered == ["Hello world!"]


def test_rejection_carries_reason_and_detail() -> None:
    err = SnsRejected("cert-url", "host not allowed")

    assert (err.reason, err.detail, str(err)) == ("cert-url", "host not allowed", "cert-url: host not allowed")
    assert DEFAULT_CERT_HOST_PATTERN == r"^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$"


# --- how the web layer answers ---------------------------------------------------------------

@pytest.mark.parametrize(("outcome", "status", "text"), [
    (SnsOutcome(SnsResult.APPLIED), 200, "ok"),
    (SnsOutcome(SnsResult.SUBSCRIBED), 200, "subscribed"),
    (SnsOutcome(SnsResult.NOTED), 200, "noted"),
    (SnsOutcome(SnsResult.REFUSED, "bad-signature"), 403, "bad-signature"),
    (SnsOutcome(SnsResult.REFUSED, "too-old"), 403, "too-old"),
    (SnsOutcome(SnsResult.RETRY_LATER, "cert-fetch"), 503, "cert-fetch"),
    (SnsOutcome(SnsResult.RETRY_LATER, "subscribe-fetch"), 503, "subscribe-fetch"),
    (SnsOutcome(SnsResult.REFUSED), 403, "forbidden"),  # every outcome has an answer, with or without a reason
    (SnsOutcome(SnsResult.RETRY_LATER), 503, "unavailable"),
])
def test_each_outcome_has_its_http_answer(outcome: SnsOutcome, status: int, text: str) -> None:
    """Only our own failed fetch asks SNS to retry (5xx); a refusal is final (403)."""
    response = sns_response(outcome)

    assert (response.status_code, bytes(response.body).decode()) == (status, text)
