"""SES receipt ("Received") notifications, shaped as SES sends them (REFERENCE-SES.md §1c).

``received_s3`` starts from the real S3-action sample of the shared corpus when it is there
(``relay_received_notification_alert_example_ses_body.json``) and from a generated document of
the same shape otherwise, then puts in this test's mail: its SES message id, envelope, verdicts
and the bucket and key SES stored it under. ``s3_event`` is an S3 ObjectCreated record as the
bucket sends it to a queue (§1c).
"""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import quote_plus

from tests.support.ses_samples import MAIL_SENT_AT, TOPIC

CORPUS_SAMPLE = "relay_received_notification_alert_example_ses_body.json"


def generated() -> dict[str, Any]:
    return {
        "notificationType": "Received",
        "receipt": {"timestamp": MAIL_SENT_AT, "processingTimeMillis": 310, "recipients": ["x@example.com"],
                    "spamVerdict": {"status": "PASS"}, "virusVerdict": {"status": "PASS"},
                    "spfVerdict": {"status": "PASS"}, "dkimVerdict": {"status": "PASS"},
                    "dmarcVerdict": {"status": "PASS"},
                    "action": {"type": "S3", "topicArn": TOPIC, "bucketName": "b", "objectKey": "k"}},
        "mail": {"timestamp": MAIL_SENT_AT, "source": "x@example.org", "messageId": "m", "destination": [],
                 "headersTruncated": False, "headers": [], "commonHeaders": {"from": ["x@example.org"]}},
    }


def received_s3(template: dict[str, Any], *, ses_id: str, bucket: str, key: str, sender: str, recipient: str,
                verdicts: dict[str, str] | None = None) -> dict[str, Any]:
    document = copy.deepcopy(template)
    receipt, mail = document["receipt"], document["mail"]
    receipt["recipients"] = [recipient]
    receipt["action"] = {**receipt["action"], "type": "S3", "bucketName": bucket, "objectKey": key}
    receipt["dmarcVerdict"] = {"status": "PASS"}
    for name, status in (verdicts or {}).items():
        receipt[name] = {"status": status}
    mail.update(messageId=ses_id, source=sender, destination=[recipient])
    mail["commonHeaders"] = {**mail.get("commonHeaders", {}), "from": [sender], "to": [recipient]}
    return document


def received_inline(template: dict[str, Any], raw: bytes, *, ses_id: str, sender: str, recipient: str,
                    encoding: str) -> dict[str, Any]:
    """The SNS action: the whole mail in ``content`` (UTF-8 text, or Base64)."""
    import base64

    document = received_s3(template, ses_id=ses_id, bucket="-", key="-", sender=sender, recipient=recipient)
    document["receipt"]["action"] = {"type": "SNS", "topicArn": TOPIC, "encoding": encoding}
    document["content"] = base64.b64encode(raw).decode() if encoding == "BASE64" else raw.decode()
    return document


def s3_event(bucket: str, key: str, size: int) -> dict[str, Any]:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
            "eventTime": "2026-03-02T08:15:01.123Z", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "inbound-to-sqs",
                   "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": quote_plus(key), "size": size, "eTag": "0123abcd"}}}


def text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)
