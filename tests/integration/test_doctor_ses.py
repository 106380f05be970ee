"""`waypost doctor` in SES mode: the account through the SES v2 API, DNS on loopback.

moto (server mode) stands in where it implements the calls: identities that do not exist or
are not verified, a missing configuration set, and the SNS topic and SQS queue whose
subscription the event destinations must lead to. What moto leaves out (GetAccount, event
destinations, DKIM tokens, MAIL FROM attributes) comes from ``tests/support/ses_v2_stub.py``,
bodies recorded from the SES v2 API reference. The boto3 code is the production code; only
the endpoint differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from tests.support.dns_server import LoopbackDns
from tests.support.moto_server import REGION
from tests.support.ses_v2_stub import (
    TOKENS,
    SesV2Stub,
    event_destinations,
    production_account,
    running_ses_v2_stub,
    verified_identity,
)
from waypost.cli import cli

DOMAIN = "example.org"
BOUNCES = "bounces.example.org"
CONFIG_SET = "waypost"


@dataclass
class Feedback:
    topic_arn: str
    queue_url: str


@pytest.fixture
def feedback(aws: str) -> Feedback:
    """A topic and the queue Waypost consumes, subscribed to it (in moto)."""
    sns, sqs = boto3.client("sns", region_name=REGION), boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="ses-events")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="waypost-feedback")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return Feedback(topic, queue_url)


def ses_zone(dns: LoopbackDns) -> None:
    dns.add_mx(DOMAIN, f"inbound-smtp.{REGION}.amazonaws.com")
    dns.add_mx(BOUNCES, f"feedback-smtp.{REGION}.amazonses.com")
    dns.add_txt(BOUNCES, "v=spf1 include:amazonses.com ~all")
    dns.add_txt("amazonses.com", "v=spf1 ip4:199.255.192.0/22 ip4:199.127.232.0/22 -all")
    dns.add_txt(f"_dmarc.{DOMAIN}", f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}")
    for token in TOKENS:
        dns.add_cname(f"{token}._domainkey.{DOMAIN}", f"{token}.dkim.amazonses.com")


@pytest.fixture
def stub() -> Iterator[tuple[str, SesV2Stub]]:
    with running_ses_v2_stub() as running:
        yield running


Run = Callable[..., tuple[int, dict[str, dict[str, Any]]]]


@pytest.fixture
def doctor(tmp_path: Path, dns: LoopbackDns, feedback: Feedback) -> Run:
    ses_zone(dns)

    def run(endpoint: str, *, queue: bool = True) -> tuple[int, dict[str, dict[str, Any]]]:
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        queue_line = f'sqs_queue_url = "{feedback.queue_url}"\n' if queue else ""
        (data / "waypost.toml").write_text(
            f'mail_domain = "{DOMAIN}"\nbase_url = "https://{DOMAIN}"\ndns_nameservers = ["{dns.nameserver}"]\n'
            f'[outbound]\ntransport = "ses"\nbounce_domain = "{BOUNCES}"\n'
            f'[ses]\nregion = "{REGION}"\nendpoint_url = "{endpoint}"\nconfiguration_set = "{CONFIG_SET}"\n'
            f'[feedback]\nsns_topic_arns = ["{feedback.topic_arn}"]\n{queue_line}'
            f'[doctor]\nreceiving = "ses"\n', encoding="utf-8")
        result = CliRunner().invoke(cli, ["doctor", "--json", "--data-dir", str(data)])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        report = json.loads(result.stdout)
        return result.exit_code, {check["name"]: check for check in report["checks"]}

    return run


def serve_production(stub: SesV2Stub, topic_arn: str) -> None:
    stub.responses.update({
        "/v2/email/account": production_account(),
        f"/v2/email/identities/{DOMAIN}": verified_identity(DOMAIN, BOUNCES),
        f"/v2/email/configuration-sets/{CONFIG_SET}": {"ConfigurationSetName": CONFIG_SET},
        f"/v2/email/configuration-sets/{CONFIG_SET}/event-destinations": event_destinations(topic_arn),
    })


def test_a_production_account_with_everything_in_place_passes(doctor: Run, stub: tuple[str, SesV2Stub],
                                                               feedback: Feedback) -> None:
    endpoint, ses = stub
    serve_production(ses, feedback.topic_arn)
    code, checks = doctor(endpoint)
    assert {n: c["status"] for n, c in checks.items() if c["status"] not in ("ok", "info")} == {}
    assert code == 0
    assert {"ses.production", "ses.sending", "ses.quota", "ses.suppression", "ses.identity", "ses.dkim",
            "ses.mail_from", "ses.configuration_set", "ses.events", "spf", "mail_from.mx", "mx"} <= set(checks)
    assert "50000 per 24 h, 14 per second" in checks["ses.quota"]["found"]
    assert "3 of 3 CNAMEs resolve" in checks["ses.dkim"]["found"]
    assert "/v2/email/account" in ses.requests  # the production path, really asked


# what the stub serves differently → (check, status, words found, exit status)
ACCOUNT_STATES: dict[str, tuple[Callable[[SesV2Stub, str], None], tuple[str, str, str, int]]] = {
    "sandbox": (lambda s, t: s.responses["/v2/email/account"].update(ProductionAccessEnabled=False),
                ("ses.production", "warn", "sandbox", 1)),
    "shut_down": (lambda s, t: s.responses["/v2/email/account"].update(SendingEnabled=False,
                                                                        EnforcementStatus="SHUTDOWN"),
                  ("ses.sending", "fail", "enforcement SHUTDOWN", 2)),
    "probation": (lambda s, t: s.responses["/v2/email/account"].update(EnforcementStatus="PROBATION"),
                  ("ses.sending", "warn", "enforcement PROBATION", 1)),
    "suppression_bounce_only": (
        lambda s, t: s.responses["/v2/email/account"].update(SuppressionAttributes={"SuppressedReasons": ["BOUNCE"]}),
        ("ses.suppression", "warn", "for BOUNCE", 1)),
    "events_missing_delay_and_subscription": (
        lambda s, t: s.responses[f"/v2/email/configuration-sets/{CONFIG_SET}/event-destinations"].update(
            event_destinations(t, ["BOUNCE", "COMPLAINT", "DELIVERY", "REJECT", "RENDERING_FAILURE"])),
        ("ses.events", "fail", "missing: DELIVERY_DELAY, SUBSCRIPTION", 2)),
    "events_to_another_topic": (
        lambda s, t: s.responses[f"/v2/email/configuration-sets/{CONFIG_SET}/event-destinations"].update(
            event_destinations(t.replace("ses-events", "someone-elses"))),
        ("ses.events", "fail", "0 of 1 destinations lead to Waypost", 2)),
    "dkim_pending": (
        lambda s, t: s.responses[f"/v2/email/identities/{DOMAIN}"]["DkimAttributes"].update(Status="PENDING"),
        ("ses.dkim", "fail", "status PENDING", 2)),
    "mail_from_failed": (
        lambda s, t: s.responses[f"/v2/email/identities/{DOMAIN}"]["MailFromAttributes"].update(
            MailFromDomainStatus="FAILED"),
        ("ses.mail_from", "fail", "status FAILED", 2)),
}


@pytest.mark.parametrize("state", sorted(ACCOUNT_STATES))
def test_each_account_state_is_reported(state: str, doctor: Run, stub: tuple[str, SesV2Stub],
                                        feedback: Feedback) -> None:
    endpoint, ses = stub
    serve_production(ses, feedback.topic_arn)
    change, (name, status, words, exit_code) = ACCOUNT_STATES[state]
    change(ses, feedback.topic_arn)
    code, checks = doctor(endpoint)
    assert (checks[name]["status"], code) == (status, exit_code), checks[name]
    assert words in checks[name]["found"] and checks[name]["why"]
    assert checks[name]["fix"]


def test_a_topic_the_queue_does_not_subscribe_to_leads_nowhere(doctor: Run, stub: tuple[str, SesV2Stub],
                                                               feedback: Feedback) -> None:
    endpoint, ses = stub
    serve_production(ses, feedback.topic_arn)
    sns = boto3.client("sns", region_name=REGION)
    for subscription in sns.list_subscriptions_by_topic(TopicArn=feedback.topic_arn)["Subscriptions"]:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    code, checks = doctor(endpoint)
    assert (checks["ses.events"]["status"], code) == ("fail", 2)
    # without a queue (SNS posts to /hooks/sns) the topic itself is the route: nothing to subscribe
    code, checks = doctor(endpoint, queue=False)
    assert checks["ses.events"]["status"] == "ok"


def test_a_missing_dkim_cname_is_named(doctor: Run, stub: tuple[str, SesV2Stub], feedback: Feedback,
                                      dns: LoopbackDns) -> None:
    endpoint, ses = stub
    serve_production(ses, feedback.topic_arn)
    dns.remove(f"{TOKENS[1]}._domainkey.{DOMAIN}")
    code, checks = doctor(endpoint)
    assert (checks["ses.dkim"]["status"], code) == ("fail", 2)
    assert f"missing: {TOKENS[1]}._domainkey.{DOMAIN}" in checks["ses.dkim"]["found"]
    assert f"{TOKENS[1]}._domainkey.{DOMAIN}. CNAME {TOKENS[1]}.dkim.amazonses.com." in checks["ses.dkim"]["fix"]


# --- moto: what it implements ----------------------------------------------------------------------


def test_against_moto_an_unknown_identity_and_configuration_set_fail(doctor: Run, aws: str) -> None:
    code, checks = doctor(aws)
    assert code == 2
    assert checks["ses.identity"]["status"] == "fail" and "is not an SES identity" in checks["ses.identity"]["found"]
    assert checks["ses.configuration_set"]["status"] == "fail"
    assert "does not exist" in checks["ses.configuration_set"]["found"]
    # moto has no GetAccount: the doctor says it could not read the account, and goes on
    assert checks["ses.account"]["status"] == "fail" and "get_account failed" in checks["ses.account"]["found"]


def test_against_moto_an_unverified_identity_fails(doctor: Run, aws: str) -> None:
    ses = boto3.client("sesv2", region_name=REGION)
    ses.create_email_identity(EmailIdentity=DOMAIN)  # moto: VerifiedForSendingStatus stays false
    ses.create_configuration_set(ConfigurationSetName=CONFIG_SET)
    code, checks = doctor(aws)
    assert code == 2
    assert checks["ses.identity"]["status"] == "fail"
    assert "verified for sending False" in checks["ses.identity"]["found"]
    assert checks["ses.configuration_set"]["status"] == "ok"
    assert checks["ses.dkim"]["status"] == "fail"  # no Easy DKIM tokens
    # nor event destinations in v2: reported as unreadable, not as present
    assert "get_configuration_set_event_destinations failed" in checks["ses.events"]["found"]
