"""Amazon SES v2 sender: one raw ``SendEmail`` call per recipient.

The message goes out exactly as composed (``Content.Raw``); SES takes the From header from
it and requires that address or its domain to be a verified identity. The envelope maps to
``Destination`` (the one recipient, like RCPT TO) and ``FeedbackForwardingEmailAddress``
(our VERP address, so bounces forwarded by email still name the message they belong to).

The SDK never retries (one attempt in total): botocore would retry the futile daily-quota
case, and a retry after a read timeout could deliver twice. The outbox owns retries; this
module only says what happened, by translating every SDK error at the boundary.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    InvalidConfigError,
    MetadataRetrievalError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    TokenRetrievalError,
    UnknownCredentialError,
)
from botocore.exceptions import ConnectionError as SdkConnectionError
from botocore.parsers import ResponseParserError

from waypost.config import SesSettings
from waypost.errors import PermanentError, TransientError, WaypostError
from waypost.outbound.senders.base import (
    BaseSender,
    DeliveryUnknownError,
    Envelope,
    Handoff,
    SendingPausedError,
    SendLimits,
    ThrottledError,
)

log = logging.getLogger(__name__)

SesClient = Any  # a boto3 "sesv2" client (or "ses" for the quota fallback); boto3 ships no types

# SES enforces the sending rate per second and tolerates brief excess, so a short pause is enough.
RATE_RETRY_AFTER = 2.0
# The daily quota is counted over a rolling 24 hours: capacity returns bit by bit as old sends
# age out (or at once when AWS raises the quota). Looking again every 15 minutes finds it soon
# enough without spending API calls on a refusal that is certain for hours.
QUOTA_RETRY_AFTER = 15 * 60.0
MAX_LINE_OCTETS = 998  # RFC 5322 §2.1.1 (RFC 5321 §4.5.3.1.6: 1000 with CRLF); SES requires it too
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # EmailTags names and values allow only these, ≤ 256
# "Email address is not verified. The following identities failed the check in region …: a@b"
# (SES); "Did not have authority to send from email a@b" (moto)
_UNVERIFIED = re.compile(r"not verified|did not have authority", re.IGNORECASE)
_ADDRESS = re.compile(r"[A-Za-z0-9._%+=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


class SesSender(BaseSender):
    """Sends through SES v2 ``SendEmail`` with raw content; see ``senders.base`` for the contract."""

    name = "ses"

    def __init__(self, client: SesClient, *, configuration_set: str | None = None,
                 quota_client: SesClient | None = None, from_identity_arn: str | None = None,
                 feedback_forwarding_identity_arn: str | None = None) -> None:
        self.client = client
        self.configuration_set = configuration_set
        self.quota_client = quota_client  # SES v1, for GetSendQuota where v2 GetAccount is refused
        # sending authorization: identities of another account whose policy lets us use them
        self.from_identity_arn = from_identity_arn
        self.feedback_forwarding_identity_arn = feedback_forwarding_identity_arn

    @classmethod
    def from_settings(cls, settings: SesSettings, *, connect_timeout: float = 5.0,
                      read_timeout: float = 30.0) -> SesSender:
        """Clients for ``settings.region``; credentials come from boto3's standard chain."""
        session = boto3.session.Session()  # a session of our own: the default one is not thread-safe
        config = Config(
            # One attempt in all. Not {"max_attempts": 1}: in botocore's client config that key
            # counts retries (it becomes total_max_attempts = 2), and a second request after a read
            # timeout could deliver the message twice.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

        def client(service: str) -> SesClient:
            return session.client(service, region_name=settings.region, endpoint_url=settings.endpoint_url,
                                  config=config)

        return cls(client("sesv2"), configuration_set=settings.configuration_set, quota_client=client("ses"),
                   from_identity_arn=settings.from_identity_arn,
                   feedback_forwarding_identity_arn=settings.feedback_forwarding_identity_arn)

    def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
        """Return SES's MessageId. Raises as ``senders.base`` describes; nothing is retried here."""
        _check_line_lengths(raw)
        request = self._request(envelope, raw)
        handoff()
        try:
            response = self.client.send_email(**request)
        except (ClientError, BotoCoreError, ResponseParserError) as err:
            raise classify_send_error(err, region=self.client.meta.region_name, envelope=envelope) from err
        return str(response["MessageId"])

    def confirm(self, envelope: Envelope) -> str | None:
        """Always None: SES cannot look a send up by our key. Events published through the
        configuration set carry the ``idempotency_key`` tag; that is where a lost answer shows up."""
        return None

    def account_limits(self) -> SendLimits | None:
        """The account's quota, or None when neither API answers (logged at warning).

        SES throttles these calls at one per second: call it at start-up or now and then."""
        try:
            return _limits_from_account(self.client.get_account())
        except _LIMITS_ERRORS as err:
            v2_reason = _describe(err)
        if self.quota_client is None:
            log.warning("SES account limits unknown: sesv2 GetAccount failed (%s)", v2_reason)
            return None
        try:
            limits = _limits_from_quota(self.quota_client.get_send_quota())
        except _LIMITS_ERRORS as err:
            log.warning("SES account limits unknown: sesv2 GetAccount failed (%s), ses GetSendQuota failed (%s)",
                        v2_reason, _describe(err))
            return None
        log.info("SES account limits read with GetSendQuota; GetAccount failed (%s)", v2_reason)
        return limits

    def close(self) -> None:
        """Close the clients' connection pools."""
        self.client.close()
        if self.quota_client is not None:
            self.quota_client.close()

    def _request(self, envelope: Envelope, raw: bytes) -> dict[str, Any]:
        # No FromEmailAddress: SES then checks the raw From header, the address recipients see.
        request: dict[str, Any] = {
            "Destination": {"ToAddresses": [envelope.recipient]},
            "Content": {"Raw": {"Data": raw}},
            "EmailTags": [
                {"Name": "stream", "Value": _tag_value(envelope.stream)},
                {"Name": "idempotency_key", "Value": _tag_value(envelope.idempotency_key)},
            ],
        }
        if envelope.sender:  # empty: a null reverse-path; SES falls back to the From address
            request["FeedbackForwardingEmailAddress"] = envelope.sender
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        if self.from_identity_arn:  # SES checks the identity's sending authorization policy
            request["FromEmailAddressIdentityArn"] = self.from_identity_arn
        if self.feedback_forwarding_identity_arn:
            request["FeedbackForwardingEmailAddressIdentityArn"] = self.feedback_forwarding_identity_arn
        return request


def _check_line_lengths(raw: bytes) -> None:
    longest = max(map(len, raw.splitlines()), default=0)
    if longest > MAX_LINE_OCTETS:
        raise PermanentError(f"message has a line of {longest} octets; RFC 5322 allows {MAX_LINE_OCTETS} "
                             "(the composer must fold headers and encode long body lines)")


def _tag_value(text: str) -> str:
    return _TAG_UNSAFE.sub("_", text)[:256] or "_"


# --- error translation -------------------------------------------------------------------

_THROTTLE_CODES = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException"})
_SERVER_CODES = frozenset({"InternalFailure", "InternalError", "InternalServerError", "ServiceUnavailable",
                           "ServiceUnavailableException"})
_PAUSED_HINTS = {
    "AccountSuspendedException": "SES suspended sending for the account; see the SES account dashboard and "
                                 "AWS's message about why",
    "SendingPausedException": "sending is paused for the account or the configuration set; resume it once the "
                              "cause (bounce or complaint rate) is fixed",
    "AccountSendingPausedException": "sending is paused for the whole account; resume it once the cause is fixed",
    "ConfigurationSetSendingPausedException": "sending is paused for the configuration set; resume it "
                                              "(sesv2 put-configuration-set-sending-options --sending-enabled)",
}
# Refusals about the account or our configuration, not the message: every message would meet
# them, so they pause the outbox (nothing is failed or dropped) until an operator fixes the
# cause and runs `waypost resume`.
_CONFIG_HINTS = {
    "MailFromDomainNotVerifiedException": "the custom MAIL FROM domain of the sending identity has no valid MX "
                                          "record; fix its DNS or set the behaviour on MX failure to "
                                          "UseDefaultValue",
    "MailFromDomainNotVerified": "the custom MAIL FROM domain of the sending identity has no valid MX record",
    "NotFoundException": "something the request names does not exist in this region; check that the "
                         "configuration set (ses.configuration_set) exists there",
    "ConfigurationSetDoesNotExist": "the configuration set (ses.configuration_set) does not exist in this region",
    "ConfigurationSetDoesNotExistException": "the configuration set (ses.configuration_set) does not exist in "
                                             "this region",
    "AccessDeniedException": "the AWS credentials may not call ses:SendEmail; allow ses:SendEmail and "
                             "ses:SendRawEmail on the sending identity in their IAM policy",
    "AccessDenied": "the AWS credentials may not call this SES action; check their IAM policy",
    "UnrecognizedClientException": "AWS does not know these credentials; check the access key",
    "InvalidClientTokenId": "AWS does not know these credentials; check the access key",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
}
# Refusals of this one message.
_MESSAGE_HINTS = {
    "BadRequestException": "SES found the request invalid (a malformed address, tag or message?)",
    "InvalidParameterValue": "SES found a parameter invalid (a malformed address or tag?)",
}
_CREDENTIALS_HINT = ("no usable AWS credentials or region: provide them through boto3's standard chain "
                     "(environment, shared config files, or an instance/task role)")

# Translation of SDK errors raised without an answer from SES. The first matching row wins.
_TRANSPORT_ERRORS: tuple[tuple[tuple[type[Exception], ...], type[WaypostError], str], ...] = (
    ((NoCredentialsError, PartialCredentialsError, NoRegionError, ProfileNotFound, UnknownCredentialError,
      InvalidConfigError), SendingPausedError, _CREDENTIALS_HINT),
    ((ParamValidationError,), PermanentError, "the SDK refused the request before sending it"),
    # botocore's ConnectionError: connect refused or timed out, proxy and TLS failures; credential
    # look-ups happen before the request is built. Nothing reached SES. (urllib3 reports a TLS error
    # while reading the answer the same way as a failed handshake; that case is rare, while treating
    # every TLS error as "unknown" would drop all mail silently whenever certificates are wrong.)
    ((SdkConnectionError, CredentialRetrievalError, MetadataRetrievalError, TokenRetrievalError),
     TransientError, "the request did not reach SES"),
    # Read timeout, connection closed, an unreadable answer, anything else: the request may have
    # been accepted, so sending again could deliver twice.
    ((BotoCoreError, ResponseParserError), DeliveryUnknownError,
     "the request may have reached SES and its answer was lost; it will not be sent again"),
)


def classify_send_error(err: Exception, *, region: str | None = None,
                        envelope: Envelope | None = None) -> WaypostError:
    """Translate an SDK error from ``SendEmail`` into the Sender contract's exceptions."""
    if isinstance(err, ClientError):
        return _classify_client_error(err, region, envelope)
    for types, kind, hint in _TRANSPORT_ERRORS:
        if isinstance(err, types):
            return kind(f"SES send failed: {err} ({hint})")
    return DeliveryUnknownError(f"SES send failed: {err!r}")


def _classify_client_error(err: ClientError, region: str | None, envelope: Envelope | None) -> WaypostError:
    code, message = _code_and_message(err)
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _THROTTLE_CODES or status == 429:
        return _throttled(code, message)
    if code == "MessageRejected":
        return PermanentError(_explain_rejection(message, region, envelope))
    if code in _PAUSED_HINTS:
        return SendingPausedError(f"SES {code}: {message} ({_PAUSED_HINTS[code]})")
    if code in _CONFIG_HINTS:
        return SendingPausedError(f"SES {code}: {message} ({_CONFIG_HINTS[code]})")
    if code in _MESSAGE_HINTS:
        return PermanentError(f"SES {code}: {message} ({_MESSAGE_HINTS[code]})")
    if code in _SERVER_CODES or status is None or status >= 500:
        # SES failed to handle the request, and AWS advises retrying these; that it queued the
        # message all the same is possible but unlikely, a risk every API retry takes.
        return TransientError(f"SES {code} (HTTP {status}): {message}")
    return PermanentError(f"SES refused the message: {code} (HTTP {status}): {message}")


def _throttled(code: str, message: str) -> ThrottledError:
    text = message.lower()
    if "daily" in text or "quota" in text:
        return ThrottledError(f"SES daily sending quota reached ({code}: {message})", QUOTA_RETRY_AFTER)
    if code == "LimitExceededException":
        # Documented as "too many instances of a resource"; unclear for a send, so wait long
        # rather than hammer: a throttled message never uses up an attempt.
        return ThrottledError(f"SES limit exceeded ({code}: {message})", QUOTA_RETRY_AFTER)
    return ThrottledError(f"SES sending rate exceeded ({code}: {message})", RATE_RETRY_AFTER)


def _explain_rejection(message: str, region: str | None, envelope: Envelope | None) -> str:
    if not _UNVERIFIED.search(message):
        return f"SES rejected the message: {message}"
    where = f"region {region}" if region else "the sending region"
    named = list(dict.fromkeys(address.lower() for address in _ADDRESS.findall(message)))
    recipient = envelope.recipient.lower() if envelope else ""
    senders = [address for address in named if address != recipient]
    hints = []
    if senders or not named:
        hints.append(f"SES sends only from verified identities: verify {', '.join(senders) or 'the From address'} "
                     f"(the address or its whole domain) in {where}")
    if recipient and (recipient in named or not named):
        hints.append(f"{recipient} is the recipient: while the account is in the SES sandbox, recipients must be "
                     f"verified too; verify the address in {where} or request production access")
    return f"SES rejected the message: {message} ({'; '.join(hints)})"


def _code_and_message(err: ClientError) -> tuple[str, str]:
    error = err.response.get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", ""))


def _describe(err: Exception) -> str:
    if isinstance(err, ClientError):  # moto answers an unknown action with a whole HTML page
        code, message = _code_and_message(err)
        return f"{code}: {' '.join(message.split())[:200]}"
    return f"{type(err).__name__}: {err}"


# An SDK failure, or an answer without the fields we read
# reading the limits must never stop a process: any failure falls back to the configured limits
_LIMITS_ERRORS = (Exception,)


def _limits_from_account(response: dict[str, Any]) -> SendLimits:
    quota = response["SendQuota"]
    return SendLimits(
        max_per_second=float(quota["MaxSendRate"]),
        max_per_day=_daily(quota["Max24HourSend"]),
        sent_last_24h=_count(quota.get("SentLast24Hours")),
        production_access=response.get("ProductionAccessEnabled"),
        source="sesv2:GetAccount",
    )


def _limits_from_quota(response: dict[str, Any]) -> SendLimits:
    return SendLimits(
        max_per_second=float(response["MaxSendRate"]),
        max_per_day=_daily(response["Max24HourSend"]),
        sent_last_24h=_count(response.get("SentLast24Hours")),
        production_access=None,
        source="ses:GetSendQuota",
    )


def _daily(value: float) -> int | None:
    return None if value < 0 else int(value)  # SES reports an unlimited quota as -1


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)
