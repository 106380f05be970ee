"""A reason for every failed recipient (``feedback.reasons``), on generated report mail and SES
notifications, so a clone without the shared corpus still exercises every reason family: the
dead addresses (suppressed), our own sending (never suppressed, counted for the setup alarm),
transient failures (scored) and refused messages (recorded). The corpus measurement is in
test_bounce_corpus.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.report_samples import DATE, VERP, _crlf, _group, dsn, original_message
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
    # MTA and provider wording read since the bounces corpus (issue 16)
    ("5.0.0", "smtp; 501 <bounces@mail.waypost.test>... no access from mail server [192.0.2.5] which is an open "
              "relay", "blocked", "alarm"),
    ("5.0.0", "smtp; 554 INVALID IP FOR SENDING MAIL OF DOMAIN example.net", "blocked", "alarm"),
    ("5.0.0", "smtp; 550 Insecure Mail Relay", "norelaying", "alarm"),
    ("5.0.0", "smtp; 550-Please turn on SMTP Authentication in your mail client", "securityerror", "alarm"),
    ("5.7.0", "smtp; 554 5.7.0 Header error", "policyviolation", "alarm"),
    ("5.7.0", "smtp; 552-5.7.0 This message was blocked because its content presents a potential security issue",
     "policyviolation", "alarm"),
    ("5.0.0", "You are not a member of this mailing list <list@example.org>", "rejected", "alarm"),
    ("5.0.0", "ann@example.org <bob@example.org>: malformed address", "syntaxerror", "alarm"),
    ("5.0.0", "smtp; 550 Unrouteable address", "hostunknown", "suppress"),
    ("5.0.0", "ann@example.org: Network error on destination MXs", "networkerror", "score"),
    ("5.0.0", "Could not deliver for the last 432000 seconds. Giving up.", "expired", "score"),
    ("5.0.0", "pipe to |/usr/local/bin/autoreply ann@example.org", "mailererror", "score"),
    ("5.0.0", "Loop Alert: Duplicated Message-ID", "systemerror", "score"),
    ("4.0.0", "smtp; 451 4.3.0 Error: queue file write error", "systemerror", "score"),
    ("5.0.0", "Each of the following recipients was rejected by a remote mail server.", "filtered", "score"),
    # x.5.0 names no cause (RFC 3463 §3.6): the words decide
    ("5.5.0", "smtp; 554 <ann@example.org>... Service unavailable", "systemerror", "score"),
    ("5.5.0", "mail.local: unknown user: ann", "userunknown", "suppress"),
    ("5.0.0", "Invalid final delivery userid: ann@example.org", "userunknown", "suppress"),
    # Outlook.com's missing account: RFC 5321's generic words, with its own trace after them
    ("5.5.0", "smtp;550 Requested action not taken: mailbox unavailable (-1828233154:2356:-2147467259)",
     "userunknown", "suppress"),
    ("5.5.0", "smtp;550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).", "userunknown",
     "suppress"),
    ("5.5.0", "smtp;550 Requested action not taken: mailbox unavailable", "filtered", "score"),  # bare: no proof
    # Cox names its IP blocklist in a code, whatever the words around it
    ("5.1.0", "smtp; 550 5.1.0 <bounces@mail.waypost.test> sender rejected. AUP#CXBL", "blocked", "alarm"),
    ("5.0.0", "Connected to 192.0.2.25 but sender was rejected. Remote host said: 553 sorry", "rejected", "alarm"),
    ("5.2.0", "550 5.2.0 <bounces@mail.waypost.test> From: Domain is invalid. Please provide a valid From:",
     "rejected", "alarm"),
    # an x.7.x Status the reporting MTA chose, beside a remote's words that carry no code of their own
    ("5.7.1", "SMTP; 553 Invalid recipient ann@example.org (Mode: normal)", "userunknown", "suppress"),
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


def test_unknown_user_at_rcpt_by_the_servers_own_account() -> None:
    """Oracle Messaging Server says the remote server "has rejected address": a RCPT refusal."""
    said = "smtp;550 <ann@example.org>: User unknown"
    assert assess("5.0.0", "failed", said, None).reason == "filtered"
    assert assess("5.0.0", "failed", said, None, context="Reason: Remote SMTP server has rejected address"
                  ).reason == "userunknown"


def _notice(body: str, *, from_: str = "MAILER-DAEMON <MAILER-DAEMON@mx.example.net>",
            subject: str = "Mail delivery failed", extra: str = "", to: str = VERP) -> bytes:
    """A bounce with no delivery-status part: the MTA's own words, then the original's header."""
    original = original_message("<o1@mail.waypost.test>", "ann@example.org")
    return _crlf(f"From: {from_}\nTo: {to}\nSubject: {subject}\nDate: {DATE}\nMessage-ID: <n1@mx.example.net>\n"
                 f"{extra}MIME-Version: 1.0\nContent-Type: text/plain\n\n{body}\n"
                 f"--- Below this line is a copy of the message.\n\n{original}")


@pytest.mark.parametrize(("body", "reason", "action"), [
    ("There was an error delivering your mail to <ann@example.org>.\n"
     "Could not deliver for the last 432000 seconds. Giving up.", "expired", "score"),
    ("Unknown user: ann@example.org", "userunknown", "suppress"),  # the host's own account lookup
    ("The following address(es) failed:\n  ann@example.org\n    Unrouteable address", "hostunknown", "suppress"),
    ("------- Failure Reasons --------\n(no words we can read)\nann@example.org", "onhold", "score"),
    ("Unable to deliver message to <ann@example.org> (and other recipients in the same domain).", "onhold",
     "score"),  # names no cause: never proof
])
def test_the_notices_own_words_name_the_reason(body: str, reason: str, action: str) -> None:
    events = read_report(_notice(body)).events
    [event] = [e for e in events if e.recipient == "ann@example.org"]
    assert event.reason == reason
    assert explain_action(event) == action


def test_a_notice_naming_only_the_domain_finds_the_quoted_recipient() -> None:
    body = "----- Transcript of session follows -----\n421 example.org (smtp)... Deferred: Connection timed out"
    [event] = read_report(_notice(body, subject="Returned mail: Cannot send message for 4 days")).events
    assert (event.recipient, event.reason, event.bounce_type) == ("ann@example.org", "expired", BounceType.TRANSIENT)


def test_a_failed_address_that_is_our_own_is_still_reported() -> None:
    """A message to oneself: the bounce goes back to the failed address itself."""
    body = ("Hi. This is the qmail-send program at mx.example.org.\nI'm afraid I wasn't able to deliver your message "
            "to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n"
            "<ann@example.org>:\n192.0.2.1 does not like recipient.\nRemote host said: 552 Error: disk quota exceeded")
    [event] = read_report(_notice(body, subject="failure notice", to="ann@example.org")).events
    assert (event.recipient, event.reason) == ("ann@example.org", "mailboxfull")


def test_a_bare_mailer_daemon_sender_is_a_bounce_not_an_auto_reply() -> None:
    body = ("The following recipients returned permanent errors: ann@example.org. Reason: refused (DATA): "
            "[554 5.4.6 Hop count exceeded - possible mail loop]")
    report = read_report(_notice(body, from_="mailer-daemon", subject="There was an error sending your mail",
                                 extra="Auto-Submitted: auto-replied\n"))
    assert report.kind == "dsn"
    assert [(e.recipient, e.reason) for e in report.events] == [("ann@example.org", "networkerror")]


def test_a_dsn_forwarded_inside_a_notice_is_read() -> None:
    """A gateway that passes the real DSN on as message/rfc822, with nothing readable around it."""
    inner = dsn([_group("ann@example.org", "failed", "5.1.1", "smtp; 550 5.1.1 User unknown")],
                original_id="<o1@mail.waypost.test>", report_id="<r1@mx.example.net>").decode()
    raw = _crlf(f"From: MAILER-DAEMON@gw.example.net\nTo: {VERP}\nSubject: Returned mail\nDate: {DATE}\n"
                "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"gw\"\n\n--gw\n"
                "Content-Type: text/plain\n\n----- The following addresses had permanent delivery errors -----\n"
                f"--gw\nContent-Type: message/rfc822\n\n{inner}\n--gw--\n")
    [event] = read_report(raw).events
    assert (event.recipient, event.status, event.reason) == ("ann@example.org", "5.1.1", "userunknown")
    assert event.bounce_type == BounceType.PERMANENT


def test_a_success_line_in_a_transcript_is_no_diagnostic() -> None:
    body = ("Transcript of session follows.\n In:  RCPT TO:<ann@example.org>\n Out: 250 2.1.5 Ok\n In:  DATA\n"
            " Out: 451 4.3.0 Error: queue file write error")
    events = read_report(_notice(body, subject="Postfix SMTP server: errors from localhost")).events
    assert [(e.recipient, e.status, e.reason) for e in events] == [("ann@example.org", "4.3.0", "systemerror")]


def test_a_refusal_naming_another_mailbox_is_no_proof() -> None:
    """The receiving side forwarded ann to bob, and bob is unknown: ann exists, nothing is proven."""
    event = _one("5.2.1", "smtp; 550 5.2.1 <bob@example.org>... User Unknown")
    assert (event.reason, event.bounce_type) == ("filtered", BounceType.TRANSIENT)
    assert _one("5.2.1", "smtp; 550 5.2.1 <ann@example.org>... User Unknown").bounce_type == BounceType.PERMANENT


def test_a_notice_gives_each_recipient_its_own_reason() -> None:
    """Per-recipient paragraphs: each address gets the words (and code) of its own paragraph, not
    the first reason the notice as a whole contains."""
    body = ("Message from example.org.\nUnable to deliver message to the following address(es).\n\n"
            "<ann@example.org>:\nThis user doesn't have a example.org account (ann@example.org) [0]\n\n"
            "<bob@example.org>:\nSorry your message to bob@example.org cannot be delivered. This account has been "
            "disabled or discontinued [#102].\n\n"
            "<cat@example.org>:\nSorry, this user's mailbox is full [#104].\n")
    events = read_report(_notice(body)).events
    assert [(e.recipient, e.reason, explain_action(e)) for e in events] == [
        ("ann@example.org", "userunknown", "suppress"), ("bob@example.org", "suspend", "score"),
        ("cat@example.org", "mailboxfull", "score")]


def test_each_recipient_keeps_its_own_code_and_continuation() -> None:
    body = ("Hi. This is the qmail-send program at mx.example.net.\nI'm afraid I wasn't able to deliver your "
            "message to the following addresses.\n\n"
            "<ann@example.org>:\nRemote host said: 552 5.2.2 <ann@example.org> mailbox\n    is over quota\n\n"
            "<bob@example.net>:\nConnected to 192.0.2.7 but sender was rejected.\n"
            "Remote host said: 550 5.7.1 <bounces@mail.waypost.test>... Access denied\n\n"
            "<cat@example.com>:\nRemote host said: 550 5.1.1 <cat@example.com>... User unknown\n")
    events = read_report(_notice(body, subject="failure notice")).events
    assert [(e.recipient, e.status, e.reason) for e in events] == [
        ("ann@example.org", "5.2.2", "mailboxfull"), ("bob@example.net", "5.7.1", "rejected"),
        ("cat@example.com", "5.1.1", "userunknown")]
    assert "is over quota" in (events[0].diagnostic or "")  # the indented continuation line
    assert [e.bounce_type for e in events] == [BounceType.TRANSIENT, BounceType.UNDETERMINED, BounceType.PERMANENT]


def test_a_listing_of_the_envelope_is_not_a_reason() -> None:
    """A notice that lists the envelope ("MAIL FROM: ...", "RCPT TO: ...") after its reason: the
    sender listed there is never reported, and the listing line is no diagnostic."""
    body = ("Error: Invalid user address\n\nError message below:\n550 - Requested action not taken: no such user "
            "here\n\nMessage details:\n  MAIL FROM: bounces@mail.waypost.test\n  RCPT TO: ann@example.org\n"
            "  From: someone@mail.waypost.test\n  Size (in bytes): 39\n")
    events = read_report(_notice(body, from_="post_master@example.org", subject="Re: hello")).events
    assert [(e.recipient, e.diagnostic, e.reason) for e in events] == [("ann@example.org", None, "userunknown")]


def test_a_nested_multipart_whose_boundary_is_lost_is_still_read() -> None:
    """A boundary parameter folded without indentation (RFC 5322 §2.2.3) is lost: the nested
    part stays one unsplit text, and the recipient is read from it."""
    raw = _crlf(f"From: MAILER-DAEMON@mx.example.net\nTo: {VERP}\nSubject: Undeliverable\nDate: {DATE}\n"
                "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"outer\"\n\n--outer\n"
                "Content-Type: multipart/alternative;\nboundary=\"inner\"\n\n--inner\nContent-Type: text/plain\n\n"
                "Delivery to ann@example.org failed:\n550 5.1.1 <ann@example.org>... User unknown\n\n--inner--\n"
                "\n--outer--\n")
    [event] = read_report(raw).events
    assert (event.recipient, event.status, event.reason) == ("ann@example.org", "5.1.1", "userunknown")


@pytest.mark.parametrize(("word", "written", "plain"), [
    ("spam", reasons._whole("spam"), r"\bspam\b"), ("ptr", reasons._whole("ptr"), r"\bptr\b"),
    ("header error", reasons._starting("header error"), r"\bheader error"),
])
def test_fast_word_boundaries_match_what_the_plain_ones_do(word: str, written: str, plain: str) -> None:
    """The phrase table writes ``\\bword`` so that the regex engine can skip ahead; it must find
    exactly what the plain form finds, in every position and beside every kind of character."""
    import random
    import re

    pieces = [word, word[:-1], word[1:], " ", "x", "_", "1", "é", "-", "\n", "("]
    rng = random.Random(16)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))) for _ in range(3000)]
    fast, slow = re.compile(written, re.MULTILINE), re.compile(plain, re.MULTILINE)
    assert [bool(fast.search(t)) for t in texts] == [bool(slow.search(t)) for t in texts]
    assert any(fast.search(t) for t in texts) and not all(fast.search(t) for t in texts)
