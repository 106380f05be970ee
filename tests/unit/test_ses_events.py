"""SES notification and event JSON → FeedbackEvents, table-driven over the shared corpus.

The table below is the expectation per corpus file; where the corpus MANIFEST states the
type, recipients, bounce type or feedback type, the table is checked against it too, so
a table typo cannot agree with a parser bug.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import corpus_dir
from waypost.feedback.events import BounceType, FeedbackEvent, FeedbackFormatError, Kind, Source
from waypost.feedback.ses_events import parse_ses_notification, unwrap_queue_body

SIM = "simulator.amazonses.com"
SES_SAMPLE = re.compile(r"^ses/(relay_.*_(ses|sns)_body|sisimai_json-amazonses-\d+)\.json$")


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


def test_table_covers_every_ses_sample_of_the_manifest() -> None:
    assert set(manifest()) == set(EXPECTED)


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


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_sample(name: str) -> None:
    expect = EXPECTED[name]
    if expect.unwrap_error:
        with pytest.raises(FeedbackFormatError, match=expect.unwrap_error):
            unwrap_queue_body(read_sample(name))
        return

    events = events_of(name)

    if expect.kind is None:
        assert events == []
        return
    assert [e.recipient for e in events] == list(expect.recipients)
    raw = json.loads(read_sample(name))
    for event in events:
        assert (event.kind, event.source) == (expect.kind, Source.SES)
        assert (event.bounce_type, event.bounce_subtype) == (expect.bounce_type, expect.bounce_subtype)
        assert event.feedback_type == expect.feedback_type
        assert event.provider_message_id == raw["mail"]["messageId"]
        assert event.raw == read_sample(name)
        assert event.occurred_at is None or event.occurred_at.tzinfo is UTC
        for attribute, value in expect.fields:
            assert getattr(event, attribute) == value, attribute


# --- the same report by both mechanisms, several recipients, unknown keys --------------------


@pytest.mark.parametrize("name", ["relay_bounce_notification_from_simulator_ses_body.json",
                                  "relay_complaint_notification_from_simulator_ses_body.json",
                                  "relay_delivery_notification_success_from_simulator_ses_body.json"])
def test_notification_and_event_record_of_one_report_share_dedupe_keys(name: str) -> None:
    notification = json.loads(read_sample(name))
    record = {("eventType" if k == "notificationType" else k): v for k, v in notification.items()}
    record["mail"] = {**record["mail"], "tags": {"ses:configuration-set": ["waypost"]}}

    [as_notification] = parse_ses_notification(json.dumps(notification))
    [as_record] = parse_ses_notification(record)

    assert as_notification.raw != as_record.raw
    assert as_notification.dedupe_key == as_record.dedupe_key


def test_a_bounce_for_three_recipients_gives_three_events() -> None:
    record = json.loads(read_sample("relay_bounce_event_example_ses_body.json"))
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


def test_unknown_keys_anywhere_are_ignored() -> None:
    text = read_sample("relay_bounce_event_example_ses_body.json")
    record = json.loads(text)
    record["futureTopLevel"] = {"x": [1, 2]}
    record["mail"]["futureMailField"] = "y"
    record["bounce"]["futureBounceField"] = None
    record["bounce"]["bouncedRecipients"][0]["futureRecipientField"] = 7

    [plain] = parse_ses_notification(text)
    [extended] = parse_ses_notification(record)

    assert extended.raw != plain.raw
    assert extended == FeedbackEvent(**{**plain.__dict__, "raw": extended.raw})


def test_a_dict_is_kept_as_compact_json() -> None:
    record = json.loads(read_sample("relay_send_event_example_ses_body.json"))

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


def test_complaint_feedback_type_is_lower_cased() -> None:
    record = json.loads(read_sample("relay_complaint_event_example_ses_body.json"))
    record["complaint"].update(complaintFeedbackType="Not-Spam", complaintSubType="OnAccountSuppressionList")

    [event] = parse_ses_notification(record)

    assert (event.feedback_type, event.complaint_subtype) == ("not-spam", "OnAccountSuppressionList")


@pytest.mark.parametrize(("unsubscribe_all", "statuses", "expected"), [
    (True, [], True),
    (False, ["OptIn", "OptOut"], True),
    (False, ["OptIn"], False),
    (None, None, False),
])
def test_subscription_opt_out(unsubscribe_all: bool | None, statuses: list[str] | None, expected: bool) -> None:
    record = json.loads(read_sample("relay_subscription_event_example_ses_body.json"))
    topics = None if statuses is None else [{"topicName": f"t{i}", "subscriptionStatus": s}
                                            for i, s in enumerate(statuses)]
    record["subscription"]["newTopicPreferences"] = {"unsubscribeAll": unsubscribe_all,
                                                     "topicSubscriptionStatus": topics}

    [event] = parse_ses_notification(record)

    assert event.unsubscribe is expected


def test_per_destination_events_for_several_destinations_with_display_names() -> None:
    record = json.loads(read_sample("relay_send_event_example_ses_body.json"))
    record["mail"]["destination"] = ["Ann <ann@example.org>", "bob@example.org"]

    events = parse_ses_notification(record)

    assert [(e.kind, e.recipient) for e in events] == [(Kind.SEND, "ann@example.org"), (Kind.SEND, "bob@example.org")]


def test_a_bounce_naming_no_recipient_still_gives_one_event() -> None:
    record = bounce()
    record["bounce"]["bouncedRecipients"] = []

    [event] = parse_ses_notification(record)

    assert (event.kind, event.recipient, event.feedback_id) == (Kind.BOUNCE, None, "fb-1")


def test_click_event() -> None:
    record = json.loads(read_sample("relay_open_event_example_ses_body.json"))
    record["eventType"] = "Click"
    record["click"] = {**record.pop("open"), "link": "https://example.org/x", "linkTags": {}}

    [event] = parse_ses_notification(record)

    assert (event.kind, event.recipient) == (Kind.CLICK, "recipient@example.com")


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


def test_odd_shapes_inside_real_samples_never_crash() -> None:
    """Every string, list and object of every sample replaced in turn by other JSON types."""
    for name, expect in EXPECTED.items():
        if expect.envelope:
            continue
        original = json.loads(read_sample(name))
        for path in _paths(original):
            for replacement in (None, 3, "x", [], {}, [None], {"emailAddress": 1}):
                record = copy.deepcopy(original)
                _set(record, path, replacement)
                with contextlib.suppress(FeedbackFormatError):
                    parse_ses_notification(record)


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


def test_unwrap_an_sns_envelope() -> None:
    body = read_sample("relay_single_recipient_email_sns_body.json")

    message, topic = unwrap_queue_body(body)

    assert message == json.loads(body)["Message"]
    assert topic == "arn:aws:sns:us-east-1:168781634622:ses-inbound-grelay"


def test_unwrap_a_raw_delivery_body_returns_it_unchanged() -> None:
    body = read_sample("relay_bounce_event_example_ses_body.json")

    assert unwrap_queue_body(body) == (body, None)


@pytest.mark.parametrize("name", ["rails_amazon_valid_signature.json",
                                  "relay_subscription_confirmation_invalid_sns_body.json"])
def test_a_subscription_confirmation_on_a_queue_is_explained(name: str) -> None:
    with pytest.raises(FeedbackFormatError) as caught:
        unwrap_queue_body(read_sample(name))

    text = str(caught.value)
    assert "SubscriptionConfirmation" in text and json.loads(read_sample(name))["TopicArn"] in text
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
