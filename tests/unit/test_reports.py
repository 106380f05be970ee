"""Report mail read by ``read_report``: every DSN and ARF sample of the shared corpus, checked
against the ground truth its source asserts (manifest.jsonl); the same formats generated in code
(tests/support/report_samples.py), so a clone without the corpus still reads each of them; plus
the classification table and hostile input. The corpus tests carry the ``corpus`` marker: without
the corpus they are left out with a notice, never skipped, and the generated samples still run."""

from __future__ import annotations

import base64
import email
import json
import random
import re
from email.message import Message
from email.policy import compat32
from typing import Any

import pytest
from flufl.bounce import all_failures

from tests.conftest import corpus_dir, corpus_present
from tests.support.report_samples import SAMPLES, Sample
from tests.support.work import steps_while
from waypost.feedback.dsn import classify, effective_status
from waypost.feedback.events import BounceType, FeedbackFormatError, Kind, Source
from waypost.feedback.reasons import is_hard
from waypost.feedback.reports import Report, read_report

P, T, U = BounceType.PERMANENT, BounceType.TRANSIENT, BounceType.UNDETERMINED

# Where a source's ground truth and a sound reading of the sample differ, the reading is
# expected, and the reason is written here. Nothing in the corpus is skipped.
OVERRIDES: dict[str, dict[str, Any]] = {
    # flufl.bounce counts every "Action: failed" as permanent; the Status field reads
    # "5.0.0 (recipient reached disk quota)": a full mailbox, usually transient (RFC 3463 §3.3),
    # and SES reports it as Transient/MailboxFull
    "dsn/flufl_dsn_01.txt": {"bounce": (T, "MailboxFull")},
    # flufl.bounce counts every non-warning notice as permanent; this one gives up after
    # "(#4.4.1) I wasn't able to establish an SMTP connection": a 4.x.x network failure after
    # queue expiry, which says nothing about the address
    "dsn/flufl_yahoo_01.txt": {"bounce": (T, "General")},
    # Final-Recipient r@p351355.pool.example.ne.jp is the local alias the receiving side
    # rewrote to; Original-Recipient kijitora@example.org is what was sent (RFC 3464 §2.3.1)
    "dsn/sisimai_lhost-postfix-01.eml": {"addresses": ["kijitora@example.org"]},
    # sisimai's "mailboxfull" comes from the human part ("Your message to <nekochan> was
    # automatically rejected: Not enough disk space"), about another address; the
    # delivery-status says 5.1.1 "User Unknown" for the recipient it names
    "dsn/sisimai_rfc3464-01.eml": {"bounce": (P, "NoEmail")},
}
SENDER_SIDE_REASONS = {"blocked", "securityerror", "policyviolation"}  # sisimai reasons for 5.7.x refusals


def _records(category: str, key: str) -> list[Any]:
    """Manifest records of ``category`` holding ``key``. Without the corpus, one placeholder
    marked ``corpus`` (left out with the rest; an empty parameter list would be skipped), which
    fails if it ever runs."""
    if not corpus_present():
        return [pytest.param(None, id="corpus-missing", marks=pytest.mark.corpus)]
    lines = (corpus_dir() / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [pytest.param(r, id=r["file"]) for r in records if r["category"] == category and key in r]


def _read(record: dict[str, Any] | None) -> tuple[Report, bytes]:
    root = corpus_dir()  # fails when the corpus is missing
    assert record is not None
    raw = (root / record["file"]).read_bytes()
    return read_report(raw), raw


def _standard(status: str) -> bool:
    """An RFC 3463 code as registered: sisimai also invents x.0.9xx codes for its reasons."""
    match = re.fullmatch(r"[245]\.(\d{1,3})\.(\d{1,3})", status)
    return bool(match) and int(match.group(1)) <= 7 and int(match.group(2)) < 900


def _lower(addresses: Any) -> set[str]:
    return {address.lower() for address in addresses if address}


# --- corpus ----------------------------------------------------------------------------------


@pytest.mark.corpus
def test_corpus_holds_the_report_samples() -> None:
    root = corpus_dir()
    assert len(list((root / "dsn").iterdir())) >= 50
    assert len(list((root / "arf").iterdir())) >= 10


@pytest.mark.corpus
@pytest.mark.parametrize("record", _records("dsn", "expected_addresses"))
def test_flufl_samples(record: dict[str, Any] | None) -> None:
    report, _ = _read(record)
    assert record is not None
    assert report.kind == "dsn", report.summary
    assert _lower(e.recipient for e in report.events) == _lower(record["expected_addresses"])
    override = OVERRIDES.get(record["file"], {})
    for event in report.events:
        assert event.source == Source.DSN
        if "bounce" in override:
            assert (event.kind, event.bounce_type, event.bounce_subtype) == (Kind.BOUNCE, *override["bounce"])
        elif record["expected_permanent"]:
            # flufl.bounce's "permanent" says the delivery failed for good, not why; since issue
            # 16 only a reason that proves the address dead is a Permanent (suppressing) bounce
            assert event.kind == Kind.BOUNCE and event.bounce_type is not None, event
            assert (event.bounce_type == P) == is_hard(event.reason or "undefined"), event
        else:
            assert event.kind == Kind.DELAY or (event.kind, event.bounce_type) == (Kind.BOUNCE, T), event


@pytest.mark.corpus
@pytest.mark.parametrize("record", _records("dsn", "expected"))
def test_sisimai_samples(record: dict[str, Any] | None) -> None:
    report, _ = _read(record)
    assert record is not None
    expected, override = record["expected"], OVERRIDES.get(record["file"], {})
    if {e["reason"] for e in expected} == {"vacation"}:
        assert report.kind == "auto-reply"
        assert [e.kind for e in report.events] == [Kind.AUTO_REPLY]
        return
    assert report.kind == "dsn", report.summary
    events = report.events
    assert events
    observed = override.get("addresses", record["observed_final_recipients"])
    assert _lower(observed) <= _lower(e.recipient for e in events)
    for want in expected:
        status, reason = want["status"], want["reason"]
        if _standard(status):
            assert status in {e.status for e in events}
        same = [e for e in events if e.status == status] or list(events)
        if want["hardbounce"]:
            assert all(e.bounce_type == P for e in same), same
        if reason == "delivered":
            assert all(e.kind == Kind.DELIVERY for e in events)
        if reason == "mailboxfull":
            wanted = override.get("bounce", (T, "MailboxFull"))
            assert all((e.bounce_type, e.bounce_subtype) == wanted for e in same), same
        if reason in SENDER_SIDE_REASONS:  # a sender-side refusal: review, never suppress
            assert all(e.bounce_type == U for e in same), same
        if reason == "expired":
            assert all(e.bounce_type != P for e in events)


@pytest.mark.corpus
@pytest.mark.parametrize("record", _records("arf", "file"))
def test_arf_samples(record: dict[str, Any] | None) -> None:
    report, _ = _read(record)
    assert record is not None
    assert report.kind == "arf", report.summary
    expected = record.get("expected") or [{"another": re.search(r"Feedback-Type=(\S+?);", record["desc"])[1]}]
    assert {e.feedback_type for e in report.events} == {want["another"] for want in expected}
    assert len(report.events) == len(expected)
    listed = re.search(r"Original-Rcpt-To: ([^;]+)", record["desc"])
    if listed:
        assert _lower(e.recipient for e in report.events) == _lower(listed[1].split(", "))
    for event in report.events:
        assert (event.kind, event.source) == (Kind.COMPLAINT, Source.ARF)
        assert event.feedback_id == report.report_message_id
        assert event.message_id_header == report.original_message_id


@pytest.mark.corpus
@pytest.mark.parametrize("record", _records("dsn", "file") + _records("arf", "file"))
def test_message_id_header_is_the_enclosed_originals(record: dict[str, Any] | None) -> None:
    report, raw = _read(record)
    enclosed = _enclosed_message_id(email.message_from_bytes(raw.removeprefix(b"\xef\xbb\xbf"), policy=compat32))
    if enclosed is not None:
        assert report.original_message_id == enclosed
    assert all(e.message_id_header == report.original_message_id for e in report.events)


def _enclosed_message_id(message: Message) -> str | None:
    for part in message.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) else email.message_from_string(payload)
            value = inner.get("Message-ID")
            return " ".join(str(value).split()) if value else None
    return None


# --- generated samples: the corpus's formats, made in code -----------------------------------


def _samples(*families: str) -> list[Any]:
    return [pytest.param(s, id=s.name) for s in SAMPLES if s.family in families]


def _check_bounce(sample: Sample, report: Report) -> None:
    assert report.kind == "dsn", report.summary
    assert {(e.recipient or "").lower() for e in report.events} == set(sample.outcomes)
    for event in report.events:
        recipient = (event.recipient or "").lower()
        assert (event.kind, event.bounce_type, event.bounce_subtype) == sample.outcomes[recipient], event
        assert event.source == Source.DSN
        if recipient in sample.statuses:
            assert event.status == sample.statuses[recipient]


@pytest.mark.parametrize("sample", _samples("dsn"))
def test_generated_dsns(sample: Sample) -> None:
    """Standard DSNs (what the sisimai corpus samples check): one event per recipient group,
    Original-Recipient before Final-Recipient, Status/Action/Diagnostic-Code classified,
    delivered and delayed notices, sender-side 5.7.x refusals left undetermined."""
    report = read_report(sample.raw, verp_address="bounce+q7@mail.waypost.test")
    _check_bounce(sample, report)
    assert report.summary.startswith("DSN from dns; ")  # read from the delivery-status part
    assert report.report_message_id == sample.report_id
    assert report.original_message_id == sample.original_id
    for event in report.events:
        assert event.feedback_id == sample.report_id
        assert event.verp_address == "bounce+q7@mail.waypost.test"
        assert event.occurred_at is not None  # Last-Attempt-Date


@pytest.mark.parametrize("sample", _samples("bounce"))
def test_generated_non_standard_bounces(sample: Sample) -> None:
    """Bounces without a delivery-status part (what the flufl.bounce corpus samples check):
    qmail, Exim, Postfix, Yahoo-style, plain-text warnings and failures, bare reply lines;
    the status and diagnostic taken from the lines near each address."""
    message = email.message_from_bytes(sample.raw, policy=compat32)
    temporary, permanent = all_failures(message)
    # each sample reaches the path it stands for: a flufl.bounce detector, or the last resort
    assert bool(temporary or permanent) == sample.detector, (temporary, permanent)
    report = read_report(sample.raw)
    _check_bounce(sample, report)
    assert report.summary.startswith("bounce from ")  # heuristics, not a delivery-status part
    assert report.original_message_id == sample.original_id
    assert all(e.feedback_id == sample.report_id for e in report.events)


@pytest.mark.parametrize("sample", _samples("arf"))
def test_generated_arf_reports(sample: Sample) -> None:
    """Feedback reports (what the ARF corpus samples check): the feedback type, one complaint
    per Original-Rcpt-To (else the original's single To, else one unknown recipient), the
    report's and the original's Message-IDs on every event, Apple's opt-out."""
    report = read_report(sample.raw, verp_address="fbl@mail.waypost.test")
    assert report.kind == "arf", report.summary
    assert tuple(e.recipient for e in report.events) == sample.recipients
    for event in report.events:
        assert (event.kind, event.source, event.feedback_type) == (Kind.COMPLAINT, Source.ARF, sample.feedback_type)
        assert event.unsubscribe == sample.unsubscribe
        assert event.feedback_id == report.report_message_id == sample.report_id
        assert event.message_id_header == report.original_message_id == sample.original_id
        assert event.bounce_type is None


@pytest.mark.parametrize("sample", _samples("auto-reply"))
def test_generated_auto_replies(sample: Sample) -> None:
    """An out-of-office answer to our mail (the corpus's RFC 3834 sample) is never a bounce."""
    report = read_report(sample.raw)
    assert report.kind == "auto-reply", report.summary
    (event,) = report.events
    assert (event.kind, event.recipient, event.bounce_type) == (Kind.AUTO_REPLY, sample.sender, None)
    assert event.feedback_id == sample.report_id


@pytest.mark.parametrize("sample", [pytest.param(s, id=s.name) for s in SAMPLES])
def test_message_id_header_is_the_enclosed_originals_in_generated_reports(sample: Sample) -> None:
    report = read_report(sample.raw)
    enclosed = _enclosed_message_id(email.message_from_bytes(sample.raw.removeprefix(b"\xef\xbb\xbf"),
                                                             policy=compat32))
    if enclosed is not None or sample.family == "dsn":  # others may quote the original inline
        assert enclosed == sample.original_id
    assert report.original_message_id == sample.original_id
    assert all(e.message_id_header == report.original_message_id for e in report.events)


def test_generated_samples_cover_each_format_and_outcome() -> None:
    """The generated set keeps its breadth (the corpus has its own count check): every family,
    every kind of outcome, the enclosure forms, and each non-standard detector path."""
    by_family: dict[str, list[Sample]] = {}
    for sample in SAMPLES:
        by_family.setdefault(sample.family, []).append(sample)
    assert {family: len(found) >= 3 for family, found in by_family.items()} == {
        "dsn": True, "bounce": True, "arf": True, "auto-reply": True}
    outcomes = {outcome for sample in SAMPLES for outcome in sample.outcomes.values()}
    assert {(kind, bounce_type) for kind, bounce_type, _ in outcomes} >= {
        (B, P), (B, T), (B, U), (DELAY, None), (DELIVERY, None)}
    assert {subtype for *_, subtype in outcomes} >= {"NoEmail", "General", "MailboxFull", "MessageTooLarge",
                                                      "Undetermined"}
    assert {s.detector for s in by_family["bounce"]} == {True, False}
    assert {s.feedback_type for s in by_family["arf"]} >= {"abuse", "auth-failure", "opt-out"}
    enclosures = {part.get_content_type() for s in SAMPLES
                  for part in email.message_from_bytes(s.raw, policy=compat32).walk()}
    assert enclosures >= {"message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
                          "message/delivery-status", "message/feedback-report"}
    assert len({s.raw for s in SAMPLES}) == len({s.name for s in SAMPLES}) == len(SAMPLES)


# --- classification --------------------------------------------------------------------------

B, DELAY, DELIVERY = Kind.BOUNCE, Kind.DELAY, Kind.DELIVERY


@pytest.mark.parametrize(("status", "action", "diagnostic", "hint", "expected"), [
    ("4.4.1", "delayed", None, None, (DELAY, None, None)),
    ("5.1.1", "Delayed (retrying)", None, None, (DELAY, None, None)),
    ("2.0.0", "delivered", None, None, (DELIVERY, None, None)),
    (None, "relayed", None, None, (DELIVERY, None, None)),
    (None, "expanded", None, None, (DELIVERY, None, None)),
    ("2.1.5", None, None, None, (DELIVERY, None, None)),
    ("5.1.1", "failed", "smtp; 550 5.1.1 user unknown", None, (B, P, "NoEmail")),
    ("5.1.0", "failed", None, None, (B, P, "NoEmail")),
    ("5.1.6", "failed", None, None, (B, P, "NoEmail")),
    ("5.1.10", "failed", None, None, (B, P, "NoEmail")),
    ("5.1.2", "failed", None, None, (B, P, "General")),
    ("5.1.8", "failed", None, None, (B, U, "Undetermined")),
    ("5.2.2", "failed", None, None, (B, T, "MailboxFull")),
    ("4.2.2", "failed", None, None, (B, T, "MailboxFull")),
    ("5.2.3", "failed", None, None, (B, T, "MessageTooLarge")),
    ("5.3.4", "failed", None, None, (B, T, "MessageTooLarge")),
    ("5.7.1", "failed", "smtp; 550 5.7.1 blocked", True, (B, U, "Undetermined")),
    ("5.7.26", "failed", "550 5.7.26 unauthenticated mail", None, (B, U, "Undetermined")),
    ("5.7.1", "failed", "552 5.7.1 quota exceeded", None, (B, U, "Undetermined")),
    ("5.0.0", "failed", None, None, (B, T, "General")),  # no cause given: scored, not proof
    ("5.2.1", "failed", None, None, (B, T, "General")),  # RFC 3463 x.2.1 mailbox disabled
    ("5.4.4", "failed", None, None, (B, P, "General")),
    ("4.4.7", "failed", None, None, (B, T, "General")),
    ("4.7.0", "failed", None, None, (B, U, "Undetermined")),  # x.7.x: about our sending
    ("5.1.1", "failed", "552 Mailbox full", None, (B, T, "MailboxFull")),
    ("5.0.0", "failed", "x-unix; user is over quota", None, (B, T, "MailboxFull")),
    ("5.0.0", "failed", "smtp; 550-'5.7.1 access denied'", None, (B, U, "Undetermined")),
    ("5.0.0", "failed", "smtp; 550 #5.1.0 Address rejected.", None, (B, P, "NoEmail")),
    (None, "failed", "smtp; 550 5.1.1 no such user", None, (B, P, "NoEmail")),
    (None, "failed", "smtp; 550 no such user", None, (B, T, "General")),  # no x.1.x code, no RCPT stage
    (None, "failed", "smtp; 421 try later", None, (B, T, "General")),
    (None, "failed", "host 192.0.2.1 port 25: timeout", True, (B, T, "General")),
    (None, None, None, True, (B, T, "General")),  # flufl's "permanent" alone proves nothing
    (None, None, None, False, (B, T, "General")),
    (None, None, None, None, (B, U, "Undetermined")),
    ("2.0.0", "failed", None, None, (B, U, "Undetermined")),
])
def test_classify(status: str | None, action: str | None, diagnostic: str | None, hint: bool | None,
                  expected: tuple[Kind, BounceType | None, str | None]) -> None:
    assert classify(status, action, diagnostic, hint) == expected


@pytest.mark.parametrize(("status", "diagnostic", "expected"), [
    ("5.1.1", "smtp; 550 5.2.2 full", "5.1.1"),  # a specific Status field stands
    ("5.0.0 (permanent failure)", "smtp; 550 5.1.1 <a@b.example>", "5.1.1"),
    ("5.0.0", "smtp; 5.1.0 - Unknown address error 550-'5.7.1 <x@y.example>... Access denied'", "5.7.1"),
    ("4.0.0", "smtp; 550 5.1.1 unknown", "4.0.0"),  # another class does not replace the Status
    (None, "host mx [192.0.2.10]: said 550 5.01.01 no", "5.1.1"),
    (None, "relay 10.5.1.1 refused", None),  # part of an address, not a status
    ("garbage", None, None),
])
def test_effective_status(status: str | None, diagnostic: str | None, expected: str | None) -> None:
    assert effective_status(status, diagnostic) == expected


# --- synthetic reports -----------------------------------------------------------------------


def _dsn(recipient_groups: str, *, headers: str = "", ds_type: str = "message/delivery-status",
         base64_status: bool = False) -> bytes:
    status = "Reporting-MTA: dns; mx.example.org\r\nArrival-Date: Sun, 1 Mar 2026 10:00:00 +0000\r\n\r\n"
    status += recipient_groups
    if base64_status:  # RFC 6533 §6 lets the global types be base64-encoded
        status = base64.encodebytes(status.encode()).decode() + "\r\n"
    encoding = "Content-Transfer-Encoding: base64\r\n" if base64_status else ""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nTo: bounce+42@mail.example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <report-1@mx.example.org>\r\n"
        "Date: Sun, 1 Mar 2026 10:05:00 +0100\r\n" + headers +
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b1\r\n\r\n"
        "--b1\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
        f"--b1\r\nContent-Type: {ds_type}\r\n{encoding}\r\n{status}"
        "--b1\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <out-42@mail.example.com>\r\n"
        "Return-Path: <bounce+42@mail.example.com>\r\nTo: ann@example.org\r\nSubject: hi\r\n\r\nhello\r\n--b1--\r\n"
    ).encode()


def test_read_report_fills_correlation_fields() -> None:
    raw = _dsn("Final-Recipient: rfc822; Ann@EXAMPLE.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
               "Remote-MTA: dns; mx.example.org\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n")
    report = read_report(raw, verp_address="bounce+42@mail.example.com")
    assert (report.kind, report.original_message_id) == ("dsn", "<out-42@mail.example.com>")
    assert report.report_message_id == "<report-1@mx.example.org>"
    assert report.original_return_path == "bounce+42@mail.example.com"
    assert report.summary == "DSN from dns; mx.example.org: 1 recipient (1 permanent)"
    (event,) = report.events
    assert event.recipient == "Ann@example.org"  # local part as given, domain lower-cased
    assert event.message_id_header == "<out-42@mail.example.com>"
    assert event.feedback_id == "<report-1@mx.example.org>"
    assert event.verp_address == "bounce+42@mail.example.com"
    assert (event.status, event.action, event.bounce_subtype) == ("5.1.1", "failed", "NoEmail")
    assert event.occurred_at is not None and event.occurred_at.isoformat() == "2026-03-01T09:05:00+00:00"
    assert "Final-Recipient: rfc822; Ann@EXAMPLE.org" in event.raw


@pytest.mark.parametrize("base64_status", [False, True])
def test_global_delivery_status_with_utf8_address(base64_status: bool) -> None:
    group = "Final-Recipient: utf-8; j\\x{00F6}rg@b\\x{00FC}cher.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    report = read_report(_dsn(group, ds_type="message/global-delivery-status", base64_status=base64_status))
    assert [e.recipient for e in report.events] == ["jörg@xn--bcher-kva.example"]


def test_bounce_marked_auto_submitted_is_still_a_bounce() -> None:
    raw = _dsn("Final-Recipient: rfc822; ann@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n",
               headers="Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\n")
    report = read_report(raw)
    assert report.kind == "dsn"
    assert [e.kind for e in report.events] == [Kind.DELAY]


@pytest.mark.parametrize("marker", [
    "Auto-Submitted: auto-replied\r\nSubject: Re: your mail\r\n",
    "X-Autoreply: yes\r\nSubject: hello\r\n",
    "Precedence: auto_reply\r\nSubject: hello\r\n",
    "Subject: Out of Office: back on Monday\r\n",
    "Subject: Automatic reply: hello\r\n",
    "Subject: =?utf-8?q?Automatische_Antwort=3A_Urlaub?=\r\n",
])
def test_auto_replies(marker: str) -> None:
    raw = f"From: Bob <bob@example.net>\r\nTo: bounce+7@mail.example.com\r\n{marker}\r\nI am away.\r\n".encode()
    report = read_report(raw, verp_address="bounce+7@mail.example.com")
    assert report.kind == "auto-reply"
    (event,) = report.events
    assert (event.kind, event.source, event.recipient, event.bounce_type) == (
        Kind.AUTO_REPLY, Source.DSN, "bob@example.net", None)


def test_arf_in_a_plain_text_body() -> None:
    raw = (b"From: fbl@isp.example\r\nTo: fbl@mail.example.com\r\nMessage-ID: <fbl-1@isp.example>\r\n"
           b"Subject: complaint\r\n\r\nA user complained.\r\n\r\nFeedback-Type: Abuse\r\nUser-Agent: X/1\r\n"
           b"Version: 1\r\nOriginal-Rcpt-To: <carl@example.org>\r\nArrival-Date: Mon, 2 Mar 2026 08:00:00 -0500\r\n")
    report = read_report(raw)
    assert report.kind == "arf"
    (event,) = report.events
    assert (event.feedback_type, event.recipient) == ("abuse", "carl@example.org")
    assert event.occurred_at is not None and event.occurred_at.isoformat() == "2026-03-02T13:00:00+00:00"


# --- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n", bytes(range(256)) * 4, random.Random(7).randbytes(4096)])
def test_not_mail_raises_only_feedback_format_error(raw: bytes) -> None:
    with pytest.raises(FeedbackFormatError):
        read_report(raw)


def test_not_bytes_is_a_format_error() -> None:
    with pytest.raises(FeedbackFormatError):
        read_report("From: a@b.example\n\nhi")  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [
    b"From: x@example.org\r\nContent-Type: multipart/report; report-type=delivery-status\r\n\r\n",
    b"From: x@example.org\r\nContent-Type: multipart/report; boundary=zz\r\n\r\n--zz--\r\n",
    b"From: x@example.org\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=zz\r\n\r\n",
    b"Subject: \xff\xfe\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; \xff@\xfe\r\n",
    b"From: x@example.org\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64",
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
    + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 999,
    # 3000 MIME levels: deeper than the email package's recursion can go
    b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(3000)),
    b"From: MAILER-DAEMON@mx.example.org\r\nContent-Type: multipart/report; boundary=c0\r\n\r\n" + b"".join(
        b"--c%d\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=c%d\r\n\r\n"
        % (i, i + 1) for i in range(300)),
    b"Subject: failure notice\r\n\r\n<ann@example.org>:\r\n550 5.1.1 no such user\r\n",  # no From: flufl's Yale
])
def test_broken_mail_is_unknown_not_a_crash(raw: bytes) -> None:
    report = read_report(raw)
    assert report.kind in ("unknown", "dsn")
    assert (report.kind == "unknown") == (not report.events)


def _failed_groups(count: int) -> str:
    return "".join(f"Final-Recipient: rfc822; user{i}@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
                   for i in range(count))


def test_ten_thousand_recipients_in_one_status_part() -> None:
    report = read_report(_dsn(_failed_groups(10_000)))
    assert len(report.events) == len({e.recipient for e in report.events}) == 10_000
    assert {e.bounce_subtype for e in report.events} == {"NoEmail"}


def test_reading_costs_the_same_per_recipient_however_many() -> None:
    """Reading grows linearly with the recipients: ten times as many take at most ten times the
    steps (plus 5 %), where a step that looked at every recipient again for each recipient
    would take about a hundred times. (How long it takes is for a benchmark, not a test.)"""
    small_steps, small = steps_while(lambda: read_report(_dsn(_failed_groups(500))))
    large_steps, large = steps_while(lambda: read_report(_dsn(_failed_groups(5_000))))
    assert (len(small.events), len(large.events)) == (500, 5_000)
    assert large_steps / 5_000 <= 1.05 * small_steps / 500, (small_steps, large_steps)


def test_what_the_readers_remember_goes_with_the_message() -> None:
    """The parts, fields and text that ``arf``, ``dsn`` and ``reports`` share are worked out
    once per message object (``mailparts``) and never keep that object alive."""
    import weakref

    from waypost.feedback.arf import read_arf
    from waypost.feedback.dsn import read_dsn
    from waypost.feedback.mailparts import _READINGS, header, human_text, iter_parts

    message = email.message_from_bytes(_dsn(_failed_groups(2)), policy=compat32)
    assert read_arf(message) is None
    first = read_dsn(message)
    assert first is not None and len(first.recipients) == 2
    assert read_dsn(message) == first and human_text(message) == human_text(message)
    assert header(message, "content-type") == header(message, "Content-Type")
    assert [part.get_content_type() for part in iter_parts(message)][:1] == ["multipart/report"]
    assert message in _READINGS
    gone = weakref.ref(message)
    del message, first
    assert gone() is None


def test_8bit_text_in_a_delivery_status_field_is_read() -> None:
    """A Diagnostic-Code in the remote server's own language, sent as raw UTF-8 (RFC 6533 allows
    it in message/global-delivery-status, servers send it in the plain type too)."""
    group = "Final-Recipient: rfc822; ann@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n" \
            "Diagnostic-Code: smtp; 550 5.1.1 Benutzer unbekannt: Empfänger existiert nicht\r\n\r\n"
    for ds_type in ("message/delivery-status", "message/global-delivery-status"):
        report = read_report(_dsn(group, ds_type=ds_type))  # _dsn encodes as UTF-8
        assert report.kind == "dsn", report.summary
        [event] = report.events
        assert (event.recipient, event.reason, event.bounce_type) == ("ann@example.org", "userunknown", P)
        assert event.diagnostic == "smtp; 550 5.1.1 Benutzer unbekannt: Empfänger existiert nicht"
