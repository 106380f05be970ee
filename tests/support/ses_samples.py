"""SES feedback JSON built in code, for tests that must run without the shared corpus.

Every builder returns one SES record as a dict, in the shape REFERENCE-SES.md §1 gives
(identity notifications, §1a, for Bounce, Complaint and Delivery; event publishing, §1b,
for every type) with our own values: ``waypost.test`` sends, ``example.org`` /
``example.net`` receive, message ids are made up. ``as_event`` and ``as_notification``
turn one format into the other. ``wrapped`` puts a record into an SNS envelope as SNS does
with raw message delivery off (§2): the SES JSON becomes the envelope's ``Message`` string.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tests.support.sns_signing import confirmation, notification

SIMULATOR = "simulator.amazonses.com"  # SES mailbox simulator (REFERENCE-SES.md §3)
SENDER = "journeys@waypost.test"
ACCOUNT = "210987654321"
TOPIC = f"arn:aws:sns:eu-west-1:{ACCOUNT}:waypost-ses-feedback"
MESSAGE_ID = "0102019a3c5d7e9f-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d-000000"
MAIL_SENT_AT = "2026-02-14T08:30:05.120Z"
REPORTED_AT = "2026-02-14T08:30:09.400Z"
CONFIG_SET = "waypost-events"

Recipients = Iterable[str | dict[str, Any]]


def mail(destination: Iterable[str] = ("ann@example.org",), *, message_id: str = MESSAGE_ID,
         header_id: str | None = None, tags: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The ``mail`` object. ``header_id`` is our own Message-ID header as SES quotes it back."""
    to = list(destination)
    section: dict[str, Any] = {
        "timestamp": MAIL_SENT_AT, "messageId": message_id, "source": SENDER,
        "sourceArn": f"arn:aws:ses:eu-west-1:{ACCOUNT}:identity/waypost.test", "sourceIp": "198.51.100.23",
        "sendingAccountId": ACCOUNT, "callerIdentity": "waypost-sender", "destination": to,
        "headersTruncated": False,
        "headers": [{"name": "From", "value": f"Waypost <{SENDER}>"}, {"name": "To", "value": ", ".join(to)},
                    {"name": "Subject", "value": "Your journey"}],
        "commonHeaders": {"from": [f"Waypost <{SENDER}>"], "to": to, "subject": "Your journey"},
    }
    if header_id is not None:
        section["headers"].append({"name": "Message-ID", "value": header_id})
        section["commonHeaders"]["messageId"] = header_id
    if tags is not None:
        section["tags"] = tags
    return section


def _entries(recipients: Recipients) -> list[dict[str, Any]]:
    return [{"emailAddress": r} if isinstance(r, str) else dict(r) for r in recipients]


def _addresses(recipients: Recipients) -> list[str]:
    return [r if isinstance(r, str) else r["emailAddress"] for r in recipients]


def _record(ses_type: str, key: str, section: dict[str, Any], mail_section: dict[str, Any]) -> dict[str, Any]:
    """An identity notification for the three types that have one, else an event record."""
    if ses_type in ("Bounce", "Complaint", "Delivery"):
        return {"notificationType": ses_type, "mail": mail_section, key: section}
    return {"eventType": ses_type, "mail": as_tagged(mail_section), key: section}


def as_tagged(mail_section: dict[str, Any]) -> dict[str, Any]:
    """Event publishing adds message tags to ``mail``, every tag a list of values."""
    tags = {"ses:configuration-set": [CONFIG_SET], "ses:from-domain": ["waypost.test"]}
    return {**mail_section, "tags": {**tags, **mail_section.get("tags", {})}}


def dsn_recipient(address: str, status: str = "5.1.1", diagnostic: str | None = None) -> dict[str, Any]:
    """A ``bouncedRecipients`` entry as SES writes it when a DSN came back."""
    entry = {"emailAddress": address, "action": "failed", "status": status}
    if diagnostic is not None:
        entry["diagnosticCode"] = diagnostic
    return entry


def bounce(recipients: Recipients = ("ann@example.org",), *, bounce_type: str = "Permanent",
           subtype: str = "General", feedback_id: str = "0102019a3c5d8000-fb000001-000000",
           **mail_options: Any) -> dict[str, Any]:
    section = {"bounceType": bounce_type, "bounceSubType": subtype, "bouncedRecipients": _entries(recipients),
               "timestamp": REPORTED_AT, "feedbackId": feedback_id, "remoteMtaIp": "203.0.113.80",
               "reportingMTA": "dns; b224-17.smtp-out.eu-west-1.amazonses.com"}
    mail_options.setdefault("destination", _addresses(recipients))
    return _record("Bounce", "bounce", section, mail(**mail_options))


def complaint(recipients: Recipients = ("ann@example.org",), *, feedback_type: str | None = "abuse",
              subtype: str | None = None, feedback_id: str = "0102019a3c5d8000-fc000001-000000",
              **mail_options: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"complainedRecipients": _entries(recipients), "timestamp": REPORTED_AT,
                               "feedbackId": feedback_id, "complaintSubType": subtype}
    if feedback_type is not None:  # only when the ISP attached an ARF report
        section |= {"complaintFeedbackType": feedback_type, "userAgent": "ExampleISP-FBL/2.1",
                    "arrivalDate": "2026-02-14T08:30:08.000Z"}
    mail_options.setdefault("destination", _addresses(recipients))
    return _record("Complaint", "complaint", section, mail(**mail_options))


def delivery(recipients: Iterable[str] = ("ann@example.org",), *,
             smtp_response: str = "250 2.0.0 OK queued as 4Tq9", **mail_options: Any) -> dict[str, Any]:
    section = {"timestamp": REPORTED_AT, "processingTimeMillis": 4280, "recipients": list(recipients),
               "smtpResponse": smtp_response, "remoteMtaIp": "203.0.113.80",
               "reportingMTA": "b224-17.smtp-out.eu-west-1.amazonses.com"}
    mail_options.setdefault("destination", list(recipients))
    return _record("Delivery", "delivery", section, mail(**mail_options))


def delivery_delay(recipients: Recipients = ("ann@example.org",), *, delay_type: str = "MailboxFull",
                   **mail_options: Any) -> dict[str, Any]:
    section = {"timestamp": REPORTED_AT, "delayType": delay_type, "expirationTime": "2026-02-15T08:30:05.000Z",
               "delayedRecipients": _entries(recipients), "reportingMTA": "b224-17.smtp-out.eu-west-1.amazonses.com"}
    mail_options.setdefault("destination", _addresses(recipients))
    return _record("DeliveryDelay", "deliveryDelay", section, mail(**mail_options))


def send(destination: Iterable[str] = ("ann@example.org",), **mail_options: Any) -> dict[str, Any]:
    return _record("Send", "send", {}, mail(destination, **mail_options))


def reject(destination: Iterable[str] = ("ann@example.org",), **mail_options: Any) -> dict[str, Any]:
    return _record("Reject", "reject", {"reason": "Bad content"}, mail(destination, **mail_options))


def rendering_failure(destination: Iterable[str] = ("ann@example.org",), *, template: str = "JourneyReady",
                      error: str = "Attribute 'journey_url' is not present in the rendering data.",
                      **mail_options: Any) -> dict[str, Any]:
    section = {"templateName": template, "errorMessage": error}
    return _record("Rendering Failure", "failure", section, mail(destination, **mail_options))


def opened(destination: Iterable[str] = ("ann@example.org",), **mail_options: Any) -> dict[str, Any]:
    section = {"ipAddress": "192.0.2.44", "timestamp": REPORTED_AT, "userAgent": "Mozilla/5.0 (test)"}
    return _record("Open", "open", section, mail(destination, **mail_options))


def clicked(destination: Iterable[str] = ("ann@example.org",), *, link: str = "https://waypost.test/j/abc",
            **mail_options: Any) -> dict[str, Any]:
    section = {"ipAddress": "192.0.2.44", "timestamp": REPORTED_AT, "userAgent": "Mozilla/5.0 (test)",
               "link": link, "linkTags": {"place": ["header"]}}
    return _record("Click", "click", section, mail(destination, **mail_options))


def subscription(destination: Iterable[str] = ("ann@example.org",), *, unsubscribe_all: bool | None = False,
                 statuses: dict[str, str] | None = None, **mail_options: Any) -> dict[str, Any]:
    """``statuses``: topic name -> "OptIn" / "OptOut" in the new preferences."""
    def preferences(values: dict[str, str], everything: bool | None) -> dict[str, Any]:
        return {"unsubscribeAll": everything, "topicSubscriptionStatus": [
            {"topicName": name, "subscriptionStatus": status} for name, status in values.items()]}

    section = {"contactList": "waypost-contacts", "timestamp": REPORTED_AT, "source": "UnsubscribeHeader",
               "newTopicPreferences": preferences(statuses or {}, unsubscribe_all),
               "oldTopicPreferences": preferences({"journeys": "OptIn"}, False)}
    return _record("Subscription", "subscription", section, mail(destination, **mail_options))


def received(recipient: str = "journeys@waypost.test") -> dict[str, Any]:
    """An inbound receipt notification (§1c): mail SES received, not feedback."""
    receipt = {"timestamp": MAIL_SENT_AT, "processingTimeMillis": 310, "recipients": [recipient],
               "spamVerdict": {"status": "PASS"}, "virusVerdict": {"status": "PASS"},
               "spfVerdict": {"status": "PASS"}, "dkimVerdict": {"status": "PASS"},
               "dmarcVerdict": {"status": "PASS"},
               "action": {"type": "SNS", "topicArn": TOPIC, "encoding": "UTF8"}}
    inbound = mail([recipient], message_id="inbound-7d3f2a1b0c9e8d7f6a5b4c3d2e1f0a9b")
    return {"notificationType": "Received", "mail": {**inbound, "source": "friend@example.net"},
            "receipt": receipt, "content": "From: friend@example.net\r\nSubject: hi\r\n\r\nhello\r\n"}


def as_event(record: dict[str, Any]) -> dict[str, Any]:
    """An identity notification re-told as the event publishing record of the same report."""
    changed = {("eventType" if k == "notificationType" else k): v for k, v in record.items()}
    changed["mail"] = as_tagged(changed["mail"])
    return changed


def as_notification(record: dict[str, Any]) -> dict[str, Any]:
    return {("notificationType" if k == "eventType" else k): v for k, v in record.items()}


def text(record: dict[str, Any]) -> str:
    """The record as SES would publish it (pretty-printed, so raw text differs from a re-dump)."""
    return json.dumps(record, indent=2)


def wrapped(record: dict[str, Any] | str, topic: str = TOPIC, *, subject: str | None = None) -> str:
    """The SQS body SNS writes with raw delivery off: an envelope whose Message is the SES JSON."""
    message = record if isinstance(record, str) else text(record)
    envelope = notification(topic, message, subject=subject,
                            message_id="5a1e0c7d-93b4-4f61-a2c8-6d0e4b7f1a32")
    envelope |= {"SignatureVersion": "1", "Signature": "bm90IGNoZWNrZWQgb24gYSBxdWV1ZQ==",
                 "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0a1b2c3d.pem"}
    return json.dumps(envelope)


def confirmation_body(topic: str = TOPIC) -> str:
    """A SubscriptionConfirmation as it would land on a queue (it should not)."""
    subscribe = f"https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token=9f8e"
    return json.dumps(confirmation(topic, subscribe))
