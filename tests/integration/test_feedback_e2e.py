"""The feedback loop end to end in SES mode, against moto in server mode (real HTTP on
loopback): a message goes out through SES v2, SES's notification comes back through SNS → SQS,
the consumer applies it, and the next send obeys it. The pause is lifted with the real CLI.

SES's notifications are generated (tests/support/ses_samples.py), and, when the shared corpus
is present, also made from its real samples: every test runs with each ``template``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import corpus_dir, waypost_command
from tests.integration.test_outbox import rows, run_jobs
from tests.support import ses_samples
from tests.support.moto_server import REGION
from waypost import runtime as wiring
from waypost.outbound import control, suppression
from waypost.outbound.outbox import OutboundMessage

DOMAIN = "waypost.test"
CORPUS_TEMPLATES = {"bounce": "relay_bounce_notification_from_simulator_ses_body.json",
                    "complaint": "relay_complaint_notification_from_simulator_ses_body.json"}
GENERATED_TEMPLATES: dict[str, Callable[[], dict[str, Any]]] = {
    "bounce": lambda: ses_samples.bounce([ses_samples.dsn_recipient("someone@example.org")], subtype="NoEmail"),
    "complaint": lambda: ses_samples.complaint(["someone@example.org"]),
}


@pytest.fixture(params=["generated", pytest.param("corpus", marks=pytest.mark.corpus)])
def template(request: pytest.FixtureRequest) -> Callable[[str], dict[str, Any]]:
    """``template("bounce")`` / ``template("complaint")``: an SES identity notification to adapt."""
    def load(kind: str) -> dict[str, Any]:
        if request.param == "corpus":
            return dict(json.loads((corpus_dir() / "ses" / CORPUS_TEMPLATES[kind]).read_text()))
        return GENERATED_TEMPLATES[kind]()

    return load


@pytest.fixture
def ses_world(aws: str) -> dict[str, str]:
    """A verified sending domain, and an SNS topic delivering to an SQS queue (raw delivery off)."""
    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity=DOMAIN)
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="ses-feedback")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns = boto3.client("sns", region_name=REGION)
    topic = sns.create_topic(Name="ses-feedback")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return {"endpoint": aws, "queue_url": queue_url, "topic": topic}


@pytest.fixture
def ses_runtime(ses_world: dict[str, str], make_settings: Callable[..., Any],
                database_url: str) -> Iterator[Callable[..., Any]]:
    built: list[Any] = []

    def build(**guard: Any) -> Any:
        runtime = wiring.build(make_settings(
            database={"url": database_url}, mail_domain=DOMAIN, base_url=f"https://{DOMAIN}",
            outbound={"transport": "ses", "limits_from_provider": False},
            ses={"region": REGION, "endpoint_url": ses_world["endpoint"]},
            feedback={"sqs_queue_url": ses_world["queue_url"], "sqs_wait_seconds": 1,
                      "sns_topic_arns": [ses_world["topic"]]},
            guard={"compromise_checks": False, "check_seconds": 0, **guard}))
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.close()


def send(runtime: Any, recipient: str, key: str) -> Any:
    raw = (f"From: Waypost journeys <journeys@{DOMAIN}>\r\nTo: {recipient}\r\nSubject: Your journey\r\n"
           f"Message-ID: <{key}@{DOMAIN}>\r\n\r\nHello\r\n").encode()
    with runtime.engine.begin() as conn:
        runtime.outbox.queue_message(conn, OutboundMessage(key, "journeys", recipient, f"journeys@{DOMAIN}",
                                                           "Your journey", f"<{key}@{DOMAIN}>", raw))
    run_jobs(runtime)
    return next(row for row in rows(runtime) if row.idempotency_key == key)


def notify(ses_world: dict[str, str], body: dict[str, Any], message_id: str, recipient: str,
           **changes: Any) -> None:
    """Publish an SES notification (``body``, adapted) about our message to the topic."""
    body["mail"]["messageId"] = message_id
    body["mail"]["destination"] = [recipient]
    for part, field in (("bounce", "bouncedRecipients"), ("complaint", "complainedRecipients")):
        if part in body:
            body[part][field] = [{**body[part][field][0], "emailAddress": recipient}]
            body[part]["feedbackId"] = f"feedback-{message_id}"
            body[part].update(changes)
    boto3.client("sns", region_name=REGION).publish(TopicArn=ses_world["topic"], Message=json.dumps(body))


def test_a_permanent_bounce_via_sqs_suppresses_the_next_send(ses_runtime: Any, ses_world: dict[str, str],
                                                             template: Callable[[str], Any]) -> None:
    runtime = ses_runtime()
    first = send(runtime, "ann@example.net", "reply-1")
    assert first.state == "sent" and first.provider_message_id

    notify(ses_world, template("bounce"), first.provider_message_id, "ann@example.net")
    handled = runtime.feedback_consumer().poll_once()

    assert handled == 1
    with runtime.engine.connect() as conn:
        entry = suppression.lookup(conn, "ann@example.net")
    assert entry is not None and entry.reason == suppression.Reason.BOUNCE and entry.source == "ses"
    second = send(runtime, "ann@example.net", "reply-2")
    assert second.state == "suppressed" and "BOUNCE" in second.last_error
    # the queue is empty: the message was deleted once its effect was committed
    again = boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=ses_world["queue_url"],
                                                                    WaitTimeSeconds=0)
    assert "Messages" not in again


def test_a_complaint_via_sqs_takes_the_sender_off_the_allowlist(ses_runtime: Any, ses_world: dict[str, str],
                                                                template: Callable[[str], Any]) -> None:
    runtime = ses_runtime()
    runtime.allowlist.add("bob@example.net")
    sent = send(runtime, "bob@example.net", "reply-bob")

    notify(ses_world, template("complaint"), sent.provider_message_id, "bob@example.net")
    runtime.feedback_consumer().poll_once()

    assert not runtime.allowlist.allows("bob@example.net")
    with runtime.engine.connect() as conn:
        entry = suppression.lookup(conn, "bob@example.net")
    assert entry is not None and entry.reason == suppression.Reason.COMPLAINT


def test_crossing_the_complaint_threshold_pauses_and_waypost_resume_resumes(
        ses_runtime: Any, ses_world: dict[str, str], database_url: str, template: Callable[[str], Any]) -> None:
    runtime = ses_runtime(min_sends=2, complaint_pause=0.2)
    sent = [send(runtime, f"c{n}@example.net", f"reply-c{n}") for n in range(2)]

    notify(ses_world, template("complaint"), sent[0].provider_message_id, "c0@example.net")
    runtime.feedback_consumer().poll_once()
    held = send(runtime, "c9@example.net", "reply-c9")

    assert held.state == "paused"
    with runtime.engine.connect() as conn:
        pause = control.paused(conn, "journeys")
    assert pause is not None and pause.paused_by == "reputation-guard" and "complaint rate 50.00%" in pause.reason

    env = {**os.environ, "WAYPOST_DATA_DIR": str(runtime.settings.data_dir), "WAYPOST_DATABASE__URL": database_url}
    done = subprocess.run(waypost_command("resume"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resumed: all sending" in done.stdout
    run_jobs(runtime, include_deferred=True)

    assert next(r for r in rows(runtime) if r.idempotency_key == "reply-c9").state == "sent"
