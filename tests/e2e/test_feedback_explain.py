"""`waypost feedback explain FILE...`, run as a real process: one JSON object per recipient with
the reason and what the policy would do, for report mail and SES notifications, changing nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_serve import cli
from tests.support.report_samples import SAMPLES, _group, dsn

FIELDS = {"file", "recipient", "status", "reply_code", "reason", "hard", "action"}


def _ses_bounce(bounce_type: str, subtype: str, recipient: str, diagnostic: str) -> str:
    return json.dumps({
        "notificationType": "Bounce",
        "bounce": {"bounceType": bounce_type, "bounceSubType": subtype, "feedbackId": "fb-1",
                   "timestamp": "2026-03-03T10:00:00.000Z",
                   "bouncedRecipients": [{"emailAddress": recipient, "status": "5.0.0", "action": "failed",
                                          "diagnosticCode": diagnostic}]},
        "mail": {"messageId": "ses-1", "destination": [recipient]}})


def test_explain_prints_each_recipients_reason_and_action(tmp_path: Path) -> None:
    report = tmp_path / "bounce.eml"
    report.write_bytes(dsn([
        _group("gone@example.org", "failed", "5.1.1", "smtp; 550 5.1.1 <gone@example.org>: User unknown"),
        _group("friend@example.com", "failed", "5.7.26",
               "smtp; 550-5.7.26 Unauthenticated email from waypost.test is not accepted due to domain's DMARC policy"),
    ], original_id="<o1@mail.waypost.test>", report_id="<r1@mx.example.net>"))
    ses = tmp_path / "ses.json"
    ses.write_text(_ses_bounce("Permanent", "General", "full@example.net", "smtp; 552 5.2.2 Mailbox full"))
    vacation = tmp_path / "vacation.eml"
    vacation.write_bytes(next(s.raw for s in SAMPLES if s.family == "auto-reply"))
    data_dir = tmp_path / "data"

    done = cli(data_dir, "feedback", "explain", str(report), str(ses), str(vacation))

    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(set(record) == FIELDS for record in records)
    by_recipient = {record["recipient"].lower(): record for record in records}
    assert by_recipient["gone@example.org"] | {"file": ""} == {
        "file": "", "recipient": "gone@example.org", "status": "5.1.1", "reply_code": "550", "reason": "userunknown",
        "hard": True, "action": "suppress"}
    friend = by_recipient["friend@example.com"]
    assert (friend["reason"], friend["hard"], friend["action"], friend["status"]) == \
        ("authfailure", False, "alarm", "5.7.26")
    full = by_recipient["full@example.net"]
    assert (full["file"], full["reason"], full["hard"], full["action"], full["reply_code"]) == \
        (str(ses), "mailboxfull", False, "score", "552")
    [auto_reply] = [r for r in records if r["file"] == str(vacation)]
    assert (auto_reply["reason"], auto_reply["hard"], auto_reply["action"]) == ("vacation", False, "ignore")
    assert not data_dir.exists()  # it changes nothing, and needs no database


def test_explain_names_a_file_it_cannot_read_and_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    done = cli(tmp_path / "data", "feedback", "explain", str(broken))
    assert done.returncode == 1
    assert done.stdout == ""
    assert str(broken) in done.stderr
