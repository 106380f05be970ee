"""Mail received by SES, end to end against moto in server mode (real HTTP on loopback, boto3
exactly as in production): SES's S3 action is played by putting the mail into the bucket and
its notification through SNS into the ingress queue; a worker answers through SES v2 (read back
from moto), and SES's bounce of that answer suppresses. Blobs live in S3 too."""

from __future__ import annotations

import email
import email.policy
import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from tests.conftest import corpus_dir
from tests.integration.test_outbox import run_jobs
from tests.support import ses_receipts, ses_samples
from tests.support.loops import run_apart, until
from tests.support.moto_server import REGION, sent_raw_messages
from waypost import runtime as wiring
from waypost.aws import lambda_handler
from waypost.outbound import suppression
from waypost.store.models import feedback_unreadable, inbound_messages

DOMAIN = "waypost.test"
INBOUND_BUCKET = "waypost-inbound"  # where SES's receipt rule stores mail
BLOB_BUCKET = "waypost-blobs"
NAME_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(params=["generated", pytest.param("corpus", marks=pytest.mark.corpus)])
def template(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "corpus":
        return dict(json.loads((corpus_dir() / "ses" / ses_receipts.CORPUS_SAMPLE).read_text()))
    return ses_receipts.generated()


def make_world(aws: str) -> dict[str, str]:
    """What the stack creates: the sending identity, the buckets, and two topics each
    delivering to its queue (raw delivery off): SES receipts and SES feedback."""
    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity=DOMAIN)
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (INBOUND_BUCKET, BLOB_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    sqs, sns = boto3.client("sqs", region_name=REGION), boto3.client("sns", region_name=REGION)
    world = {"endpoint": aws}
    for name in ("inbound", "feedback"):
        queue_url = sqs.create_queue(QueueName=f"ses-{name}", Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        topic = sns.create_topic(Name=f"ses-{name}")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        world |= {f"{name}_queue": queue_url, f"{name}_arn": arn, f"{name}_topic": topic}
    return world


def ses_settings(world: dict[str, str]) -> dict[str, Any]:
    """The settings of an AWS deployment (the test's make_settings adds the rest)."""
    return {"mail_domain": DOMAIN, "base_url": f"https://{DOMAIN}",
            "outbound": {"transport": "ses", "limits_from_provider": False},
            "ses": {"region": REGION, "endpoint_url": world["endpoint"]},
            "feedback": {"sqs_queue_url": world["feedback_queue"], "sqs_wait_seconds": 0,
                         "sns_topic_arns": [world["feedback_topic"]]},
            "ses_ingress": {"sqs_queue_url": world["inbound_queue"], "sqs_wait_seconds": 0,
                            "sns_topic_arns": [world["inbound_topic"]]},
            "blobs": {"backend": "s3", "s3_bucket": BLOB_BUCKET, "s3_name_key": NAME_KEY},
            "guard": {"compromise_checks": False}, "doctor": {"interval_hours": 0}}


@pytest.fixture
def world(aws: str) -> dict[str, str]:
    return make_world(aws)


@pytest.fixture
def ses_runtime(world: dict[str, str], make_settings: Callable[..., Any], database_url: str) -> Iterator[Any]:
    runtime = wiring.build(make_settings(database={"url": database_url}, **ses_settings(world)))
    runtime.allowlist.add("ann@example.org")
    yield runtime
    runtime.close()


def plain_mail(sender: str = "ann@example.org", subject: str = "Lisbon") -> bytes:
    message = EmailMessage()
    message["From"] = f"Ann <{sender}>"
    message["To"] = f"journeys@{DOMAIN}"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@example.org>"
    message["Date"] = "Sat, 13 Jul 2024 20:00:00 +0100"
    message.set_content("no photos this time")
    return message.as_bytes()


def ses_receives(world: dict[str, str], template: dict[str, Any], ses_id: str, raw: bytes | None, *,
                 sender: str = "ann@example.org", verdicts: dict[str, str] | None = None) -> None:
    """What SES does for one mail with an S3 action: the object first, then the notification."""
    key = f"mail/{ses_id}"
    if raw is not None:
        boto3.client("s3", region_name=REGION).put_object(Bucket=INBOUND_BUCKET, Key=key, Body=raw)
    document = ses_receipts.received_s3(template, ses_id=ses_id, bucket=INBOUND_BUCKET, key=key, sender=sender,
                                        recipient=f"journeys@{DOMAIN}", verdicts=verdicts)
    boto3.client("sns", region_name=REGION).publish(TopicArn=world["inbound_topic"],
                                                    Message=ses_receipts.text(document))


def inbound_rows(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(inbound_messages).order_by(inbound_messages.c.received_at)))


def unreadable(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(feedback_unreadable).where(feedback_unreadable.c.source == "ses-ingress")))


def queue_is_empty(queue_url: str) -> bool:
    return "Messages" not in boto3.client("sqs", region_name=REGION).receive_message(
        QueueUrl=queue_url, WaitTimeSeconds=0, VisibilityTimeout=0)


def replies(world: dict[str, str]) -> list[email.message.EmailMessage]:
    return [email.message_from_string(sent["raw_data"], policy=email.policy.default)
            for sent in sent_raw_messages(world["endpoint"])]


def test_a_mail_received_by_ses_is_answered_through_ses_and_its_bounce_suppresses(
        ses_runtime: Any, world: dict[str, str], template: dict[str, Any]) -> None:
    ses_receives(world, template, "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0", plain_mail())

    assert ses_runtime.ses_ingress().poll_once() == 1
    assert queue_is_empty(world["inbound_queue"])  # deleted once the row and job were committed
    [row] = inbound_rows(ses_runtime)
    assert (row.ingress, row.ses_message_id, row.mail_from) == ("ses", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0",
                                                                 "ann@example.org")
    assert row.rcpt_tos == [f"journeys@{DOMAIN}"] and row.auth["source"] == "ses"
    run_jobs(ses_runtime)

    [reply] = replies(world)
    assert reply["To"] == "ann@example.org" and reply["In-Reply-To"] == "<Lisbon@example.org>"
    assert inbound_rows(ses_runtime)[0].status == "processed"
    sent_id = sent_raw_messages(world["endpoint"])[0]["id"]
    bounce = ses_samples.bounce([ses_samples.dsn_recipient("ann@example.org")], subtype="General")
    bounce["mail"]["messageId"] = sent_id
    boto3.client("sns", region_name=REGION).publish(TopicArn=world["feedback_topic"], Message=json.dumps(bounce))
    assert ses_runtime.feedback_consumer().poll_once() == 1
    with ses_runtime.engine.connect() as conn:
        entry = suppression.lookup(conn, "ann@example.org")
    assert entry is not None and entry.reason == suppression.Reason.BOUNCE


def test_blobs_in_s3_are_encrypted_and_their_names_reveal_nothing(ses_runtime: Any, world: dict[str, str],
                                                                 template: dict[str, Any]) -> None:
    ses_runtime.settings.model_copy()  # the runtime's settings name the S3 store
    ses_receives(world, template, "feedfacefeedfacefeedfacefeedfacefeedface", plain_mail())
    ses_runtime.ses_ingress().poll_once()
    [row] = inbound_rows(ses_runtime)

    s3 = boto3.client("s3", region_name=REGION)
    names = [item["Key"] for item in s3.list_objects_v2(Bucket=BLOB_BUCKET).get("Contents", [])]
    assert len(names) == 1 and re.fullmatch(r"inbound/[a-z2-7]+", names[0]), names
    assert row.id not in names[0] and f"{row.received_at:%Y}" not in names[0]
    assert s3.head_object(Bucket=BLOB_BUCKET, Key=names[0])["ServerSideEncryption"] == "AES256"
    assert ses_runtime.blobs.get(row.blob_key) == plain_mail()
    assert [key for key, _ in ses_runtime.blobs.iter_keys("inbound")] == [row.blob_key]


def test_every_record_of_a_message_is_taken_and_each_mail_once(ses_runtime: Any, world: dict[str, str],
                                                              template: dict[str, Any]) -> None:
    s3, sqs = boto3.client("s3", region_name=REGION), boto3.client("sqs", region_name=REGION)
    records = []
    for index in range(3):
        raw = plain_mail(subject=f"Trip {index}")
        s3.put_object(Bucket=INBOUND_BUCKET, Key=f"mail/ses-{index}", Body=raw)
        records.append(ses_receipts.s3_event(INBOUND_BUCKET, f"mail/ses-{index}", len(raw)))
    body = json.dumps({"Records": records})  # one S3 event message holding three records
    sqs.send_message(QueueUrl=world["inbound_queue"], MessageBody=body)
    sqs.send_message(QueueUrl=world["inbound_queue"], MessageBody=body)  # SQS delivers at least once
    ses_receives(world, template, "ses-1", None)  # and SES announces one of them as well

    consumer = ses_runtime.ses_ingress()
    while consumer.poll_once():
        pass

    rows = inbound_rows(ses_runtime)
    assert sorted(row.ses_message_id for row in rows) == ["ses-0", "ses-1", "ses-2"]
    assert consumer.counts["accepted"] == 3 and consumer.counts["duplicates"] == 4
    # an S3 event has no envelope: the recipients come from the mail's To
    assert all(row.rcpt_tos == [f"journeys@{DOMAIN}"] for row in rows)
    assert queue_is_empty(world["inbound_queue"])


def test_a_missing_object_is_kept_with_its_reason_and_leaves_the_queue(ses_runtime: Any, world: dict[str, str],
                                                                      template: dict[str, Any]) -> None:
    ses_receives(world, template, "gone-before-we-came", None)

    assert ses_runtime.ses_ingress().poll_once() == 1

    [kept] = unreadable(ses_runtime)
    assert "gone-before-we-came" in kept.reason and "missing" in kept.reason
    assert json.loads(kept.body)["Type"] == "Notification"  # the whole body, for the operator
    assert inbound_rows(ses_runtime) == [] and queue_is_empty(world["inbound_queue"])


def test_an_unreadable_notification_is_kept_with_its_reason(ses_runtime: Any, world: dict[str, str]) -> None:
    boto3.client("sqs", region_name=REGION).send_message(QueueUrl=world["inbound_queue"], MessageBody="{not json")

    assert ses_runtime.ses_ingress().poll_once() == 1

    [kept] = unreadable(ses_runtime)
    assert kept.body == "{not json" and kept.reason
    assert queue_is_empty(world["inbound_queue"])


@pytest.mark.parametrize("verdict", ["virusVerdict", "spamVerdict"])
def test_an_ses_virus_or_spam_fail_refuses_the_mail_without_reply(ses_runtime: Any, world: dict[str, str],
                                                                  template: dict[str, Any], verdict: str) -> None:
    raw = plain_mail().replace(b"Subject:", b"X-SES-Virus-Verdict: PASS\nX-SES-Spam-Verdict: PASS\nSubject:")
    ses_receives(world, template, "infected", raw, verdicts={verdict: "FAIL"})
    ses_runtime.ses_ingress().poll_once()
    run_jobs(ses_runtime)

    [row] = inbound_rows(ses_runtime)
    assert row.status == "refused" and row.reason.startswith("spam-or-virus")  # SES's word, not the headers'
    assert replies(world) == []


@pytest.mark.parametrize("encoding", ["UTF-8", "BASE64"])
def test_a_mail_carried_inline_by_the_sns_action_is_answered(ses_runtime: Any, world: dict[str, str],
                                                             template: dict[str, Any], encoding: str) -> None:
    document = ses_receipts.received_inline(template, plain_mail(subject="Inline"), ses_id="inline-1",
                                            sender="ann@example.org", recipient=f"journeys@{DOMAIN}",
                                            encoding=encoding)
    boto3.client("sns", region_name=REGION).publish(TopicArn=world["inbound_topic"],
                                                    Message=ses_receipts.text(document))
    ses_runtime.ses_ingress().poll_once()
    run_jobs(ses_runtime)

    [row] = inbound_rows(ses_runtime)
    assert row.status == "processed" and ses_runtime.blobs.exists(row.blob_key) is False  # purged once answered
    [reply] = replies(world)
    assert reply["In-Reply-To"] == "<Inline@example.org>"


def test_the_lambda_handler_reports_only_the_records_that_failed(ses_runtime: Any, world: dict[str, str],
                                                                template: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lambda_handler, "_handlers", lambda_handler.handlers_for(ses_runtime))
    raw = plain_mail(subject="By Lambda")
    boto3.client("s3", region_name=REGION).put_object(Bucket=INBOUND_BUCKET, Key="mail/by-lambda", Body=raw)
    receipt = ses_receipts.received_s3(template, ses_id="by-lambda", bucket=INBOUND_BUCKET, key="mail/by-lambda",
                                       sender="ann@example.org", recipient=f"journeys@{DOMAIN}")
    bounce = ses_samples.bounce([ses_samples.dsn_recipient("gone@example.net")])
    records = [
        {"messageId": "m-ingress", "eventSourceARN": world["inbound_arn"],
         "body": ses_samples.wrapped(receipt, world["inbound_topic"])},
        {"messageId": "m-feedback", "eventSourceARN": world["feedback_arn"],
         "body": ses_samples.wrapped(bounce, world["feedback_topic"])},
        {"messageId": "m-stranger", "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:someone-elses",
         "body": "{}"},
    ]

    answer = lambda_handler.lambda_handler({"Records": records}, None)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-stranger"}]}
    assert [row.ses_message_id for row in inbound_rows(ses_runtime)] == ["by-lambda"]
    with ses_runtime.engine.connect() as conn:
        assert suppression.lookup(conn, "gone@example.net") is not None


def test_presigned_photo_urls_read_the_blob_without_credentials(ses_runtime: Any) -> None:
    ses_runtime.blobs.put("photos/abc/display.jpg", b"\xff\xd8jpeg bytes")
    url = ses_runtime.blobs.presigned_url("photos/abc/display.jpg", 60)

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        assert response.read() == b"\xff\xd8jpeg bytes"


def test_journey_photos_can_be_served_by_presigned_s3_urls(world: dict[str, str], make_settings: Callable[..., Any],
                                                           database_url: str, template: dict[str, Any]) -> None:
    from starlette.testclient import TestClient

    from tests.integration.test_pipeline import photo_mail
    from waypost.store.models import journeys, photos
    from waypost.web.app import create_app

    settings = ses_settings(world)
    settings["blobs"] |= {"photo_urls": "presigned", "presigned_seconds": 120}
    runtime = wiring.build(make_settings(database={"url": database_url}, **settings))
    try:
        runtime.allowlist.add("ann@example.org")
        ses_receives(world, template, "with-photos", photo_mail().as_bytes())
        runtime.ses_ingress().poll_once()
        run_jobs(runtime)
        with runtime.engine.connect() as conn:
            token = conn.execute(sa.select(journeys.c.token)).scalar_one()
            photo = conn.execute(sa.select(photos.c.public_id).limit(1)).scalar_one()
        client = TestClient(create_app(runtime), base_url=f"https://{DOMAIN}")

        answer = client.get(f"/j/{token}/photos/{photo}/display.jpg", follow_redirects=False)
        page = client.get(f"/j/{token}")
    finally:
        runtime.close()

    assert answer.status_code == 307 and answer.headers["location"].startswith(world["endpoint"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(answer.headers["location"], timeout=10) as response:
        assert response.read()[:2] == b"\xff\xd8"  # a JPEG, read from S3 without credentials
    assert world["endpoint"] in page.headers["content-security-policy"]  # the page may show it


def received_objects() -> list[str]:
    listing = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=INBOUND_BUCKET)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_ses_own_object_is_deleted_once_the_mail_is_committed(ses_runtime: Any, world: dict[str, str],
                                                               template: dict[str, Any]) -> None:
    ses_receives(world, template, "kept-once", plain_mail())
    assert received_objects() == ["mail/kept-once"]

    consumer = ses_runtime.ses_ingress()
    assert consumer.poll_once() == 1

    [row] = inbound_rows(ses_runtime)
    assert received_objects() == [] and consumer.counts["received_deleted"] == 1
    assert ses_runtime.blobs.get(row.blob_key) == plain_mail()  # the one copy left: Waypost's own


def test_ses_own_object_is_kept_when_the_commit_fails(ses_runtime: Any, world: dict[str, str],
                                                      template: dict[str, Any]) -> None:
    from tests.integration.test_smtp_ingress import FailingCommitEngine
    from waypost.intake_wiring import ses_ingress
    from waypost.pipeline.inbox import Inbox

    class LostDatabase(FailingCommitEngine):
        def __getattr__(self, name: str) -> Any:  # reads still work; every commit fails
            return getattr(self.real, name)

    ses_receives(world, template, "not-committed", plain_mail())
    inbox = Inbox(LostDatabase(ses_runtime.engine), ses_runtime.blobs, max_attempts=3)  # type: ignore[arg-type]
    consumer = ses_ingress(ses_runtime.settings, inbox, ses_runtime.blobs, ses_runtime.intake)

    assert consumer.poll_once() == 0  # not taken: the message stays on the queue

    assert received_objects() == ["mail/not-committed"] and consumer.counts["received_deleted"] == 0
    assert inbound_rows(ses_runtime) == []
    again = ses_runtime.ses_ingress()  # SQS delivers it again after its visibility timeout
    run_apart(until(lambda: again.poll_once() == 1, within=30, what="the receipt delivered again"))
    assert received_objects() == [] and len(inbound_rows(ses_runtime)) == 1


def test_ses_own_object_is_kept_when_the_setting_says_so(world: dict[str, str], make_settings: Callable[..., Any],
                                                         database_url: str, template: dict[str, Any]) -> None:
    settings = ses_settings(world)
    settings["ses_ingress"] |= {"delete_received": False}
    runtime = wiring.build(make_settings(database={"url": database_url}, **settings))
    try:
        ses_receives(world, template, "kept-by-choice", plain_mail())
        assert runtime.ses_ingress().poll_once() == 1
        assert len(inbound_rows(runtime)) == 1
    finally:
        runtime.close()
    assert received_objects() == ["mail/kept-by-choice"]
