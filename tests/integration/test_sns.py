"""The SNS endpoint against a real HTTPS server on loopback: the signing certificate and the
SubscribeURL are fetched over TLS verified against a throwaway CA, and the server records
every connection, so "nothing was fetched" is checked, not assumed."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.sns_signing import (
    CERT_PATH,
    CONFIRM_PATH,
    HUGE_PATH,
    NOT_PEM_PATH,
    REDIRECT_PATH,
    SENT_AT,
    SnsHttpsServer,
    SnsPki,
    confirmation,
    notification,
    sent_at,
    sign_envelope,
)
from waypost import runtime as wiring
from waypost.feedback.sns import CertificateFetcher, SnsEndpoint, SnsOutcome, SnsRejected, SnsResult, SnsVerifier
from waypost.web.app import create_app

TOPIC = "arn:aws:sns:eu-west-1:111122223333:ses-feedback"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:111122223333:ses-events"  # also allowed
STRANGER_TOPIC = "arn:aws:sns:eu-west-1:999999999999:not-ours"
SES_JSON = '{"notificationType":"Bounce","bounce":{"bounceType":"Permanent"},"mail":{"messageId":"0102"}}'
APPLIED = SnsOutcome(SnsResult.APPLIED)


def refused(reason: str) -> SnsOutcome:
    return SnsOutcome(SnsResult.REFUSED, reason)


def retry_later(reason: str) -> SnsOutcome:
    return SnsOutcome(SnsResult.RETRY_LATER, reason)




@pytest.fixture
def server(pki: SnsPki) -> Iterator[SnsHttpsServer]:
    running = SnsHttpsServer(pki)
    with running as base_url:
        assert base_url == running.base_url and base_url.startswith("https://localhost:")
        yield running


class Hook:
    """An SnsEndpoint trusting only the test CA and the host "localhost"; records deliveries."""

    def __init__(self, pki: SnsPki, topics: tuple[str, ...] = (TOPIC, OTHER_TOPIC), *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.fetcher = CertificateFetcher(pki.ca_path, timeout=5, host_pattern=r"^localhost$")
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        # the clock reads the moment the test envelopes were sent, unless a test is about age
        self.endpoint = SnsEndpoint(SnsVerifier(self.fetcher, topics, clock=clock or sent_at()), self.fetcher,
                                    lambda message, envelope: self.delivered.append((message, envelope)))

    def post(self, envelope: dict[str, Any], headers: dict[str, str] | None = None) -> SnsOutcome:
        if headers is None:  # what SNS sends alongside the body
            headers = {"x-amz-sns-message-type": str(envelope.get("Type")),
                       "Content-Type": "text/plain; charset=UTF-8"}
        return self.endpoint.handle(headers, json.dumps(envelope).encode())


def signed(server: SnsHttpsServer, pki: SnsPki, envelope: dict[str, Any], *, version: str = "2",
           cert_url: str | None = None) -> dict[str, Any]:
    return sign_envelope(envelope, pki.signing_key, cert_url=cert_url or server.cert_url, version=version)


# --- notifications -------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [None, "Amazon SES Email Event Notification"])
def test_valid_notification_is_delivered_once(server: SnsHttpsServer, pki: SnsPki, version: str,
                                              subject: str | None) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, notification(TOPIC, SES_JSON, subject=subject), version=version)

    assert hook.post(envelope) == APPLIED

    assert [message for message, _ in hook.delivered] == [SES_JSON]
    assert hook.delivered[0][1]["MessageId"] == envelope["MessageId"]
    assert server.requests() == [CERT_PATH]


@pytest.mark.parametrize("change", [
    pytest.param({"Message": '{"notificationType":"Complaint"}'}, id="Message"),
    pytest.param({"MessageId": "7c1d2c0e-0000-4000-8000-000000000099"}, id="MessageId"),
    pytest.param({"Timestamp": "2026-03-01T10:00:04.210Z"}, id="Timestamp"),
    pytest.param({"Subject": "Changed"}, id="Subject"),
    pytest.param({"Subject": None}, id="Subject-removed"),
    pytest.param({"TopicArn": OTHER_TOPIC}, id="TopicArn-to-another-allowed-topic"),
])
@pytest.mark.parametrize("version", ["1", "2"])
def test_tampered_notification_is_refused(server: SnsHttpsServer, pki: SnsPki, change: dict[str, Any],
                                          version: str) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, notification(TOPIC, SES_JSON, subject="Original"), version=version)
    envelope |= change
    envelope = {k: v for k, v in envelope.items() if v is not None}

    assert hook.post(envelope) == refused("bad-signature")
    assert hook.delivered == []


def test_subject_added_after_signing_is_refused(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, notification(TOPIC, SES_JSON)) | {"Subject": "Injected"}

    assert hook.post(envelope) == refused("bad-signature")
    assert hook.delivered == []


def test_signature_version_relabelled_is_refused(server: SnsHttpsServer, pki: SnsPki) -> None:
    """SignatureVersion is not signed: a v1 (SHA1) signature relabelled "2" must not pass."""
    hook = Hook(pki)
    envelope = signed(server, pki, notification(TOPIC, SES_JSON), version="1") | {"SignatureVersion": "2"}

    assert hook.post(envelope) == refused("bad-signature")


@pytest.mark.parametrize("url_template", [
    pytest.param("https://evil.example/x.pem", id="other-host"),
    pytest.param("http://localhost:{port}" + CERT_PATH, id="http-scheme"),
    pytest.param("https://localhost:{port}/SimpleNotificationService-test", id="no-pem-suffix"),
    pytest.param("https://localhost:{port}/SimpleNotificationService-test.pem.txt", id="pem-not-at-end"),
    pytest.param("https://localhost.evil.example:{port}" + CERT_PATH, id="suffix-host"),
    pytest.param("https://evil.localhost:{port}" + CERT_PATH, id="prefix-host"),
    pytest.param("https://localhost:{port}@evil.example" + CERT_PATH, id="userinfo-points-elsewhere"),
    pytest.param("https://user:pw@localhost:{port}" + CERT_PATH, id="userinfo-on-allowed-host"),
    pytest.param("https://localhost\n:{port}" + CERT_PATH, id="newline-in-host"),
    pytest.param("https://127.0.0.1:{port}" + CERT_PATH, id="address-not-name"),
])
def test_cert_url_outside_the_pattern_is_never_fetched(server: SnsHttpsServer, pki: SnsPki,
                                                       url_template: str) -> None:
    hook = Hook(pki)
    port = server.base_url.rsplit(":", 1)[1]
    envelope = signed(server, pki, notification(TOPIC), cert_url=url_template.format(port=port))

    assert hook.post(envelope) == refused("cert-url")
    assert hook.delivered == []
    assert server.connections() == 0


def test_topic_not_allowed_is_refused_before_any_fetch(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)

    assert hook.post(signed(server, pki, notification(STRANGER_TOPIC))) == refused("topic-not-allowed")
    assert server.connections() == 0


def test_empty_topic_allow_list_allows_nothing(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki, topics=())

    assert hook.post(signed(server, pki, notification(TOPIC))) == refused("topic-not-allowed")
    assert server.connections() == 0


def test_signature_version_3_is_refused(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)

    assert hook.post(signed(server, pki, notification(TOPIC), version="3")) == refused("bad-signature-version")
    assert server.connections() == 0


def test_unsupported_type_is_refused(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, notification(TOPIC) | {"Type": "Bogus"})

    assert hook.post(envelope) == refused("unsupported-type")
    assert server.connections() == 0


@pytest.mark.parametrize("header", ["SubscriptionConfirmation", "UnsubscribeConfirmation", "notification"])
def test_type_header_disagreeing_with_the_body_is_refused(server: SnsHttpsServer, pki: SnsPki,
                                                          header: str) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, notification(TOPIC))

    assert hook.post(envelope, {"X-Amz-Sns-Message-Type": header}) == refused("type-mismatch")
    assert server.connections() == 0


def test_type_header_is_optional_and_case_insensitive(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, notification(TOPIC))

    assert hook.post(envelope, {}) == APPLIED
    assert hook.post(envelope, {"X-AMZ-SNS-MESSAGE-TYPE": "Notification"}) == APPLIED
    assert len(hook.delivered) == 2  # duplicates are for deliver to handle, by MessageId


def test_raw_delivery_is_refused(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    outcome = hook.endpoint.handle({"x-amz-sns-rawdelivery": "true"}, SES_JSON.encode())

    assert outcome == refused("raw-delivery")
    assert server.connections() == 0


def test_certificate_served_under_an_untrusted_ca_is_refused(pki: SnsPki, rogue_pki: SnsPki) -> None:
    hook = Hook(pki)
    rogue = SnsHttpsServer(pki, tls_pki=rogue_pki)  # the right signing cert, the wrong TLS chain
    with rogue:
        envelope = signed(rogue, pki, notification(TOPIC))

        assert hook.post(envelope) == retry_later("cert-fetch")

        assert rogue.connections() == 1
        assert rogue.requests() == []  # the handshake failed; no HTTP request was made
    assert hook.delivered == []


def test_certificate_is_fetched_once_for_many_notifications(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    first = signed(server, pki, notification(TOPIC, "one", message_id="m-1"), version="1")
    second = signed(server, pki, notification(TOPIC, "two", message_id="m-2"), version="2")

    assert hook.post(first) == APPLIED
    assert hook.post(second) == APPLIED

    assert [message for message, _ in hook.delivered] == ["one", "two"]
    assert server.cert_fetches() == 1


@pytest.mark.parametrize(("cache_size", "fetches"), [(1, 3), (2, 2)])
def test_certificate_cache_is_bounded(server: SnsHttpsServer, pki: SnsPki, cache_size: int, fetches: int) -> None:
    fetcher = CertificateFetcher(pki.ca_path, timeout=5, host_pattern=r"^localhost$", cache_size=cache_size)
    first, second = server.cert_url + "?v=1", server.cert_url + "?v=2"  # two URLs, one certificate

    for url in (first, second, first):
        assert fetcher.certificate(url).public_key().public_numbers() == pki.signing_key.public_key().public_numbers()

    assert server.requests() == [CERT_PATH + "?v=1", CERT_PATH + "?v=2", CERT_PATH + "?v=1"][:fetches]


def test_concurrent_notifications_are_all_delivered(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    envelopes = [signed(server, pki, notification(TOPIC, f"message {n}", message_id=f"m-{n}")) for n in range(16)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(hook.post, envelopes))

    assert results == [APPLIED] * 16
    assert sorted(message for message, _ in hook.delivered) == sorted(f"message {n}" for n in range(16))
    assert 1 <= server.cert_fetches() <= 8  # racing first fetches may each fetch; then the cache answers


@pytest.mark.parametrize("path", [
    pytest.param(REDIRECT_PATH, id="redirect-not-followed"),
    pytest.param(HUGE_PATH, id="body-over-the-cap"),
    pytest.param(NOT_PEM_PATH, id="not-a-certificate"),
    pytest.param("/missing.pem", id="404"),
])
def test_certificate_fetch_failures_are_refused(server: SnsHttpsServer, pki: SnsPki, path: str) -> None:
    hook = Hook(pki)

    assert hook.post(signed(server, pki, notification(TOPIC), cert_url=server.url(path))) == retry_later("cert-fetch")
    assert server.requests() == [path]  # one GET, and a redirect was not followed
    assert hook.delivered == []


def test_proxy_settings_in_the_environment_are_ignored(server: SnsHttpsServer, pki: SnsPki,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    hook = Hook(pki)

    assert hook.post(signed(server, pki, notification(TOPIC))) == APPLIED
    assert server.requests() == [CERT_PATH]


def test_failed_fetch_is_not_cached(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, notification(TOPIC), cert_url=server.url("/missing.pem"))

    assert hook.post(envelope) == retry_later("cert-fetch")
    assert hook.post(envelope) == retry_later("cert-fetch")
    assert server.requests() == ["/missing.pem", "/missing.pem"]


def test_exception_from_deliver_propagates(server: SnsHttpsServer, pki: SnsPki) -> None:
    """The web layer answers 500 for it, so that SNS retries."""
    fetcher = CertificateFetcher(pki.ca_path, timeout=5, host_pattern=r"^localhost$")

    def deliver(message: str, envelope: dict[str, Any]) -> None:
        raise SnsRejected("bad-json", "a rejection raised by deliver is still deliver's failure")

    endpoint = SnsEndpoint(SnsVerifier(fetcher, [TOPIC], clock=sent_at()), fetcher, deliver)
    body = json.dumps(signed(server, pki, notification(TOPIC))).encode()

    with pytest.raises(SnsRejected, match="deliver's failure"):
        endpoint.handle({}, body)


def test_refusals_are_logged_with_reason_and_topic_but_not_the_body(
        server: SnsHttpsServer, pki: SnsPki, caplog: pytest.LogCaptureFixture) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, notification(TOPIC, "secret-recipient@example.net")) | {"Timestamp": "x"}

    with caplog.at_level(logging.WARNING, logger="waypost.feedback.sns"):
        assert hook.post(envelope) == refused("bad-signature")

    [record] = [r for r in caplog.records if r.name == "waypost.feedback.sns"]
    assert record.levelno == logging.WARNING
    assert "bad-signature" in record.getMessage() and TOPIC in record.getMessage()
    assert "secret-recipient" not in caplog.text


def test_a_replayed_notification_is_refused_once_too_old(server: SnsHttpsServer, pki: SnsPki) -> None:
    """The same signed POST, delivered as SNS sends it and replayed after SNS's hour of retries."""
    envelope = signed(server, pki, notification(TOPIC, SES_JSON))
    replay = Hook(pki, clock=sent_at(SENT_AT + timedelta(minutes=66)))

    assert replay.post(envelope) == refused("too-old")
    assert replay.delivered == [] and server.cert_fetches() == 1  # refused after its signature verified
    assert Hook(pki).post(envelope) == APPLIED


def test_an_old_subscription_confirmation_is_not_confirmed(server: SnsHttpsServer, pki: SnsPki) -> None:
    envelope = signed(server, pki, confirmation(TOPIC, server.url(CONFIRM_PATH + "?Token=x")))

    assert Hook(pki, clock=sent_at(SENT_AT + timedelta(days=400))).post(envelope) == refused("too-old")
    assert server.confirmations() == []


BOUNCE = json.dumps({
    "notificationType": "Bounce",
    "mail": {"messageId": "0102-not-ours", "timestamp": "2026-03-01T10:00:00.000Z", "source": "x@waypost.test",
             "destination": ["ann@example.net"]},
    "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail", "feedbackId": "fb-1",
               "timestamp": "2026-03-01T10:00:02.000Z",
               "bouncedRecipients": [{"emailAddress": "ann@example.net", "status": "5.1.1"}]}})


@pytest.mark.parametrize(("max_age_minutes", "status", "text"), [(None, 403, "too-old"), (0, 200, "ok")])
def test_the_web_hook_applies_the_configured_maximum_age(server: SnsHttpsServer, pki: SnsPki,
                                                         make_settings: Callable[..., Any], database_url: str,
                                                         max_age_minutes: int | None, status: int, text: str) -> None:
    """POST /hooks/sns as wired: the default hour refuses the envelope signed months before this
    run, with 403 and its reason; feedback.sns_max_age_minutes = 0 turns the check off."""
    feedback: dict[str, Any] = {"sns_topic_arns": [TOPIC], "sns_cert_host_pattern": "^localhost$",
                                "sns_cert_ca_path": str(pki.ca_path)}
    if max_age_minutes is not None:
        feedback["sns_max_age_minutes"] = max_age_minutes
    runtime = wiring.build(make_settings(database={"url": database_url}, feedback=feedback))
    try:
        client = TestClient(create_app(runtime), client=("203.0.113.9", 50000))
        envelope = signed(server, pki, notification(TOPIC, BOUNCE))  # Timestamp 2026-03-01
        response = client.post("/hooks/sns", content=json.dumps(envelope).encode(),
                               headers={"x-amz-sns-message-type": "Notification"})
    finally:
        runtime.close()
    assert (response.status_code, response.text) == (status, text)


# --- subscription confirmations ------------------------------------------------------------

def test_subscription_confirmation_gets_the_subscribe_url_once(server: SnsHttpsServer, pki: SnsPki,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    hook = Hook(pki)
    subscribe_url = server.url(CONFIRM_PATH + "?Action=ConfirmSubscription&Token=2336412f37fb687f")
    envelope = signed(server, pki, confirmation(TOPIC, subscribe_url), version="1")

    with caplog.at_level(logging.INFO, logger="waypost.feedback.sns"):
        assert hook.post(envelope) == SnsOutcome(SnsResult.SUBSCRIBED)

    assert server.confirmations() == [CONFIRM_PATH + "?Action=ConfirmSubscription&Token=2336412f37fb687f"]
    assert hook.delivered == []
    assert "arn:aws:sns:eu-west-1:111122223333:ses-feedback:0c1d2c0e" in caplog.text  # from the XML answer


def test_subscribe_url_on_a_disallowed_host_is_not_requested(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, confirmation(TOPIC, "https://169.254.169.254/latest/meta-data/?Token=x"))

    assert hook.post(envelope) == refused("subscribe-url")
    assert server.requests() == [CERT_PATH]  # the certificate, and nothing else
    assert server.confirmations() == []


def test_subscription_for_a_stranger_topic_is_not_confirmed(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, confirmation(STRANGER_TOPIC, server.url(CONFIRM_PATH + "?Token=x")))

    assert hook.post(envelope) == refused("topic-not-allowed")
    assert server.connections() == 0


def test_tampered_subscribe_url_is_refused(server: SnsHttpsServer, pki: SnsPki) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, confirmation(TOPIC, server.url(CONFIRM_PATH + "?Token=x")))
    envelope["SubscribeURL"] = server.url(CONFIRM_PATH + "?Token=someone-elses")

    assert hook.post(envelope) == refused("bad-signature")
    assert server.confirmations() == []


def test_unsubscribe_confirmation_is_noted_and_never_resubscribes(server: SnsHttpsServer, pki: SnsPki,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    hook = Hook(pki)
    envelope = signed(server, pki, confirmation(TOPIC, server.url(CONFIRM_PATH + "?Token=x"),
                                                kind="UnsubscribeConfirmation"))

    with caplog.at_level(logging.WARNING, logger="waypost.feedback.sns"):
        assert hook.post(envelope) == SnsOutcome(SnsResult.NOTED)

    assert server.confirmations() == []
    assert server.requests() == [CERT_PATH]
    assert TOPIC in caplog.text
