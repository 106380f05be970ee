"""A reason for every failed recipient (``feedback.reasons``), on generated report mail and SES
notifications, so a clone without the shared corpus still exercises every reason family: the
dead addresses (suppressed), our own sending (never suppressed, counted for the setup alarm),
transient failures (scored) and refused messages (recorded). The corpus measurement is in
test_bounce_corpus.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.report_samples import _group, dsn
from waypost.feedback import reasons
from waypost.feedback.dsn import assess
from waypost.feedback.events import BounceType, Kind
from waypost.feedback.policy import bounce_verdict, explain_action
from waypost.feedback.reports import read_report
from waypost.feedback.ses_events import parse_ses_notification

# (status, diagnostic as a remote server words it, reason, what the policy does)
CASES: list[tuple[str, str, str, str]] = [
    # dead: suppressed at once
    ("5.1.1", "smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown", "userunknown",
     "suppress"),
    ("5.1.1", "smtp; 550-5.1.1 The email account that you tried to reach does not exist.", "userunknown",
     "suppress"),
    ("5.1.2", "smtp; 550 5.1.2 Host unknown (Name server: mx.example.org: host not found)", "hostunknown", "suppress"),
    ("5.1.6", "smtp; 550 5.1.6 recipient no longer on server", "hasmoved", "suppress"),
    ("5.1.10", "smtp; 556 5.1.10 Recipient address has null MX", "notaccept", "suppress"),
    # about our sending: never suppressed, counted toward the setup alarm
    ("5.7.26", "smtp; 550-5.7.26 Unauthenticated email from example.net is not accepted due to domain's DMARC "
               "policy", "authfailure", "alarm"),
    ("5.7.515", "smtp; 550 5.7.515 Access denied, sending domain does not meet the required authentication level",
     "authfailure", "alarm"),
    ("5.7.509", "smtp; 550 5.7.509 Access denied, sending domain does not pass DMARC verification",
     "authfailure", "alarm"),
    ("4.7.28", "smtp; 421-4.7.28 Our system has detected an unusual rate of unsolicited mail", "badreputation",
     "alarm"),
    ("5.7.708", "smtp; 550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP",
     "badreputation", "alarm"),
    ("5.7.25", "smtp; 550-5.7.25 The IP address sending this message does not have a PTR record setup",
     "requireptr", "alarm"),
    ("5.7.1", "smtp; 554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org",
     "blocked", "alarm"),
    ("5.7.1", "smtp; 550 5.7.1 Message rejected as spam by Content Filtering", "spamdetected", "alarm"),
    ("5.7.1", "smtp; 554 5.7.1 <ann@example.org>: Relay access denied", "norelaying", "alarm"),
    ("5.7.9", "smtp; 554 5.7.9 Message not accepted for policy reasons", "policyviolation", "alarm"),
    ("4.7.0", "smtp; 421 4.7.0 Too many connections from your IP, try later", "toomanyconn", "alarm"),
    ("5.1.8", "smtp; 553 5.1.8 <bounces@mail.waypost.test>... Domain of sender address does not exist", "rejected",
     "alarm"),
    ("5.7.1", "smtp; 550 5.7.1 Authentication required", "securityerror", "alarm"),
    ("5.6.0", "smtp; 554 5.6.0 Message headers malformed", "contenterror", "alarm"),
    # transient: scored
    ("5.2.2", "smtp; 552 5.2.2 Mailbox full", "mailboxfull", "score"),
    ("4.2.2", "smtp; 452 4.2.2 user is over quota", "mailboxfull", "score"),
    ("5.2.1", "smtp; 550-5.2.1 The email account that you tried to reach is disabled", "suspend", "score"),
    ("4.4.7", "smtp; 421 4.4.7 Connection timed out", "expired", "score"),
    ("4.4.1", "smtp; Connection refused by mx.example.org", "networkerror", "score"),
    ("5.3.0", "smtp; 554 5.3.0 Internal system error", "systemerror", "score"),
    ("4.3.1", "smtp; 452 4.3.1 Insufficient system storage", "systemfull", "score"),
    ("5.0.0", "smtp; 550 5.0.0 Message filtered", "filtered", "score"),
    ("5.0.0", "smtp; 550 5.0.0 something nobody can classify", "undefined", "score"),
    # the message, not the address: recorded
    ("5.3.4", "smtp; 552 5.3.4 Message too big for system", "mesgtoobig", "record"),
    ("5.2.3", "smtp; 552 5.2.3 Message length exceeds administrative limit", "mesgtoobig", "record"),
    ("5.7.1", "smtp; 550 5.7.1 Virus detected: Eicar-Test-Signature", "virusdetected", "record"),
]


def _one(status: str, diagnostic: str) -> Any:
    raw = dsn([_group("ann@example.org", "failed", status, diagnostic)], original_id="<o1@mail.waypost.test>",
              report_id="<r1@mx.example.net>")
    events = read_report(raw).events
    assert len(events) == 1
    return events[0]


@pytest.mark.parametrize(("status", "diagnostic", "reason", "action"), CASES,
                         ids=[f"{c[2]}-{c[0]}" for c in CASES])
def test_dsn_reason_and_action(status: str, diagnostic: str, reason: str, action: str) -> None:
    event = _one(status, diagnostic)
    assert reasons.RENAMES.get(event.reason or "", event.reason) == reasons.RENAMES.get(reason, reason)
    assert explain_action(event) == action
    # the bounce type follows: only a dead address is Permanent
    assert (event.bounce_type == BounceType.PERMANENT) == (action == "suppress")


def test_every_family_is_covered_and_every_reason_is_documented() -> None:
    families = {reasons.family(reason) for _, _, reason, _ in CASES}
    assert families == {reasons.DEAD, reasons.SETUP, reasons.TRANSIENT, reasons.MESSAGE}
    assert {"userunknown", "hostunknown", "hasmoved", "notaccept"} == \
        {name for name, info in reasons.REASONS.items() if info.family == reasons.DEAD}
    assert all(info.advice for info in reasons.REASONS.values())


@pytest.mark.parametrize("status", ["5.7.26", "5.7.1", "4.7.28"])
def test_policy_blocks_never_suppress_whatever_the_text(status: str) -> None:
    """An x.7.x refusal that also says "user unknown" or "quota" blames our sending (RFC 3463 §3.8)."""
    for text in ("550 User unknown", "552 quota exceeded", "550 no such domain"):
        verdict = assess(status, "failed", f"smtp; {text[:3]} {status} {text[4:]}", None)
        assert reasons.family(verdict.reason or "") != reasons.DEAD, (status, text, verdict)


def test_unknown_user_needs_proof() -> None:
    """A bare "unknown user" after DATA is a filter; at RCPT, or with an x.1.x code, it is proof."""
    assert assess("5.0.0", "failed", "smtp; 550 User unknown (in reply to end of DATA command)", None).reason == \
        "filtered"
    assert assess(None, "failed", "smtp; 550 no such user", True).reason == "filtered"
    assert assess(None, "failed", "smtp; 550 no such user", True, context="refused at RCPT TO").reason == \
        "userunknown"
    assert assess("5.1.1", "failed", "smtp; 550 no such user", None).reason == "userunknown"


def test_delays_and_deliveries_carry_reasons() -> None:
    assert assess("4.4.7", "delayed", None, None) == assess("4.4.7", "delayed", "", None)
    assert assess("4.4.7", "delayed", None, None).kind == Kind.DELAY
    assert assess("4.4.7", "delayed", None, None).reason == "expired"
    assert assess("2.0.0", "delivered", None, None).reason == "delivered"


def test_reply_code_is_read_from_the_diagnostic() -> None:
    assert reasons.reply_code("smtp; 550-5.1.1 The email account") == "550"
    assert reasons.reply_code("host 192.0.2.1 said: 452 4.2.2 full") == "452"
    assert reasons.reply_code("no code 2024 here") is None
    assert _one("5.2.2", "smtp; 552 5.2.2 Mailbox full").reply_code == "552"


def _ses_bounce(bounce_type: str, subtype: str, diagnostic: str | None) -> str:
    recipient: dict[str, Any] = {"emailAddress": "ann@example.org", "action": "failed", "status": "5.0.0"}
    if diagnostic:
        recipient["diagnosticCode"] = diagnostic
    return json.dumps({"notificationType": "Bounce",
                       "bounce": {"bounceType": bounce_type, "bounceSubType": subtype, "feedbackId": "f-1",
                                  "bouncedRecipients": [recipient], "timestamp": "2026-03-03T10:00:00.000Z"},
                       "mail": {"messageId": "m-1", "destination": ["ann@example.org"]}})


@pytest.mark.parametrize(("bounce_type", "subtype", "diagnostic", "reason", "action"), [
    ("Permanent", "NoEmail", None, "userunknown", "suppress"),
    ("Permanent", "General", "smtp; 550 5.1.1 user unknown", "userunknown", "suppress"),
    ("Permanent", "General", None, "undefined", "suppress"),  # SES judged it and says no more
    ("Permanent", "General", "smtp; 550-5.7.26 Unauthenticated email is not accepted due to domain's DMARC policy",
     "authfailure", "alarm"),
    ("Permanent", "General", "smtp; 554 5.7.1 Client host rejected: blocked using bl.example.net", "blocked",
     "alarm"),
    ("Permanent", "General", "smtp; 552 5.2.2 Mailbox full", "mailboxfull", "score"),
    ("Transient", "MailboxFull", None, "mailboxfull", "score"),
    ("Transient", "General", None, "onhold", "score"),
    ("Transient", "MessageTooLarge", None, "mesgtoobig", "record"),
    ("Transient", "AttachmentRejected", None, "virusdetected", "record"),
    ("Undetermined", "Undetermined", None, "undefined", "record"),
])
def test_ses_bounces_get_the_same_reasons(bounce_type: str, subtype: str, diagnostic: str | None, reason: str,
                                          action: str) -> None:
    [event] = parse_ses_notification(_ses_bounce(bounce_type, subtype, diagnostic))
    assert event.reason == reason
    assert explain_action(event) == action


def test_verdict_names_are_the_policys() -> None:
    event = _one("5.7.26", "smtp; 550 5.7.26 unauthenticated email")
    assert bounce_verdict(event) == "setup"
