"""The SQS feedback consumer against moto in server mode (real HTTP on loopback).

SNS envelopes are made by moto itself: the queue is subscribed to SNS topics (raw delivery
off) and the SES JSON is published there, as SES would; a raw-delivery body and garbage are
sent to the queue directly. The SES JSON is generated (tests/support/ses_samples.py) and,
when the shared corpus is present, also taken from it: tests taking ``reports`` run on both.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.conftest import corpus_dir, wait_until
from tests.support import ses_samples
from tests.support.moto_server import REGION
from waypost.feedback.events import BounceType, FeedbackEvent, Kind
from waypost.feedback.sqs import SqsFeedbackConsumer

BOUNCE_SAMPLE = "relay_bounce_notification_from_simulator_ses_body.json"
DELIVERY_SAMPLE = "relay_delivery_notification_success_from_simulator_ses_body.json"
RECEIVED_SAMPLE = "relay_received_notification_action_example_ses_body.json"


def sample(name: str) -> str:
    return (corpus_dir() / "ses" / name).read_text()


@dataclass(frozen=True)
class Reports:
    """SES JSON bodies the tests put on the queue."""

    bounce: str  # a permanent bounce for one recipient
    bounce_recipient: str
    delivery: str
    received: str  # an inbound receipt notification: no feedback


@pytest.fixture(params=["generated", pytest.param("corpus", marks=pytest.mark.corpus)])
def reports(request: pytest.FixtureRequest) -> Reports:
    if request.param == "corpus":
        return Reports(sample(BOUNCE_SAMPLE), "bounce@simulator.amazonses.com", sample(DELIVERY_SAMPLE),
                       sample(RECEIVED_SAMPLE))
    bounce = ses_samples.bounce([ses_samples.dsn_recipient("gone@example.org")], subtype="NoEmail")
    return Reports(ses_samples.text(bounce), "gone@example.org",
                   ses_samples.text(ses_samples.delivery(["dora@example.org"])),
                   ses_samples.text(ses_samples.received()))


class Recorder:
    """``apply`` and ``keep_unreadable`` for the consumer, recording their calls."""

    def __init__(self, fail_applies: int = 0) -> None:
        self.applied: list[list[FeedbackEvent]] = []
        self.kept: list[tuple[str, str]] = []
        self.fail_applies = fail_applies
        self.apply_calls = 0
        self.changed = threading.Condition()

    def apply(self, events: list[FeedbackEvent]) -> None:
        with self.changed:
            self.apply_calls += 1
            if self.apply_calls <= self.fail_applies:
                raise RuntimeError("database is down")
            self.applied.append(events)
            self.changed.notify_all()

    def keep_unreadable(self, body: str, reason: str) -> None:
        self.kept.append((body, reason))

    def wait_for(self, count: int, timeout: float = 20.0) -> list[FeedbackEvent]:
        with self.changed:
            if not self.changed.wait_for(lambda: sum(map(len, self.applied)) >= count, timeout=timeout):
                pytest.fail(f"timed out after {timeout}s waiting for {count} applied events; got {self.applied}")
            return [e for batch in self.applied for e in batch]


@pytest.fixture
def sqs(aws: str) -> Iterator[Any]:
    client = boto3.client("sqs", region_name=REGION, endpoint_url=aws)
    yield client
    client.close()


@pytest.fixture
def sns(aws: str) -> Iterator[Any]:
    client = boto3.client("sns", region_name=REGION, endpoint_url=aws)
    yield client
    client.close()


def make_queue(sqs: Any, visibility_timeout: int = 30) -> str:
    url: str = sqs.create_queue(QueueName="ses-feedback",
                                Attributes={"VisibilityTimeout": str(visibility_timeout)})["QueueUrl"]
    return url


def subscribed_topic(sns: Any, sqs: Any, queue_url: str, name: str) -> str:
    """A topic delivering to the queue in SNS envelopes (raw delivery off)."""
    topic: str = sns.create_topic(Name=name)["TopicArn"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic


def queued(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def receive_now(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                                         WaitTimeSeconds=0).get("Messages", [])
    return messages


def consumer(sqs: Any, queue_url: str, recorder: Recorder, **options: Any) -> SqsFeedbackConsumer:
    options.setdefault("wait_seconds", 0)
    return SqsFeedbackConsumer(sqs, queue_url, recorder.apply, keep_unreadable=recorder.keep_unreadable, **options)


def test_one_batch_applied_once_unreadables_kept_and_everything_deleted(sqs: Any, sns: Any,
                                                                        reports: Reports) -> None:
    queue_url = make_queue(sqs)
    allowed = subscribed_topic(sns, sqs, queue_url, "ses-feedback")
    foreign = subscribed_topic(sns, sqs, queue_url, "someone-else")
    bounce = reports.bounce
    sqs.send_message(QueueUrl=queue_url, MessageBody=bounce)  # (a) raw delivery
    sns.publish(TopicArn=allowed, Message=bounce)  # (b) the same in an envelope
    sqs.send_message(QueueUrl=queue_url, MessageBody="not json at all")  # (c)
    sns.publish(TopicArn=foreign, Message=bounce)  # (d) a topic outside the allow-list
    recorder = Recorder()

    handled = consumer(sqs, queue_url, recorder, topic_arns=[allowed]).poll_once()

    assert handled == 4
    [events] = recorder.applied  # one apply for the whole batch
    assert [(e.kind, e.recipient, e.bounce_type) for e in events] == [
        (Kind.BOUNCE, reports.bounce_recipient, BounceType.PERMANENT)] * 2
    assert len({e.dedupe_key for e in events}) == 1  # the same report twice: the applier dedupes
    assert all(e.raw == bounce for e in events)
    reasons = sorted(reason for _, reason in recorder.kept)
    assert reasons[0].startswith("SQS message body is not JSON")
    assert reasons[1] == f"topic not allowed: {foreign}"
    assert {body for body, _ in recorder.kept} >= {"not json at all"}
    assert json.loads(next(b for b, r in recorder.kept if r.startswith("topic")))["TopicArn"] == foreign
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "0"})
    assert receive_now(sqs, queue_url) == []
    assert queued(sqs, queue_url) == 0


def test_nothing_is_deleted_when_apply_fails(sqs: Any, reports: Reports) -> None:
    queue_url = make_queue(sqs, visibility_timeout=0)  # redelivered at once
    sent = {sqs.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]
            for body in (reports.bounce, reports.delivery, "garbage")}
    recorder = Recorder(fail_applies=1)
    feedback = consumer(sqs, queue_url, recorder)

    with pytest.raises(RuntimeError, match="database is down"):
        feedback.poll_once()

    assert recorder.kept == []  # not even the garbage was set aside
    assert {m["MessageId"] for m in receive_now(sqs, queue_url)} == sent
    assert feedback.poll_once() == 3  # the next try applies and deletes them
    assert sorted(e.kind for e in recorder.applied[0]) == [Kind.BOUNCE, Kind.DELIVERY]
    assert [body for body, _ in recorder.kept] == ["garbage"]
    assert queued(sqs, queue_url) == 0


def test_an_unreadable_message_stays_when_it_cannot_be_kept(sqs: Any, reports: Reports) -> None:
    queue_url = make_queue(sqs, visibility_timeout=0)
    sqs.send_message(QueueUrl=queue_url, MessageBody=reports.bounce)
    garbage_id = sqs.send_message(QueueUrl=queue_url, MessageBody="garbage")["MessageId"]
    recorder = Recorder()

    def cannot_keep(body: str, reason: str) -> None:
        raise OSError("disk full")

    handled = SqsFeedbackConsumer(sqs, queue_url, recorder.apply, keep_unreadable=cannot_keep,
                                  wait_seconds=0).poll_once()

    assert handled == 1
    assert len(recorder.applied) == 1
    assert [m["MessageId"] for m in receive_now(sqs, queue_url)] == [garbage_id]


class FailingDeletes:
    """The moto client, except that DeleteMessageBatch reports its first entry as failed
    (without deleting it) in the first ``failures`` calls, as SQS may for single entries."""

    def __init__(self, client: Any, failures: int) -> None:
        self.client = client
        self.failures = failures
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append([e["Id"] for e in Entries])
        if self.failures <= 0:
            return dict(self.client.delete_message_batch(QueueUrl=QueueUrl, Entries=Entries))
        self.failures -= 1
        first, rest = Entries[0], Entries[1:]
        response = dict(self.client.delete_message_batch(QueueUrl=QueueUrl, Entries=rest)) if rest else {}
        failed = {"Id": first["Id"], "SenderFault": False, "Code": "InternalError", "Message": "try again"}
        return {**response, "Failed": [*response.get("Failed", []), failed]}


@pytest.mark.parametrize(("failures", "left"), [(1, 0), (2, 1)])
def test_failed_deletes_are_retried_once_then_left_to_come_back(
        sqs: Any, failures: int, left: int, caplog: pytest.LogCaptureFixture, reports: Reports) -> None:
    queue_url = make_queue(sqs, visibility_timeout=0)
    sqs.send_message(QueueUrl=queue_url, MessageBody=reports.bounce)
    sqs.send_message(QueueUrl=queue_url, MessageBody=reports.delivery)
    client = FailingDeletes(sqs, failures)
    recorder = Recorder()

    with caplog.at_level("WARNING", logger="waypost.feedback.sqs"):
        handled = consumer(client, queue_url, recorder).poll_once()

    assert handled == 2 and len(recorder.applied) == 1
    assert client.calls == [["0", "1"], ["0"]]
    remaining = receive_now(sqs, queue_url)
    assert len(remaining) == left
    for message in remaining:
        assert f"could not delete SQS message {message['MessageId']} (InternalError: try again)" in caplog.text


def test_received_notifications_are_deleted_without_an_apply(sqs: Any, reports: Reports) -> None:
    queue_url = make_queue(sqs)
    sqs.send_message(QueueUrl=queue_url, MessageBody=reports.received)
    recorder = Recorder()
    feedback = consumer(sqs, queue_url, recorder)

    assert feedback.poll_once() == 1

    assert recorder.applied == [] and recorder.kept == []
    assert feedback.counts["ignored"] == 1 and feedback.counts["deleted"] == 1
    assert queued(sqs, queue_url) == 0


def test_run_processes_messages_while_running_and_stops_promptly(sqs: Any, reports: Reports) -> None:
    queue_url = make_queue(sqs)
    recorder = Recorder()
    feedback = consumer(sqs, queue_url, recorder, wait_seconds=1)
    stop = threading.Event()
    thread = threading.Thread(target=feedback.run, args=(stop,), name="sqs-feedback", daemon=True)
    thread.start()
    try:
        sqs.send_message(QueueUrl=queue_url, MessageBody=reports.bounce)
        assert [e.kind for e in recorder.wait_for(1)] == [Kind.BOUNCE]
        sqs.send_message(QueueUrl=queue_url, MessageBody=reports.delivery)
        assert [e.kind for e in recorder.wait_for(2)] == [Kind.BOUNCE, Kind.DELIVERY]
        wait_until(lambda: queued(sqs, queue_url) == 0, message="the queue to be empty")
    finally:
        stop.set()
        thread.join(timeout=5)  # one long poll of 1 s, plus slack
    assert not thread.is_alive(), "the consumer did not stop within 5 s of being asked"


def test_run_backs_off_after_a_failure_and_tries_again(sqs: Any, caplog: pytest.LogCaptureFixture,
                                                       reports: Reports) -> None:
    queue_url = make_queue(sqs, visibility_timeout=0)
    recorder = Recorder(fail_applies=2)
    feedback = consumer(sqs, queue_url, recorder, wait_seconds=1)
    feedback.BACKOFF_START = 0.05
    stop = threading.Event()
    sqs.send_message(QueueUrl=queue_url, MessageBody=reports.bounce)
    thread = threading.Thread(target=feedback.run, args=(stop,), name="sqs-feedback", daemon=True)
    with caplog.at_level("ERROR", logger="waypost.feedback.sqs"):
        thread.start()
        try:
            assert [e.kind for e in recorder.wait_for(1)] == [Kind.BOUNCE]
        finally:
            stop.set()
            thread.join(timeout=10)
    assert not thread.is_alive()
    assert recorder.apply_calls == 3
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2 and "(2 in a row)" in failures[1]


def test_stop_cuts_a_long_back_off_short(sqs: Any, aws: str, caplog: pytest.LogCaptureFixture) -> None:
    feedback = consumer(sqs, f"{aws}/123456789012/no-such-queue", Recorder())
    feedback.BACKOFF_START = 30.0
    stop = threading.Event()
    thread = threading.Thread(target=feedback.run, args=(stop,), name="sqs-feedback", daemon=True)
    with caplog.at_level("ERROR", logger="waypost.feedback.sqs"):
        thread.start()
        wait_until(lambda: any("trying again in 30.0s" in r.getMessage() for r in caplog.records),
                   message="the first failure")
        stop.set()
        thread.join(timeout=5)  # not the 30 s back-off
    assert not thread.is_alive(), "the consumer did not stop within 5 s of being asked"
    assert "QueueDoesNotExist" in caplog.text or "NonExistentQueue" in caplog.text


def test_batch_and_wait_limits_are_checked(sqs: Any) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match="batch"):
        consumer(sqs, "q", recorder, batch=11)
    with pytest.raises(ValueError, match="wait_seconds"):
        consumer(sqs, "q", recorder, wait_seconds=21)


def test_one_report_as_raw_notification_and_wrapped_event_record_gives_one_key_per_recipient(
        sqs: Any, sns: Any) -> None:
    queue_url = make_queue(sqs)
    topic = subscribed_topic(sns, sqs, queue_url, "ses-events")
    notification = ses_samples.bounce([ses_samples.dsn_recipient("ann@example.org"),
                                       ses_samples.dsn_recipient("bob@example.org", "5.2.1")])
    sqs.send_message(QueueUrl=queue_url, MessageBody=ses_samples.text(notification))  # raw delivery
    sns.publish(TopicArn=topic, Message=ses_samples.text(ses_samples.as_event(notification)))  # in an envelope
    recorder = Recorder()

    assert consumer(sqs, queue_url, recorder, topic_arns=[topic]).poll_once() == 2

    [events] = recorder.applied
    assert sorted((e.recipient, e.status) for e in events) == [
        ("ann@example.org", "5.1.1"), ("ann@example.org", "5.1.1"), ("bob@example.org", "5.2.1"),
        ("bob@example.org", "5.2.1")]
    keys = {(e.recipient, e.dedupe_key) for e in events}
    # each recipient's two events share a key (the applier dedupes them); the recipients' keys differ
    assert sorted(recipient for recipient, _ in keys) == ["ann@example.org", "bob@example.org"]
    assert len({key for _, key in keys}) == 2
    assert recorder.kept == [] and queued(sqs, queue_url) == 0
