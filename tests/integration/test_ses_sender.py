"""The SES v2 sender against moto in server mode (real HTTP on loopback), plus its error table.

moto stores raw sends in its SES backend and serves them at /moto-api/data.json, which is how
these tests see what "left". It never throttles and does not implement sesv2 GetAccount, so
those paths are exercised with hand-built errors and botocore's Stubber.
"""

from __future__ import annotations

import base64
import email
import json
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from tests.conftest import wait_until
from tests.support.moto_server import REGION, sent_raw_messages
from waypost.config import SesSettings
from waypost.errors import PermanentError, TransientError
from waypost.outbound.senders.base import DeliveryUnknownError, Envelope, SendingPausedError, ThrottledError
from waypost.outbound.senders.ses import (
    QUOTA_RETRY_AFTER,
    RATE_RETRY_AFTER,
    SendLimits,
    SesSender,
    classify_send_error,
)

FROM = "Waypost <journeys@example.org>"
ENVELOPE = Envelope(
    sender="bounces+k7q2@example.org",
    recipient="ann@example.net",
    idempotency_key="journeys-reply-42",
    stream="journeys",
    message_id="<reply-42@example.org>",
)


class Calls:
    """Records the order of handoff() and of requests leaving the SDK."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.bodies: list[bytes] = []

    def handoff(self) -> None:
        self.events.append("handoff")

    def on_send(self, request: Any, **_: Any) -> None:  # botocore before-send hook; None lets it go
        self.events.append("request")
        self.bodies.append(bytes(request.body))


def reply_message(sender: str = FROM, to: str = ENVELOPE.recipient) -> bytes:
    msg = EmailMessage(policy=SMTP)  # CRLF line ends, as the composer produces
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "Your journey: Lisbon → Sintra"
    msg["Message-ID"] = ENVELOPE.message_id
    msg["List-Unsubscribe"] = "<https://waypost.example.org/u/tok123>, <mailto:unsubscribe@example.org?subject=tok123>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # non-ASCII encoded to 7 bit, as SES advises for raw content
    msg.set_content("Your journey is ready: https://waypost.example.org/j/42\nDistance: 28 km — café stop.\n",
                    cte="quoted-printable")
    return msg.as_bytes()


@pytest.fixture
def make_sender(aws: str) -> Iterator[Any]:
    senders: list[SesSender] = []

    def build(configuration_set: str | None = None, endpoint: str = aws, **timeouts: float) -> SesSender:
        settings = SesSettings(region=REGION, endpoint_url=endpoint, configuration_set=configuration_set)
        senders.append(SesSender.from_settings(settings, **timeouts))
        return senders[-1]

    yield build
    for sender in senders:
        sender.close()


@pytest.fixture
def verified_domain(aws: str) -> str:
    client = boto3.client("sesv2", region_name=REGION, endpoint_url=aws)
    try:
        client.create_email_identity(EmailIdentity="example.org")
    finally:
        client.close()
    return "example.org"


# --- against moto -----------------------------------------------------------------------


def test_raw_message_arrives_unchanged(make_sender: Any, verified_domain: str, aws: str) -> None:
    raw = reply_message()
    calls = Calls()

    message_id = make_sender().send(ENVELOPE, raw, calls.handoff)

    [stored] = sent_raw_messages(aws)
    assert stored["id"] == message_id
    assert stored["raw_data"].encode() == raw  # byte for byte, CRLF and all
    assert stored["source"] == "journeys@example.org"  # taken from the raw From header
    # moto appends the To header's addresses to Destination, so the one recipient shows twice
    assert set(stored["destinations"]) == {ENVELOPE.recipient}
    received = email.message_from_bytes(stored["raw_data"].encode(), policy=SMTP)
    sent = email.message_from_bytes(raw, policy=SMTP)
    for header in ("From", "To", "Subject", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert received[header] == sent[header], header
    assert received.get_content() == sent.get_content()
    assert calls.events == ["handoff"]


def test_handoff_once_immediately_before_the_request(make_sender: Any, verified_domain: str) -> None:
    sender = make_sender()
    calls = Calls()
    sender.client.meta.events.register("before-send.sesv2.SendEmail", calls.on_send)

    sender.send(ENVELOPE, reply_message(), calls.handoff)

    assert calls.events == ["handoff", "request"]


def test_request_carries_envelope_tags_and_configuration_set(make_sender: Any, verified_domain: str) -> None:
    sender = make_sender(configuration_set="waypost-events")
    calls = Calls()
    sender.client.meta.events.register("before-send.sesv2.SendEmail", calls.on_send)
    envelope = Envelope(ENVELOPE.sender, ENVELOPE.recipient, "relay:7/a b", stream="relay.devices")
    raw = reply_message()

    sender.send(envelope, raw, calls.handoff)

    [body] = [json.loads(b) for b in calls.bodies]
    assert body["ConfigurationSetName"] == "waypost-events"
    assert body["EmailTags"] == [{"Name": "stream", "Value": "relay_devices"},
                                 {"Name": "idempotency_key", "Value": "relay_7_a_b"}]
    assert body["Destination"] == {"ToAddresses": [ENVELOPE.recipient]}
    assert body["FeedbackForwardingEmailAddress"] == ENVELOPE.sender
    assert "FromEmailAddress" not in body  # SES checks the raw From header instead
    assert base64.b64decode(body["Content"]["Raw"]["Data"]) == raw


def test_no_configuration_set_means_none_sent(make_sender: Any, verified_domain: str) -> None:
    sender = make_sender()
    calls = Calls()
    sender.client.meta.events.register("before-send.sesv2.SendEmail", calls.on_send)

    sender.send(Envelope("", ENVELOPE.recipient, "k1"), reply_message(), calls.handoff)

    [body] = [json.loads(b) for b in calls.bodies]
    assert "ConfigurationSetName" not in body
    assert "FeedbackForwardingEmailAddress" not in body  # null reverse-path


def test_unverified_from_is_permanent_and_says_what_to_verify(make_sender: Any, aws: str) -> None:
    calls = Calls()

    with pytest.raises(PermanentError) as caught:
        make_sender().send(ENVELOPE, reply_message(sender="Someone <someone@unverified.test>"), calls.handoff)

    assert type(caught.value) is PermanentError
    text = str(caught.value)
    assert "verify someone@unverified.test" in text
    assert REGION in text
    assert calls.events == ["handoff"]
    assert sent_raw_messages(aws) == []


def test_account_limits_fall_back_to_v1_quota(make_sender: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="waypost.outbound.senders.ses")

    limits = make_sender().account_limits()

    # moto has no sesv2 GetAccount (HTTP 404); its v1 quota is the sandbox's, fixed
    assert limits == SendLimits(max_per_second=1.0, max_per_day=200, sent_last_24h=0, production_access=None,
                                source="ses:GetSendQuota")
    assert "GetAccount failed (404" in caplog.text


def test_read_timeout_after_the_request_left_is_delivery_unknown(make_sender: Any) -> None:
    calls = Calls()
    with silent_http_server() as (endpoint, received):
        sender = make_sender(endpoint=endpoint, read_timeout=0.5, connect_timeout=2.0)
        with pytest.raises(DeliveryUnknownError, match="will not be sent again"):
            sender.send(ENVELOPE, reply_message(), calls.handoff)
        request = wait_until(lambda: received and b"".join(received[0]), timeout=5.0,
                             message="the request at the silent server")
    assert request.startswith(b"POST /v2/email/outbound-emails ")
    assert len(received) == 1  # the SDK did not retry: a second request could deliver twice
    assert calls.events == ["handoff"]


def test_refused_connection_is_transient(make_sender: Any) -> None:
    calls = Calls()
    # Bound but not listening: the kernel refuses connections, and nobody else can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        sender = make_sender(endpoint=f"http://127.0.0.1:{closed.getsockname()[1]}", connect_timeout=2.0)
        with pytest.raises(TransientError, match="did not reach SES") as caught:
            sender.send(ENVELOPE, reply_message(), calls.handoff)
    assert type(caught.value) is TransientError
    assert calls.events == ["handoff"]


def test_over_long_line_is_refused_before_handoff(make_sender: Any, verified_domain: str) -> None:
    calls = Calls()
    raw = reply_message().replace(b"\r\n\r\n", b"\r\n\r\n" + b"x" * 999 + b"\r\n", 1)

    with pytest.raises(PermanentError, match="line of 999 octets"):
        make_sender().send(ENVELOPE, raw, calls.handoff)

    assert calls.events == []


@contextmanager
def silent_http_server(timeout: float = 10.0) -> Iterator[tuple[str, list[list[bytes]]]]:
    """Accepts connections and reads what arrives on each, never answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    received: list[list[bytes]] = []  # one list of chunks per connection
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            received.append([])
            with conn:
                conn.settimeout(0.05)
                while not stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:  # the client gave up and closed
                        break
                    received[-1].append(chunk)

    thread = threading.Thread(target=serve, name="silent-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        stop.set()
        thread.join(timeout)
        listener.close()
        assert not thread.is_alive(), "silent server thread did not stop"


# --- through the real client, answers stubbed -----------------------------------------------


def test_throttling_answer_through_the_client(make_sender: Any) -> None:
    sender = make_sender()
    calls = Calls()
    with Stubber(sender.client) as stub:
        stub.add_client_error("send_email", "TooManyRequestsException", "Too many requests", 429)
        with pytest.raises(ThrottledError) as caught:
            sender.send(ENVELOPE, reply_message(), calls.handoff)
    assert caught.value.retry_after == RATE_RETRY_AFTER
    assert calls.events == ["handoff"]


def test_account_limits_from_v2_get_account(make_sender: Any) -> None:
    sender = make_sender()
    answer = {"SendQuota": {"Max24HourSend": -1.0, "MaxSendRate": 14.0, "SentLast24Hours": 1234.0},
              "ProductionAccessEnabled": True}
    with Stubber(sender.client) as stub:
        stub.add_response("get_account", answer, {})
        limits = sender.account_limits()
    assert limits == SendLimits(max_per_second=14.0, max_per_day=None, sent_last_24h=1234, production_access=True,
                                source="sesv2:GetAccount")


def test_account_limits_none_when_both_apis_fail(make_sender: Any, caplog: pytest.LogCaptureFixture) -> None:
    sender = make_sender()
    with Stubber(sender.client) as v2, Stubber(sender.quota_client) as v1:
        v2.add_client_error("get_account", "AccessDeniedException", "not allowed", 403)
        v1.add_client_error("get_send_quota", "AccessDenied", "not allowed either", 403)
        assert sender.account_limits() is None
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "AccessDeniedException" in record.getMessage() and "AccessDenied:" in record.getMessage()


# --- the error table ------------------------------------------------------------------------


def client_error(code: str, message: str, status: int | None) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": message}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "SendEmail")


UNVERIFIED = ("Email address is not verified. The following identities failed the check in region EU-WEST-1: "
              "journeys@example.org")
SANDBOX = ("Email address is not verified. The following identities failed the check in region EU-WEST-1: "
           "ann@example.net")

CLIENT_ERRORS = [
    # code, message, HTTP status -> exception, retry_after, words in the explanation
    ("TooManyRequestsException", "Too many requests.", 429, ThrottledError, RATE_RETRY_AFTER, "rate"),
    ("Throttling", "Maximum sending rate exceeded.", 400, ThrottledError, RATE_RETRY_AFTER, "rate"),
    ("Throttling", "Daily message quota exceeded.", 400, ThrottledError, QUOTA_RETRY_AFTER, "daily"),
    ("LimitExceededException", "Daily message quota exceeded.", 400, ThrottledError, QUOTA_RETRY_AFTER, "daily"),
    ("LimitExceededException", "Maximum sending quota exceeded", 400, ThrottledError, QUOTA_RETRY_AFTER, "quota"),
    ("LimitExceededException", "Too many things.", 400, ThrottledError, QUOTA_RETRY_AFTER, "limit"),
    ("SomethingNew", "Slow down", 429, ThrottledError, RATE_RETRY_AFTER, "rate"),
    ("MessageRejected", UNVERIFIED, 400, PermanentError, None, "verify journeys@example.org"),
    ("MessageRejected", SANDBOX, 400, PermanentError, None, "production access"),
    ("MessageRejected", "Illegal address", 400, PermanentError, None, "Illegal address"),
    ("AccountSuspendedException", "Account suspended", 400, SendingPausedError, None, "suspended"),
    ("SendingPausedException", "Sending paused", 400, SendingPausedError, None, "resume"),
    ("AccountSendingPausedException", "paused", 400, SendingPausedError, None, "whole account"),
    ("ConfigurationSetSendingPausedException", "paused", 400, SendingPausedError, None, "configuration set"),
    ("MailFromDomainNotVerifiedException", "MAIL FROM not verified", 400, SendingPausedError, None, "MX"),
    ("NotFoundException", "Configuration set x does not exist", 404, SendingPausedError, None, "ses.configuration_set"),
    ("ConfigurationSetDoesNotExist", "x", 400, SendingPausedError, None, "ses.configuration_set"),
    ("BadRequestException", "bad tag", 400, PermanentError, None, "invalid"),
    ("AccessDeniedException", "not authorized", 403, SendingPausedError, None, "IAM"),
    ("InternalFailure", "oops", 500, TransientError, None, "InternalFailure"),
    ("ServiceUnavailable", "later", 503, TransientError, None, "ServiceUnavailable"),
    ("Whatever", "gateway", 502, TransientError, None, "502"),
    ("Whatever", "no status", None, TransientError, None, "Whatever"),
    ("Whatever", "refused", 400, PermanentError, None, "refused"),
]


@pytest.mark.parametrize(("code", "message", "status", "expected", "retry_after", "words"), CLIENT_ERRORS)
def test_client_error_table(code: str, message: str, status: int | None, expected: type[Exception],
                            retry_after: float | None, words: str) -> None:
    error = classify_send_error(client_error(code, message, status), region=REGION, envelope=ENVELOPE)

    assert type(error) is expected
    assert words.lower() in str(error).lower()
    if retry_after is not None:
        assert isinstance(error, ThrottledError) and error.retry_after == retry_after


def test_sandbox_rejection_names_the_recipient_not_the_sender() -> None:
    text = str(classify_send_error(client_error("MessageRejected", SANDBOX, 400), region=REGION, envelope=ENVELOPE))

    assert "ann@example.net is the recipient" in text
    assert "sandbox" in text and "production access" in text
    assert "verified identities" not in text  # the sender side was fine


def test_moto_rejection_text_is_explained_too() -> None:
    message = "Did not have authority to send from email journeys@example.org"
    text = str(classify_send_error(client_error("MessageRejected", message, 400), region=REGION, envelope=ENVELOPE))

    assert "verify journeys@example.org (the address or its whole domain) in region eu-west-1" in text


URL = "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
TRANSPORT_ERRORS = [
    (EndpointConnectionError(endpoint_url=URL), TransientError),
    (ConnectTimeoutError(endpoint_url=URL), TransientError),
    (CredentialRetrievalError(provider="sts", error_msg="timed out"), TransientError),
    (NoCredentialsError(), SendingPausedError),  # every message would meet it: pause, fail none
    (PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), SendingPausedError),
    (ParamValidationError(report="Invalid length"), PermanentError),
    (ReadTimeoutError(endpoint_url=URL), DeliveryUnknownError),
    (ConnectionClosedError(endpoint_url=URL), DeliveryUnknownError),
    (HTTPClientError(error="something odd"), DeliveryUnknownError),
]


@pytest.mark.parametrize(("err", "expected"), TRANSPORT_ERRORS, ids=lambda v: type(v).__name__)
def test_transport_error_table(err: Exception, expected: type[Exception]) -> None:
    assert type(classify_send_error(err)) is expected


def test_missing_credentials_say_where_to_put_them() -> None:
    assert "standard chain" in str(classify_send_error(NoCredentialsError()))


def test_both_clients_make_a_single_attempt(make_sender: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")  # the explicit client config must win over the environment
    sender = make_sender()

    for client in (sender.client, sender.quota_client):
        assert client.meta.config.retries["total_max_attempts"] == 1
        assert client.meta.region_name == REGION
