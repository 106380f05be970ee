"""A loopback HTTP server answering the SES v2 calls moto does not implement (GetAccount,
GetConfigurationSetEventDestinations, and GetEmailIdentity with DKIM tokens and MAIL FROM
attributes, which moto leaves out), so the doctor's boto3 code runs unchanged against it with
only ``endpoint_url`` different.

Bodies follow the response syntax of the Amazon SES API v2 reference (GetAccount,
GetEmailIdentity, GetConfigurationSet, GetConfigurationSetEventDestinations; "Response Syntax"
and the REST-JSON error form: HTTP 404 with ``x-amzn-ErrorType: NotFoundException``). Tests
change ``responses`` (path → body) while it runs.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from tests.support.json_http import serving_json

TOKENS = ("tok1abcdefghijklmnopqrstuvwxyz", "tok2abcdefghijklmnopqrstuvwxyz", "tok3abcdefghijklmnopqrstuvwxyz")
EVENT_TYPES = ["SEND", "REJECT", "BOUNCE", "COMPLAINT", "DELIVERY", "RENDERING_FAILURE", "DELIVERY_DELAY",
               "SUBSCRIPTION"]


def production_account() -> dict[str, Any]:
    return {"DedicatedIpAutoWarmupEnabled": False, "EnforcementStatus": "HEALTHY", "ProductionAccessEnabled": True,
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 12.0},
            "SendingEnabled": True, "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
            "Details": {"MailType": "TRANSACTIONAL", "WebsiteURL": "https://example.org",
                        "ContactLanguage": "EN", "UseCaseDescription": "replies to people who wrote in",
                        "ReviewDetails": {"Status": "GRANTED", "CaseId": "123456789"}}}


def verified_identity(domain: str, mail_from: str) -> dict[str, Any]:
    return {"IdentityType": "DOMAIN", "FeedbackForwardingStatus": False, "VerifiedForSendingStatus": True,
            "VerificationStatus": "SUCCESS",
            "DkimAttributes": {"SigningEnabled": True, "Status": "SUCCESS", "Tokens": list(TOKENS),
                               "SigningAttributesOrigin": "AWS_SES", "NextSigningKeyLength": "RSA_2048_BIT",
                               "CurrentSigningKeyLength": "RSA_2048_BIT"},
            "MailFromAttributes": {"MailFromDomain": mail_from, "MailFromDomainStatus": "SUCCESS",
                                   "BehaviorOnMxFailure": "REJECT_MESSAGE"},
            "Policies": {}, "Tags": []}


def event_destinations(topic_arn: str, types: list[str] | None = None) -> dict[str, Any]:
    return {"EventDestinations": [{"Name": "to-waypost", "Enabled": True,
                                   "MatchingEventTypes": list(EVENT_TYPES if types is None else types),
                                   "SnsDestination": {"TopicArn": topic_arn}}]}


class SesV2Stub:
    def __init__(self) -> None:
        self.responses: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(path)
            body = self.responses.get(unquote(path.split("?")[0]))
        if body is None:
            return 404, {"message": f"{path} does not exist"}
        return 200, copy.deepcopy(body)


@contextmanager
def running_ses_v2_stub() -> Iterator[tuple[str, SesV2Stub]]:
    stub = SesV2Stub()

    def answer(method: str, path: str, body: bytes) -> tuple[int, str | None, Any]:
        status, found = stub.answer(path)  # the doctor only reads (GET)
        return status, "NotFoundException" if status == 404 else None, found

    with serving_json(answer) as url:
        yield url, stub
