"""SES notification and event JSON → FeedbackEvents, table-driven over the shared corpus and
over records generated in code (tests/support/ses_samples.py).

The first table is the expectation per corpus file; where the corpus MANIFEST states the
type, recipients, bounce type or feedback type, the table is checked against it too, so
a table typo cannot agree with a parser bug. The second table covers every type again on
generated records, so a clone without the corpus still checks each one. Tests that build
on a sample take ``source``: the generated record, and (marked corpus) the real one.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import corpus_dir
from tests.support import ses_samples as samples
from waypost.feedback.events import BounceType, FeedbackEvent, FeedbackFormatError, Kind, Source
from waypost.feedback.ses_events import parse_ses_notification, unwrap_queue_body

SIM = "simulator.amazonses.com"
SES_SAMPLE = re.compile(r"^ses/(relay_.*_(ses|sns)_body|sisimai_json-amazonses-\d+)\.json$")
# a test taking `source` runs on a generated record, and on the corpus sample when the corpus is there
SOURCES = ["generated", pytest.param("corpus", marks=pytest.mark.corpus)]


@dataclass(frozen=True)
class Expect:
    ses_type: str  # notificationType / eventType (or the SNS Type for envelopes)
    kind: Kind | None  # None: no events at all
    recipients: tuple[str, ...] = ()
    bounce_type: BounceType | None = None
    bounce_subtype: str | None = None
    feedback_type: str | None = None
    fields: tuple[tuple[str, Any], ...] = ()  # further attributes every event must have
    envelope: bool = False  # an SNS envelope: unwrap first
    unwrap_error: str | None = None  # unwrapping must fail, naming this


EXPECTED: dict[str, Expect] = {
    "relay_bounce_event_example_ses_body.json": Expect(
        "Bounce", Kind.BOUNCE, ("recipient@example.com",), BounceType.PERMANENT, "General",
        fields=(("status", "5.1.1"), ("action", "failed"), ("diagnostic", "smtp; 550 5.1.1 user unknown"),
                ("feedback_id", "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000"),
                ("occurred_at", datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC)),
                # the doc example echoes SES's own id as commonHeaders.messageId: not ours
                ("message_id_header", None))),
    "relay_bounce_notification_from_simulator_ses_body.json": Expect(
        "Bounce", Kind.BOUNCE, (f"bounce@{SIM}",), BounceType.PERMANENT, "General",
        fields=(("status", "5.1.1"),
                ("provider_message_id", "0100018264c6505e-66ca92ab-0593-41de-8df9-38b09a02a206-000000"),
                ("feedback_id", "0100018264c6525d-e8967b05-82f8-4575-9413-34faff769528-000000"),
                ("message_id_header", None), ("stream", None))),
    "relay_complaint_event_example_ses_body.json": Expect(
        "Complaint", Kind.COMPLAINT, ("recipient@example.com",), feedback_type="abuse",
        fields=(("complaint_subtype", None),)),
    "relay_complaint_notification_from_simulator_ses_body.json": Expect(
        "Complaint", Kind.COMPLAINT, (f"complaint@{SIM}",), feedback_type="abuse",
        fields=(("occurred_at", datetime(2022, 8, 3, 17, 38, 31, tzinfo=UTC)),)),
    "relay_complaint_notification_without_feedback_example_ses_body.json": Expect(
        # three destinations, one complainant: only the complainant is reported
        "Complaint", Kind.COMPLAINT, ("richard@example.com",), feedback_type=None,
        fields=(("message_id_header", "custom-message-ID"),)),
    "relay_delivery_delay_event_example_ses_body.json": Expect(
        "DeliveryDelay", Kind.DELAY, ("recipient@example.com",), bounce_subtype="TransientCommunicationFailure",
        fields=(("status", "4.4.1"), ("diagnostic", "smtp; 421 4.4.1 Unable to connect to remote host"),
                ("occurred_at", datetime(2020, 6, 16, 0, 25, 40, 95000, tzinfo=UTC)))),
    "relay_delivery_notification_ooto_from_simulator_ses_body.json": Expect(
        "Delivery", Kind.DELIVERY, (f"ooto@{SIM}",), fields=(("diagnostic", "250 2.6.0 Message received"),)),
    "relay_delivery_notification_success_from_simulator_ses_body.json": Expect(
        "Delivery", Kind.DELIVERY, (f"success@{SIM}",), fields=(("diagnostic", "250 2.6.0 Message received"),)),
    "relay_ooto_bounce_notification_from_simulator_ses_body.json": Expect(
        # an auto-reply, as SES reports it: a soft bounce without DSN fields
        "Bounce", Kind.BOUNCE, (f"ooto@{SIM}",), BounceType.TRANSIENT, "General",
        fields=(("status", None), ("action", None), ("diagnostic", None))),
    "relay_open_event_example_ses_body.json": Expect(
        "Open", Kind.OPEN, ("recipient@example.com",),
        fields=(("occurred_at", datetime(2017, 8, 9, 22, 0, 19, 652000, tzinfo=UTC)),)),
    "relay_received_notification_action_example_ses_body.json": Expect("Received", None),
    "relay_received_notification_alert_example_ses_body.json": Expect("Received", None),
    "relay_reject_event_example_ses_body.json": Expect(
        # mail.destination is the sender in this doc example; the event follows destination
        "Reject", Kind.REJECT, ("sender@example.com",),
        fields=(("diagnostic", "Bad content"),
                ("occurred_at", datetime(2016, 10, 14, 17, 38, 15, 211000, tzinfo=UTC)))),  # mail.timestamp
    "relay_rendering_failure_example_ses_body.json": Expect(
        "Rendering Failure", Kind.RENDERING_FAILURE, ("recipient@example.com",),
        fields=(("diagnostic", "MyTemplate: Attribute 'attributeName' is not present in the rendering data."),)),
    "relay_send_event_example_ses_body.json": Expect(
        "Send", Kind.SEND, ("recipient@example.com",),
        fields=(("occurred_at", datetime(2016, 10, 14, 5, 2, 16, 645000, tzinfo=UTC)),)),
    "relay_subscription_event_example_ses_body.json": Expect(
        "Subscription", Kind.SUBSCRIPTION, ("subscription-event-7799@default.sysmon-iad.dohe.com",),
        fields=(("unsubscribe", True),)),
    "relay_suppressionlist_bounce_notification_from_simulator_ses_body.json": Expect(
        # the simulator reports it as Permanent/General, not Permanent/Suppressed
        "Bounce", Kind.BOUNCE, (f"suppressionlist@{SIM}",), BounceType.PERMANENT, "General",
        fields=(("status", "5.1.1"),)),
    "sisimai_json-amazonses-06.json": Expect(
        "Bounce", Kind.BOUNCE, (f"bounce@{SIM}",), BounceType.PERMANENT, "General",
        # headers and commonHeaders disagree in this anonymised sample; the header wins
        fields=(("message_id_header", "<xxx.xx@xx..x>"), ("feedback_id", "xxxxxxxx"))),
    "relay_domain_recipient_email_sns_body.json": Expect("Received", None, envelope=True),
    "relay_replies_email_sns_body.json": Expect("Received", None, envelope=True),
    "relay_single_recipient_email_sns_body.json": Expect("Received", None, envelope=True),
    "relay_subscription_confirmation_invalid_sns_body.json": Expect(
        "SubscriptionConfirmation", None, envelope=True, unwrap_error="SubscriptionConfirmation"),
}


def manifest() -> dict[str, str]:
    """SES JSON samples named by the corpus manifest: file name -> description."""
    lines = (corpus_dir() / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {Path(r["file"]).name: r["desc"] for r in records if SES_SAMPLE.match(r["file"])}


def read_sample(name: str) -> str:
    return (corpus_dir() / "ses" / name).read_text()


def events_of(name: str) -> list[FeedbackEvent]:
    text = read_sample(name)
    if EXPECTED[name].envelope:
        text, _ = unwrap_queue_body(text)
    return parse_ses_notification(text)


def base(source: str, corpus_name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The record a test starts from: built in code, or read from the corpus."""
    return json.loads(read_sample(corpus_name)) if source == "corpus" else build()


def check_events(events: list[FeedbackEvent], expect: Expect, ses_text: str) -> None:
    """``events`` are what ``expect`` says, read from the SES JSON ``ses_text``."""
    if expect.kind is None:
        assert events == []
        return
    assert [e.recipient for e in events] == list(expect.recipients)
    raw = json.loads(ses_text)
    for event in events:
        assert (event.kind, event.source) == (expect.kind, Source.SES)
        assert (event.bounce_type, event.bounce_subtype) == (expect.bounce_type, expect.bounce_subtype)
        assert event.feedback_type == expect.feedback_type
        assert event.provider_message_id == raw["mail"]["messageId"]
        assert event.raw == ses_text
        assert event.occurred_at is None or event.occurred_at.tzinfo is UTC
        for attribute, value in expect.fields:
            assert getattr(event, attribute) == value, attribute


@pytest.mark.corpus
def test_table_covers_every_ses_sample_of_the_manifest() -> None:
    assert set(manifest()) == set(EXPECTED)


@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_table_agrees_with_the_manifest(name: str) -> None:
    desc, expect = manifest()[name], EXPECTED[name]
    assert f"Type={expect.ses_type}" in desc
    if match := re.search(r"recipients=(\[[^\]]*\])", desc):
        assert tuple(ast.literal_eval(match.group(1))) == expect.recipients
    if match := re.search(r"bounceType=(\w+)/(\w+)", desc):
        assert (expect.bounce_type, expect.bounce_subtype) == (BounceType(match.group(1)), match.group(2))
    if match := re.search(r"complaintFeedbackType=(\w+)", desc):
        assert expect.feedback_type == (None if match.group(1) == "None" else match.group(1))


@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_sample(name: str) -> None:
    expect = EXPECTED[name]
    if expect.unwrap_error:
        with pytest.raises(FeedbackFormatError, match=expect.unwrap_error):
            unwrap_queue_body(read_sample(name))
        return

    check_events(events_of(name), expect, read_sample(name))


# --- the same types on generated records ------------------------------------------------------

SENT_AT = datetime(2026, 2, 14, 8, 30, 5, 120000, tzinfo=UTC)  # samples.MAIL_SENT_AT
REPORTED_AT = datetime(2026, 2, 14, 8, 30, 9, 400000, tzinfo=UTC)  # samples.REPORTED_AT
ANN, BOB, CAROL = "ann@example.org", "bob@example.org", "carol@example.net"
DIAGNOSTIC = "smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected"
FULL = "smtp; 452 4.2.2 <ann@example.org>: Mailbox full"
TEMPLATE_ERROR = "JourneyReady: Attribute 'journey_url' is not present in the rendering data."
SES_FEEDBACK_ID = "0102019a3c5d8000-fb000001-000000"

GENERATED: dict[str, tuple[Callable[[], str], Expect]] = {
    "bounce-permanent-with-dsn": (
        lambda: samples.text(samples.bounce([samples.dsn_recipient(ANN, "5.1.1", DIAGNOSTIC)], subtype="NoEmail",
                                            header_id="<r-7f3a@waypost.test>")),
        Expect("Bounce", Kind.BOUNCE, (ANN,), BounceType.PERMANENT, "NoEmail",
               fields=(("status", "5.1.1"), ("action", "failed"), ("diagnostic", DIAGNOSTIC),
                       ("feedback_id", SES_FEEDBACK_ID), ("occurred_at", REPORTED_AT),
                       ("message_id_header", "<r-7f3a@waypost.test>"), ("stream", None)))),
    "bounce-three-recipients": (
        lambda: samples.text(samples.bounce([samples.dsn_recipient(ANN), samples.dsn_recipient(BOB, "5.2.1"), CAROL],
                                            feedback_id="fb-three")),
        Expect("Bounce", Kind.BOUNCE, (ANN, BOB, CAROL), BounceType.PERMANENT, "General",
               fields=(("feedback_id", "fb-three"),))),
    "bounce-ooto-from-simulator": (
        # an auto-reply, as SES reports it: a soft bounce without DSN fields
        lambda: samples.text(samples.bounce([f"ooto@{SIM}"], bounce_type="Transient")),
        Expect("Bounce", Kind.BOUNCE, (f"ooto@{SIM}",), BounceType.TRANSIENT, "General",
               fields=(("status", None), ("action", None), ("diagnostic", None)))),
    "bounce-suppressed-event-with-stream-tag": (
        lambda: samples.text(samples.as_event(samples.bounce(
            [samples.dsn_recipient(f"suppressionlist@{SIM}")], subtype="Suppressed",
            tags={"stream": ["journeys"]}))),
        Expect("Bounce", Kind.BOUNCE, (f"suppressionlist@{SIM}",), BounceType.PERMANENT, "Suppressed",
               fields=(("stream", "journeys"), ("status", "5.1.1")))),
    "bounce-echoing-the-ses-id-as-message-id": (
        # as the documentation examples do: SES's own id in commonHeaders is not our Message-ID
        lambda: samples.text(samples.bounce(header_id=samples.MESSAGE_ID)),
        Expect("Bounce", Kind.BOUNCE, (ANN,), BounceType.PERMANENT, "General",
               fields=(("message_id_header", None),))),
    "bounce-undetermined": (
        lambda: samples.text(samples.bounce(bounce_type="Undetermined", subtype="Undetermined")),
        Expect("Bounce", Kind.BOUNCE, (ANN,), BounceType.UNDETERMINED, "Undetermined")),
    "complaint-abuse": (
        lambda: samples.text(samples.complaint([BOB])),
        Expect("Complaint", Kind.COMPLAINT, (BOB,), feedback_type="abuse",
               fields=(("complaint_subtype", None), ("occurred_at", REPORTED_AT)))),
    "complaint-without-feedback-one-of-three": (
        # three destinations, one complainant: only the complainant is reported
        lambda: samples.text(samples.complaint([CAROL], feedback_type=None, destination=[ANN, BOB, CAROL],
                                               header_id="waypost-custom-id")),
        Expect("Complaint", Kind.COMPLAINT, (CAROL,), feedback_type=None,
               fields=(("message_id_header", "waypost-custom-id"),))),
    "complaint-on-account-suppression-list-event": (
        lambda: samples.text(samples.as_event(samples.complaint(feedback_type=None,
                                                                subtype="OnAccountSuppressionList"))),
        Expect("Complaint", Kind.COMPLAINT, (ANN,), fields=(("complaint_subtype", "OnAccountSuppressionList"),))),
    "delivery": (
        lambda: samples.text(samples.delivery([f"success@{SIM}"])),
        Expect("Delivery", Kind.DELIVERY, (f"success@{SIM}",),
               fields=(("diagnostic", "250 2.0.0 OK queued as 4Tq9"), ("occurred_at", REPORTED_AT)))),
    "delivery-event-two-recipients": (
        lambda: samples.text(samples.as_event(samples.delivery([ANN, BOB]))),
        Expect("Delivery", Kind.DELIVERY, (ANN, BOB))),
    "delivery-delay": (
        lambda: samples.text(samples.delivery_delay(
            [{"emailAddress": ANN, "status": "4.2.2", "diagnosticCode": FULL}])),
        Expect("DeliveryDelay", Kind.DELAY, (ANN,), bounce_subtype="MailboxFull",
               fields=(("status", "4.2.2"), ("diagnostic", FULL), ("occurred_at", REPORTED_AT)))),
    "send": (
        lambda: samples.text(samples.send([ANN])),
        Expect("Send", Kind.SEND, (ANN,), fields=(("occurred_at", SENT_AT), ("diagnostic", None)))),
    "reject": (
        lambda: samples.text(samples.reject([BOB])),
        Expect("Reject", Kind.REJECT, (BOB,), fields=(("diagnostic", "Bad content"), ("occurred_at", SENT_AT)))),
    "rendering-failure": (
        lambda: samples.text(samples.rendering_failure([ANN])),
        Expect("Rendering Failure", Kind.RENDERING_FAILURE, (ANN,),
               fields=(("diagnostic", TEMPLATE_ERROR), ("occurred_at", SENT_AT)))),
    "open": (
        lambda: samples.text(samples.opened([ANN])),
        Expect("Open", Kind.OPEN, (ANN,), fields=(("occurred_at", REPORTED_AT),))),
    "click": (
        lambda: samples.text(samples.clicked([ANN])),
        Expect("Click", Kind.CLICK, (ANN,), fields=(("occurred_at", REPORTED_AT),))),
    "subscription-unsubscribe-all": (
        lambda: samples.text(samples.subscription([ANN], unsubscribe_all=True)),
        Expect("Subscription", Kind.SUBSCRIPTION, (ANN,), fields=(("unsubscribe", True),))),
    "subscription-one-topic-opted-out": (
        lambda: samples.text(samples.subscription([ANN], statuses={"journeys": "OptOut", "news": "OptIn"})),
        Expect("Subscription", Kind.SUBSCRIPTION, (ANN,), fields=(("unsubscribe", True),))),
    "subscription-still-opted-in": (
        lambda: samples.text(samples.subscription([ANN], statuses={"journeys": "OptIn"})),
        Expect("Subscription", Kind.SUBSCRIPTION, (ANN,), fields=(("unsubscribe", False),))),
    "received": (lambda: samples.text(samples.received()), Expect("Received", None)),
    "received-in-an-envelope": (lambda: samples.wrapped(samples.received()), Expect("Received", None, envelope=True)),
    "bounce-in-an-envelope": (
        lambda: samples.wrapped(samples.bounce([samples.dsn_recipient(ANN)]), subject="Amazon SES Notification"),
        Expect("Bounce", Kind.BOUNCE, (ANN,), BounceType.PERMANENT, "General", envelope=True,
               fields=(("status", "5.1.1"),))),
    "subscription-confirmation-on-a-queue": (
        samples.confirmation_body,
        Expect("SubscriptionConfirmation", None, envelope=True, unwrap_error="SubscriptionConfirmation")),
}


def ses_type_of(text: str) -> str:
    document = json.loads(text)
    return str(document.get("eventType", document.get("notificationType", document.get("Type"))))


def test_generated_table_covers_every_ses_type() -> None:
    assert {expect.ses_type for _, expect in GENERATED.values()} == {
        "Bounce", "Complaint", "Delivery", "DeliveryDelay", "Send", "Reject", "Rendering Failure", "Open", "Click",
        "Subscription", "Received", "SubscriptionConfirmation"}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_sample(name: str) -> None:
    build, expect = GENERATED[name]
    body = build()
    if expect.unwrap_error:
        with pytest.raises(FeedbackFormatError, match=expect.unwrap_error):
            unwrap_queue_body(body)
        return
    ses_text, topic = unwrap_queue_body(body)
    assert (ses_text == body) is not expect.envelope
    assert topic == (samples.TOPIC if expect.envelope else None)
    assert ses_type_of(ses_text) == expect.ses_type

    check_events(parse_ses_notification(ses_text), expect, ses_text)


# --- the same report by both mechanisms, several recipients, unknown keys --------------------


SIMULATOR_REPORTS = {  # the simulator's three identity notifications, and how to build them
    "relay_bounce_notification_from_simulator_ses_body.json": lambda: samples.bounce([f"bounce@{SIM}"]),
    "relay_complaint_notification_from_simulator_ses_body.json": lambda: samples.complaint([f"complaint@{SIM}"]),
    "relay_delivery_notification_success_from_simulator_ses_body.json": lambda: samples.delivery([f"success@{SIM}"]),
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", sorted(SIMULATOR_REPORTS))
def test_notification_and_event_record_of_one_report_share_dedupe_keys(name: str, source: str) -> None:
    notification = base(source, name, SIMULATOR_REPORTS[name])
    assert "notificationType" in notification and "eventType" not in notification
    record = {("eventType" if k == "notificationType" else k): v for k, v in notification.items()}
    record["mail"] = {**record["mail"], "tags": {"ses:configuration-set": ["waypost"]}}

    [as_notification] = parse_ses_notification(json.dumps(notification))
    [as_record] = parse_ses_notification(record)

    assert as_notification.raw != as_record.raw
    assert as_notification.dedupe_key == as_record.dedupe_key


def bounce_event(source: str) -> dict[str, Any]:
    return base(source, "relay_bounce_event_example_ses_body.json",
                lambda: samples.as_event(samples.bounce([samples.dsn_recipient("ann@example.org")])))


@pytest.mark.parametrize("source", SOURCES)
def test_a_bounce_for_three_recipients_gives_three_events(source: str) -> None:
    record = bounce_event(source)
    record["bounce"]["bouncedRecipients"] = [
        {"emailAddress": "ann@example.org", "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1"},
        {"emailAddress": "bob@example.org", "action": "failed", "status": "5.2.1"},
        {"emailAddress": "cy@example.org"},
    ]

    events = parse_ses_notification(record)

    assert [(e.recipient, e.status, e.diagnostic) for e in events] == [
        ("ann@example.org", "5.1.1", "smtp; 550 5.1.1"),
        ("bob@example.org", "5.2.1", None),
        ("cy@example.org", None, None),
    ]
    assert len({e.dedupe_key for e in events}) == 3
    assert {e.feedback_id for e in events} == {record["bounce"]["feedbackId"]}


@pytest.mark.parametrize("source", SOURCES)
def test_unknown_keys_anywhere_are_ignored(source: str) -> None:
    text = json.dumps(bounce_event(source))
    record = json.loads(text)
    record["futureTopLevel"] = {"x": [1, 2]}
    record["mail"]["futureMailField"] = "y"
    record["bounce"]["futureBounceField"] = None
    record["bounce"]["bouncedRecipients"][0]["futureRecipientField"] = 7

    [plain] = parse_ses_notification(text)
    [extended] = parse_ses_notification(record)

    assert extended.raw != plain.raw
    assert extended == FeedbackEvent(**{**plain.__dict__, "raw": extended.raw})


def send_event(source: str) -> dict[str, Any]:
    return base(source, "relay_send_event_example_ses_body.json", samples.send)


@pytest.mark.parametrize("source", SOURCES)
def test_a_dict_is_kept_as_compact_json(source: str) -> None:
    record = send_event(source)

    [event] = parse_ses_notification(record)

    assert json.loads(event.raw) == record
    assert ": " not in event.raw and "\n" not in event.raw


# --- individual fields ------------------------------------------------------------------------


def bounce(**mail: Any) -> dict[str, Any]:
    return {"eventType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail", "feedbackId": "fb-1",
                       "timestamp": "2026-03-01T10:00:02.000Z",
                       "bouncedRecipients": [{"emailAddress": "ann@example.org"}]},
            "mail": {"messageId": "ses-1", "destination": ["ann@example.org"], **mail}}


def test_message_id_header_from_headers_in_any_case_else_common_headers() -> None:
    headers = [{"name": "From", "value": "a@example.org"}, {"name": "message-ID", "value": " <ours-1@example.org> "}]
    common = {"messageId": "<common@example.org>"}

    [from_headers] = parse_ses_notification(bounce(headers=headers, commonHeaders=common))
    [from_common] = parse_ses_notification(bounce(headers=headers[:1], commonHeaders=common))
    [neither] = parse_ses_notification(bounce())

    assert from_headers.message_id_header == "<ours-1@example.org>"
    assert from_common.message_id_header == "<common@example.org>"
    assert neither.message_id_header is None


def test_stream_comes_from_the_first_stream_tag() -> None:
    [tagged] = parse_ses_notification(bounce(tags={"stream": ["journeys", "x"], "ses:configuration-set": ["c"]}))
    [untagged] = parse_ses_notification(bounce(tags={"ses:configuration-set": ["c"]}))
    [empty] = parse_ses_notification(bounce(tags={"stream": []}))

    assert (tagged.stream, untagged.stream, empty.stream) == ("journeys", None, None)


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2026-03-01T10:00:02.000Z", datetime(2026, 3, 1, 10, 0, 2, tzinfo=UTC)),
    ("2026-03-01T12:00:02+02:00", datetime(2026, 3, 1, 10, 0, 2, tzinfo=UTC)),
    ("2026-03-01T10:00:02", datetime(2026, 3, 1, 10, 0, 2, tzinfo=UTC)),  # naive: SES writes UTC
    ("yesterday", None),
    ("2026-03-01T10:00:02.123456789Z", datetime(2026, 3, 1, 10, 0, 2, 123456, tzinfo=UTC)),  # cut to µs
    ("Sun, 01 Mar 2026 10:00:02 +0000", None),
    (1772359202, None),
    (None, None),
])
def test_timestamps(stamp: Any, expected: datetime | None) -> None:
    record = bounce()
    record["bounce"]["timestamp"] = stamp

    [event] = parse_ses_notification(record)

    assert event.occurred_at == expected


def test_unknown_bounce_type_is_undetermined_and_keeps_its_subtype() -> None:
    record = bounce()
    record["bounce"].update(bounceType="Sideways", bounceSubType="Odd")

    [event] = parse_ses_notification(record)

    assert (event.bounce_type, event.bounce_subtype) == (BounceType.UNDETERMINED, "Odd")


@pytest.mark.parametrize("source", SOURCES)
def test_complaint_feedback_type_is_lower_cased(source: str) -> None:
    record = base(source, "relay_complaint_event_example_ses_body.json",
                  lambda: samples.as_event(samples.complaint()))
    record["complaint"].update(complaintFeedbackType="Not-Spam", complaintSubType="OnAccountSuppressionList")

    [event] = parse_ses_notification(record)

    assert (event.feedback_type, event.complaint_subtype) == ("not-spam", "OnAccountSuppressionList")


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("unsubscribe_all", "statuses", "expected"), [
    (True, [], True),
    (False, ["OptIn", "OptOut"], True),
    (False, ["OptIn"], False),
    (None, None, False),
])
def test_subscription_opt_out(unsubscribe_all: bool | None, statuses: list[str] | None, expected: bool,
                              source: str) -> None:
    record = base(source, "relay_subscription_event_example_ses_body.json", samples.subscription)
    topics = None if statuses is None else [{"topicName": f"t{i}", "subscriptionStatus": s}
                                            for i, s in enumerate(statuses)]
    record["subscription"]["newTopicPreferences"] = {"unsubscribeAll": unsubscribe_all,
                                                     "topicSubscriptionStatus": topics}

    [event] = parse_ses_notification(record)

    assert event.unsubscribe is expected


@pytest.mark.parametrize("source", SOURCES)
def test_per_destination_events_for_several_destinations_with_display_names(source: str) -> None:
    record = send_event(source)
    record["mail"]["destination"] = ["Ann <ann@example.org>", "bob@example.org"]

    events = parse_ses_notification(record)

    assert [(e.kind, e.recipient) for e in events] == [(Kind.SEND, "ann@example.org"), (Kind.SEND, "bob@example.org")]


def test_a_bounce_naming_no_recipient_still_gives_one_event() -> None:
    record = bounce()
    record["bounce"]["bouncedRecipients"] = []

    [event] = parse_ses_notification(record)

    assert (event.kind, event.recipient, event.feedback_id) == (Kind.BOUNCE, None, "fb-1")


@pytest.mark.parametrize("source", SOURCES)
def test_click_event(source: str) -> None:
    record = base(source, "relay_open_event_example_ses_body.json", samples.opened)
    record["eventType"] = "Click"
    record["click"] = {**record.pop("open"), "link": "https://example.org/x", "linkTags": {}}

    [event] = parse_ses_notification(record)

    assert (event.kind, event.recipient) == (Kind.CLICK, record["mail"]["destination"][0])
    assert event.occurred_at == datetime.fromisoformat(record["click"]["timestamp"])


@pytest.mark.parametrize("ses_type", ["Received", "SomethingNew"])
def test_inbound_and_unknown_types_give_no_events(ses_type: str) -> None:
    assert parse_ses_notification({"notificationType": ses_type, "whatever": 1}) == []


# --- what cannot be read ----------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "words"), [
    ("this is not json", "not JSON"),
    ("", "not JSON"),
    ("[1, 2]", "JSON list, not a JSON object"),
    ('"Bounce"', "JSON str, not a JSON object"),
    ("[" * 100_000, "not JSON"),
    # what RFC 8259 does not allow: kept as unreadable, never half read
    ('{"eventType": "Bounce", "mail": {}, "bounce": {"x": NaN}}', "not JSON"),
    ('{"eventType": "Bounce", "mail": {"source": "\\ud800@example.org"}}', "not JSON"),
    ("{}", "neither a notificationType nor an eventType"),
    ('{"eventType": 5}', "neither a notificationType nor an eventType"),
    ('{"eventType": "Bounce"}', "no 'mail' object"),
    ('{"notificationType": "Send", "mail": "x"}', "no 'mail' object"),
    ('{"notificationType": "Bounce", "mail": {}}', "no 'bounce' object"),
    ('{"eventType": "DeliveryDelay", "mail": {}}', "no 'deliveryDelay' object"),
    ('{"eventType": "Bounce", "mail": {}, "bounce": {"bouncedRecipients": "a@b"}}', "'bouncedRecipients' is a str"),
    ('{"eventType": "Delivery", "mail": {}, "delivery": {"recipients": [3]}}', "'recipients' holds an entry"),
    ('{"eventType": "Send", "mail": {"destination": "a@b"}}', "'destination' is a str"),
])
def test_garbage_raises_a_clear_format_error(payload: str, words: str) -> None:
    with pytest.raises(FeedbackFormatError) as caught:
        parse_ses_notification(payload)

    assert words in str(caught.value)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=12)
SES_TYPES = st.sampled_from(["Bounce", "Complaint", "Delivery", "DeliveryDelay", "Subscription", "Send", "Reject",
                             "Rendering Failure", "Open", "Click", "Received"])
SECTIONS = ["mail", "bounce", "complaint", "delivery", "deliveryDelay", "subscription", "send", "reject",
            "failure", "open", "click"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ses_type=SES_TYPES, sections=st.fixed_dictionaries({}, optional={s: JSON for s in SECTIONS}))
def test_odd_shapes_give_events_or_a_format_error_never_a_crash(ses_type: str, sections: dict[str, Any]) -> None:
    try:
        events = parse_ses_notification({"eventType": ses_type, **sections})
    except FeedbackFormatError:
        return
    for event in events:
        assert event.recipient is None or isinstance(event.recipient, str)
        assert isinstance(event.dedupe_key, str)


@pytest.mark.corpus
def test_odd_shapes_inside_real_samples_never_crash() -> None:
    """Every string, list and object of every sample replaced in turn by other JSON types."""
    for name, expect in EXPECTED.items():
        if not expect.envelope:
            _never_crash(json.loads(read_sample(name)))


def test_odd_shapes_inside_generated_samples_never_crash() -> None:
    """The same on every generated record."""
    checked = [build() for build, expect in GENERATED.values() if not expect.envelope]
    for text in checked:
        _never_crash(json.loads(text))
    assert len(checked) >= 15


def _never_crash(original: dict[str, Any]) -> None:
    """Each replacement gives events or a FeedbackFormatError; any other exception fails."""
    for path in _paths(original):
        for replacement in (None, 3, "x", [], {}, [None], {"emailAddress": 1}):
            record = copy.deepcopy(original)
            _set(record, path, replacement)
            with contextlib.suppress(FeedbackFormatError):
                for event in parse_ses_notification(record):
                    assert event.recipient is None or isinstance(event.recipient, str)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    paths = [prefix] if prefix else []
    for key, child in items:
        paths += _paths(child, (*prefix, key))
    return paths


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


# --- SQS bodies -------------------------------------------------------------------------------


@pytest.mark.corpus
def test_unwrap_an_sns_envelope() -> None:
    body = read_sample("relay_single_recipient_email_sns_body.json")

    message, topic = unwrap_queue_body(body)

    assert message == json.loads(body)["Message"]
    assert topic == "arn:aws:sns:us-east-1:168781634622:ses-inbound-grelay"


def test_unwrap_a_generated_envelope_gives_the_ses_json_and_its_topic() -> None:
    ses_text = samples.text(samples.bounce([samples.dsn_recipient("ann@example.org")]))
    body = samples.wrapped(ses_text, "arn:aws:sns:eu-west-1:210987654321:other-name")

    message, topic = unwrap_queue_body(body)

    assert (message, topic) == (ses_text, "arn:aws:sns:eu-west-1:210987654321:other-name")
    [wrapped] = parse_ses_notification(message)
    [raw] = parse_ses_notification(ses_text)
    assert wrapped == raw and wrapped.raw == ses_text  # wrapped or raw delivery: the same event


@pytest.mark.parametrize("source", SOURCES)
def test_unwrap_a_raw_delivery_body_returns_it_unchanged(source: str) -> None:
    body = json.dumps(bounce_event(source), indent=1)

    assert unwrap_queue_body(body) == (body, None)


@pytest.mark.parametrize("name", [
    "generated",
    pytest.param("rails_amazon_valid_signature.json", marks=pytest.mark.corpus),
    pytest.param("relay_subscription_confirmation_invalid_sns_body.json", marks=pytest.mark.corpus),
])
def test_a_subscription_confirmation_on_a_queue_is_explained(name: str) -> None:
    body = samples.confirmation_body() if name == "generated" else read_sample(name)
    with pytest.raises(FeedbackFormatError) as caught:
        unwrap_queue_body(body)

    text = str(caught.value)
    assert "SubscriptionConfirmation" in text and json.loads(body)["TopicArn"] in text
    assert "SNS confirms subscriptions of SQS queues itself" in text and "unexpected" in text


@pytest.mark.parametrize(("body", "words"), [
    ("<xml/>", "SQS message body is not JSON"),
    ("[]", "not a JSON object"),
    ('{"Type": "Notification", "TopicArn": "arn:aws:sns:eu-west-1:1:t"}', "no 'Message' string"),
    ('{"Type": "Notification", "Message": "{}"}', "no 'TopicArn'"),
    ('{"Type": "UnsubscribeConfirmation", "TopicArn": "arn:aws:sns:eu-west-1:1:t"}', "UnsubscribeConfirmation"),
    ('{"Type": "Surprise"}', "'Surprise' is not a notification"),
])
def test_unwrap_refuses(body: str, words: str) -> None:
    with pytest.raises(FeedbackFormatError, match=re.escape(words)):
        unwrap_queue_body(body)


def test_a_dict_that_is_not_json_data_is_a_format_error() -> None:
    record = bounce()
    record["mail"]["timestamp"] = datetime(2026, 3, 1, tzinfo=UTC)

    with pytest.raises(FeedbackFormatError, match="not JSON data"):
        parse_ses_notification(record)


@pytest.mark.parametrize("build, section", [
    (lambda: samples.subscription(statuses={"journeys": "OptOut"}), "subscription"),
    (samples.opened, "open"),
    (samples.clicked, "click"),
])
def test_a_later_event_of_a_repeatable_kind_is_not_taken_for_a_copy(build: Callable[[], dict[str, Any]],
                                                                    section: str) -> None:
    """Subscription, open and click events carry no feedback id: an opt-out that follows an opt-in
    for the same message, or a second click, must get a key of its own or the policy drops it."""
    first = build()
    later = copy.deepcopy(first)
    later[section]["timestamp"] = "2026-02-14T09:12:40.000Z"
    (one,), (other,) = parse_ses_notification(first), parse_ses_notification(later)
    assert (one.provider_message_id, one.recipient) == (other.provider_message_id, other.recipient)
    assert one.dedupe_key != other.dedupe_key
    assert parse_ses_notification(copy.deepcopy(first))[0].dedupe_key == one.dedupe_key  # a true copy still is
