"""SES sending authorization: sending as another account's identity.

The two identity ARNs in the settings go on every SES v2 ``SendEmail`` (what leaves the SDK is
read with a botocore hook, what arrives from moto's store), and `waypost doctor` reads the
identity's policies (``GetEmailIdentityPolicies``, which moto implements) to say whether one of
them lets us send. The boto3 code is the production code against moto in server mode.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from tests.support.dns_server import LoopbackDns
from tests.support.moto_server import REGION, sent_raw_messages
from waypost.cli import cli
from waypost.config import SesSettings, load_settings
from waypost.errors import ConfigError
from waypost.outbound.senders.base import Envelope
from waypost.outbound.senders.ses import SesSender

OWNER = "111122223333"  # the account that owns the identity (moto's own account serves here)
FROM_ARN = f"arn:aws:ses:{REGION}:{OWNER}:identity/example.org"
FEEDBACK_ARN = f"arn:aws:ses:{REGION}:{OWNER}:identity/bounces.example.org"
ENVELOPE = Envelope(sender="bounces+k1@bounces.example.org", recipient="ann@example.net",
                    idempotency_key="journeys-reply-7", stream="journeys")
RAW = (b"From: Waypost <journeys@example.org>\r\nTo: ann@example.net\r\nSubject: Your journey\r\n"
       b"Message-ID: <r7@example.org>\r\n\r\nIt is ready.\r\n")


def send_policy(actions: list[str], principal: str = "arn:aws:iam::123456789012:root") -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "waypost", "Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions,
         "Resource": FROM_ARN}]})


def send_once(aws: str, **arns: str) -> dict[str, Any]:
    """Send RAW through a sender built from settings; the request body as it left the SDK."""
    sender = SesSender.from_settings(SesSettings(region=REGION, endpoint_url=aws, **arns))
    bodies: list[dict[str, Any]] = []
    sender.client.meta.events.register("before-send.sesv2.SendEmail",
                                       lambda request, **_: bodies.append(json.loads(request.body)))
    try:
        sender.send(ENVELOPE, RAW, lambda: None)
    finally:
        sender.close()
    [body] = bodies
    return body


@pytest.fixture
def identity(aws: str) -> str:
    ses = boto3.client("sesv2", region_name=REGION)
    ses.create_email_identity(EmailIdentity="example.org")
    return "example.org"


def test_both_identity_arns_go_on_every_send(aws: str, identity: str) -> None:
    for _ in range(2):
        body = send_once(aws, from_identity_arn=FROM_ARN, feedback_forwarding_identity_arn=FEEDBACK_ARN)
        assert body["FromEmailAddressIdentityArn"] == FROM_ARN
        assert body["FeedbackForwardingEmailAddressIdentityArn"] == FEEDBACK_ARN
        assert body["FeedbackForwardingEmailAddress"] == ENVELOPE.sender
    assert len(sent_raw_messages(aws)) == 2  # and SES (moto) took both


def test_without_arns_the_request_names_no_identity(aws: str, identity: str) -> None:
    body = send_once(aws)
    assert "FromEmailAddressIdentityArn" not in body
    assert "FeedbackForwardingEmailAddressIdentityArn" not in body


def test_only_the_arns_set_are_sent(aws: str, identity: str) -> None:
    body = send_once(aws, from_identity_arn=FROM_ARN)
    assert body["FromEmailAddressIdentityArn"] == FROM_ARN
    assert "FeedbackForwardingEmailAddressIdentityArn" not in body


@pytest.mark.parametrize("arn", ["example.org", "arn:aws:sns:eu-west-1:111122223333:topic",
                                 "arn:aws:ses:eu-west-1:1111:identity/example.org"])
def test_a_malformed_identity_arn_is_refused_with_the_form_expected(tmp_path: Path, arn: str) -> None:
    (tmp_path / "waypost.toml").write_text(f'[ses]\nfrom_identity_arn = "{arn}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path)
    assert "from_identity_arn" in str(refused.value)
    assert "arn:aws:ses:<region>:<account>:identity/" in str(refused.value)


# --- the doctor ------------------------------------------------------------------------------

Doctor = Callable[..., dict[str, dict[str, Any]]]


@pytest.fixture
def doctor(tmp_path: Path, dns: LoopbackDns, aws: str) -> Doctor:
    def run(**ses: str) -> dict[str, dict[str, Any]]:
        lines = "".join(f'{key} = "{value}"\n' for key, value in ses.items())
        (tmp_path / "waypost.toml").write_text(
            f'mail_domain = "example.org"\nbase_url = "https://example.org"\ndns_nameservers = ["{dns.nameserver}"]\n'
            f'[outbound]\ntransport = "ses"\n[ses]\nregion = "{REGION}"\nendpoint_url = "{aws}"\n{lines}',
            encoding="utf-8")
        result = CliRunner().invoke(cli, ["doctor", "--json", "--data-dir", str(tmp_path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return {check["name"]: check for check in json.loads(result.stdout)["checks"]}

    return run


def authorization(checks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return checks["ses.authorization"]


def test_doctor_finds_the_policy_that_allows_sending(doctor: Doctor, identity: str) -> None:
    ses = boto3.client("sesv2", region_name=REGION)
    ses.create_email_identity_policy(EmailIdentity=identity, PolicyName="read-only",
                                     Policy=send_policy(["ses:GetEmailIdentity"]))
    ses.create_email_identity_policy(EmailIdentity=identity, PolicyName="waypost-send",
                                     Policy=send_policy(["ses:SendEmail", "ses:SendRawEmail"]))
    checks = doctor(from_identity_arn=FROM_ARN)
    assert authorization(checks)["status"] == "ok"
    assert "waypost-send" in authorization(checks)["found"] and "read-only" not in authorization(checks)["found"]


def test_doctor_fails_when_no_policy_allows_sending(doctor: Doctor, identity: str) -> None:
    boto3.client("sesv2", region_name=REGION).create_email_identity_policy(
        EmailIdentity=identity, PolicyName="read-only", Policy=send_policy(["ses:GetEmailIdentity"]))
    found = authorization(doctor(from_identity_arn=FROM_ARN))
    assert found["status"] == "fail" and "none allows ses:SendEmail" in found["found"]
    assert "create-email-identity-policy --email-identity example.org" in found["fix"]


def test_doctor_fails_for_an_identity_that_does_not_exist(doctor: Doctor) -> None:
    found = authorization(doctor(from_identity_arn=FROM_ARN))
    assert found["status"] == "fail" and "is not an identity" in found["found"]


def test_doctor_fails_for_an_identity_in_another_region(doctor: Doctor, identity: str) -> None:
    found = authorization(doctor(from_identity_arn=FROM_ARN.replace(REGION, "us-west-2")))
    assert found["status"] == "fail" and "us-west-2" in found["found"] and REGION in found["found"]


def test_doctor_checks_each_arn_and_nothing_without_one(doctor: Doctor, identity: str) -> None:
    assert not {"ses.authorization", "ses.feedback_authorization"} & set(doctor())
    boto3.client("sesv2", region_name=REGION).create_email_identity_policy(
        EmailIdentity=identity, PolicyName="waypost-send", Policy=send_policy(["ses:SendRawEmail"]))
    checks = doctor(from_identity_arn=FROM_ARN, feedback_forwarding_identity_arn=FEEDBACK_ARN)
    assert checks["ses.authorization"]["status"] == "ok"
    assert checks["ses.feedback_authorization"]["status"] == "fail"  # bounces.example.org is no identity
    assert "bounces.example.org" in checks["ses.feedback_authorization"]["found"]
