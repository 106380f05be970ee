"""Reading SES receipt notifications and S3 events (ingress/ses.py read_notification), over the
corpus's real samples and generated ones."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import corpus_dir
from tests.support import ses_receipts, ses_samples
from waypost.aws.lambda_handler import queue_of_arn, queue_of_url
from waypost.ingress.ses import ReceiptFormatError, S3Object, read_notification

MAIL = b"From: ann@example.org\r\nTo: journeys@waypost.test\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.mark.corpus
@pytest.mark.parametrize(("sample", "wrapped"), [("relay_received_notification_alert_example_ses_body.json", False),
                                                  ("relay_single_recipient_email_sns_body.json", True),
                                                  ("relay_received_notification_action_example_ses_body.json",
                                                   False)])
def test_the_corpus_receipts_are_read_with_their_verdicts(sample: str, wrapped: bool) -> None:
    body = (corpus_dir() / "ses" / sample).read_text()
    document = json.loads(json.loads(body)["Message"] if wrapped else body)

    [arrival] = read_notification(body)

    assert arrival.ses_message_id == document["mail"]["messageId"]
    assert arrival.recipients == tuple(document["receipt"]["recipients"])
    assert arrival.auth is not None and arrival.auth.source == "ses" and arrival.auth.spf == "pass"
    assert arrival.auth.virus == "pass"
    if document["receipt"]["action"]["type"] == "S3":
        assert arrival.source == S3Object("my-S3-bucket", "\\email")
    else:
        assert isinstance(arrival.source, bytes) and b"Subject:" in arrival.source


def test_a_virus_fail_and_the_from_domain_come_from_the_receipt_only() -> None:
    document = ses_receipts.received_s3(ses_receipts.generated(), ses_id="m1", bucket="b", key="mail/m1",
                                        sender="ann@example.org", recipient="journeys@waypost.test",
                                        verdicts={"virusVerdict": "FAIL"})

    [arrival] = read_notification(ses_samples.wrapped(document))

    assert arrival.auth is not None and arrival.auth.virus == "fail" and arrival.auth.from_domain == "example.org"
    assert arrival.mail_from == "ann@example.org" and arrival.source == S3Object("b", "mail/m1")


@pytest.mark.parametrize("encoding", ["UTF-8", "BASE64"])
def test_inline_content_is_decoded_as_the_sns_action_encoded_it(encoding: str) -> None:
    document = ses_receipts.received_inline(ses_receipts.generated(), MAIL, ses_id="m2", sender="ann@example.org",
                                            recipient="journeys@waypost.test", encoding=encoding)
    document["receipt"]["action"].pop("encoding")  # SES does not say which; the content tells

    [arrival] = read_notification(json.dumps(document))

    assert arrival.source == MAIL


def test_every_record_of_an_s3_event_is_read_and_its_key_decoded() -> None:
    records = [ses_receipts.s3_event("inbound", f"mail/id {n}", 10) for n in range(3)]

    arrivals = read_notification(json.dumps({"Records": records}))

    assert [a.source for a in arrivals] == [S3Object("inbound", f"mail/id {n}") for n in range(3)]
    assert [a.ses_message_id for a in arrivals] == ["id 0", "id 1", "id 2"]
    assert all(a.auth is None and a.recipients is None for a in arrivals)


def test_the_s3_test_event_announces_nothing() -> None:
    assert read_notification(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})) == []


@pytest.mark.parametrize(("body", "reason"), [
    ("{not json", "JSON"),
    (json.dumps(ses_samples.bounce()), "not a receipt notification"),
    (json.dumps({**ses_samples.received(), "receipt": {**ses_samples.received()["receipt"],
                                                        "action": {"type": "Bounce"}}}), "carries no mail"),
    (json.dumps({"Records": [{"eventName": "ObjectRemoved:Delete", "s3": {}}]}), "ObjectCreated"),
    (json.dumps({**ses_samples.received(), "mail": {"source": "a@b"}}), "messageId"),
    (ses_samples.wrapped(ses_samples.received(), "arn:aws:sns:eu-west-1:1:other"), "topic not allowed"),
])
def test_what_is_not_a_receipt_is_refused_with_a_reason(body: str, reason: str) -> None:
    with pytest.raises(ReceiptFormatError, match=reason):
        read_notification(body, topic_arns=[ses_samples.TOPIC])


def test_the_lambda_matches_a_queue_arn_to_its_url() -> None:
    assert queue_of_arn("arn:aws:sqs:eu-west-1:123456789012:ses-inbound") == \
        queue_of_url("https://sqs.eu-west-1.amazonaws.com/123456789012/ses-inbound")
    assert queue_of_arn("arn:aws:sqs:eu-west-1:123456789012:ses-inbound") != \
        queue_of_url("https://sqs.eu-west-1.amazonaws.com/210987654321/ses-inbound")


def test_base64_that_does_not_decode_is_refused() -> None:
    document = ses_receipts.received_inline(ses_receipts.generated(), MAIL, ses_id="m3", sender="ann@example.org",
                                            recipient="journeys@waypost.test", encoding="BASE64")
    document["content"] = base64.b64encode(MAIL).decode()[:-3] + "!"
    with pytest.raises(ReceiptFormatError, match="base64"):
        read_notification(json.dumps(document))
