"""`waypost drill` in SES mode against moto in server mode: the drill sends through the real
SES v2 adapter and reads the real SQS queue with the worker's consumer. moto produces no events
for the mailbox simulator (REFERENCE-SES.md §10), so a stand-in for SES watches what moto
stored as sent and publishes to SNS the notification SES would send for each simulator
address (tests/support/ses_samples.py), about the message moto accepted."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from tests.support import ses_samples
from tests.support.moto_server import REGION, sent_raw_messages
from waypost import runtime as wiring
from waypost.drill.runner import Drill
from waypost.store.models import feedback_events, suppressions

DOMAIN = "waypost.test"
Notification = Callable[[str], dict[str, Any]]
AS_SES_SENDS: dict[str, Notification] = {
    "success": lambda to: ses_samples.delivery([to]),
    "bounce": lambda to: ses_samples.bounce([ses_samples.dsn_recipient(to)]),
    "complaint": lambda to: ses_samples.complaint([to]),
    "suppressionlist": lambda to: ses_samples.bounce([ses_samples.dsn_recipient(to)], subtype="Suppressed"),
    "ooto": lambda to: ses_samples.delivery([to]),
}


@pytest.fixture
def ses_world(aws: str) -> dict[str, str]:
    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity=DOMAIN)
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="ses-feedback")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns = boto3.client("sns", region_name=REGION)
    topic = sns.create_topic(Name="ses-feedback")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return {"endpoint": aws, "queue_url": queue_url, "topic": topic}


@pytest.fixture
def ses_runtime(ses_world: dict[str, str], make_settings: Callable[..., Any], database_url: str) -> Iterator[Any]:
    runtime = wiring.build(make_settings(
        database={"url": database_url}, mail_domain=DOMAIN, base_url=f"https://{DOMAIN}",
        outbound={"transport": "ses", "limits_from_provider": False},
        ses={"region": REGION, "endpoint_url": ses_world["endpoint"]},
        feedback={"sqs_queue_url": ses_world["queue_url"], "sqs_wait_seconds": 0,
                  "sns_topic_arns": [ses_world["topic"]]},
        guard={"compromise_checks": False, "check_seconds": 0}))
    yield runtime
    runtime.close()


class StandInForSes:
    """Publishes one notification per simulator recipient moto stored as sent."""

    def __init__(self, world: dict[str, str], notifications: dict[str, Notification]) -> None:
        self.world = world
        self.notifications = notifications
        self.published: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ses-stand-in", daemon=True)

    def __enter__(self) -> StandInForSes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        sns = boto3.client("sns", region_name=REGION)
        seen: set[str] = set()
        while not self.stop.wait(0.05):
            for message in sent_raw_messages(self.world["endpoint"]):
                for to in message["destinations"]:
                    if (message["id"], to) in seen or not to.endswith("@" + ses_samples.SIMULATOR):
                        continue
                    seen.add((message["id"], to))
                    body = self.notifications[to.partition("+")[0]](to)
                    body["mail"] = ses_samples.mail([to], message_id=message["id"])
                    sns.publish(TopicArn=self.world["topic"], Message=json.dumps(body))
                    self.published.append(to)


def test_ses_mode_drills_the_mailbox_simulator_through_sqs(ses_runtime: Any, ses_world: dict[str, str]) -> None:
    with StandInForSes(ses_world, AS_SES_SENDS) as ses:
        run = Drill(ses_runtime, timeout=30).run()

    assert run.passed, run.to_dict()
    assert [o.scenario for o in run.outcomes] == ["success", "bounce", "complaint", "suppressionlist", "ooto"]
    assert sorted(ses.published) == sorted(o.address for o in run.outcomes)
    assert all(o.address.endswith("@simulator.amazonses.com") and o.provider_id for o in run.outcomes)
    with ses_runtime.engine.connect() as conn:
        events = conn.execute(sa.select(feedback_events)).all()
        assert conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar() == 0
    assert {(e.kind, e.bounce_subtype) for e in events} >= {("bounce", "Suppressed"), ("bounce", "General"),
                                                              ("complaint", None), ("delivery", None)}
    assert all(e.counts_as is None and e.source == "ses" for e in events)


def test_a_bounce_classified_wrong_fails_that_scenario(ses_runtime: Any, ses_world: dict[str, str]) -> None:
    wrong = {**AS_SES_SENDS, "bounce": lambda to: ses_samples.bounce([ses_samples.dsn_recipient(to, "4.2.2")],
                                                                      bounce_type="Transient", subtype="MailboxFull")}
    with StandInForSes(ses_world, wrong):
        run = Drill(ses_runtime, timeout=5).run()

    verdicts = {o.scenario: o for o in run.outcomes}
    assert run.verdict == "fail"
    assert verdicts["bounce"].verdict == "fail" and "Transient" in verdicts["bounce"].why
    assert all(o.verdict == "pass" for name, o in verdicts.items() if name != "bounce")
