"""Report mail generated in code: DSNs (RFC 3464), the non-standard bounces MTAs send instead
(qmail, Exim, Postfix, Yahoo-style, warnings, bare SMTP reply lines), feedback reports (ARF,
RFC 5965, and Apple Mail's unsubscribe) and auto-replies (RFC 3834).

The shared corpus holds real samples of these formats; it is not in the repository, so these
stand in for it on a fresh clone. Every value here is made up (example.* and .test names,
192.0.2.0/24 addresses); only the formats follow what the real senders write. Each ``Sample``
carries what ``read_report`` must make of it, so the tests need no ground truth from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from waypost.feedback.events import BounceType, Kind

P, T, U = BounceType.PERMANENT, BounceType.TRANSIENT, BounceType.UNDETERMINED
BOUNCE, DELAY, DELIVERY = Kind.BOUNCE, Kind.DELAY, Kind.DELIVERY

OUR_DOMAIN = "mail.waypost.test"
VERP = f"bounce+q7@{OUR_DOMAIN}"
DATE = "Tue, 3 Mar 2026 11:20:00 +0100"

Outcome = tuple[Kind, BounceType | None, str | None]


@dataclass(frozen=True)
class Sample:
    """One generated report mail and what reading it must give.

    ``family``: "dsn" (a delivery-status part), "bounce" (non-standard), "arf", "auto-reply".
    ``outcomes``: recipient (lower-cased) → (kind, bounce type, subtype), for bounces;
    ``statuses``: recipient → the status code the event must carry, where the mail gives one;
    ``detector``: for a non-standard bounce, True when flufl.bounce must find its addresses
    (False: only the bare "550 ... <address>" reply lines can);
    ``recipients``: for a complaint, the reported recipients in order (None: unknown)."""

    name: str
    family: str
    raw: bytes
    report_id: str
    original_id: str | None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    detector: bool | None = None
    feedback_type: str | None = None
    recipients: tuple[str | None, ...] = ()
    unsubscribe: bool = False
    sender: str | None = None  # an auto-reply's sender

    @property
    def kind(self) -> str:
        return {"bounce": "dsn"}.get(self.family, self.family)


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def original_message(message_id: str, to: str, *, fold_id: bool = False, headers_only: bool = False) -> str:
    """Our own outgoing mail as a report encloses it (with the body, or its header section only)."""
    id_line = f"Message-ID:\n {message_id}" if fold_id else f"Message-ID: {message_id}"
    head = (f"Return-Path: <{VERP}>\nReceived: from out1.{OUR_DOMAIN} ([192.0.2.5])\n"
            f"\tby mx.example.net with ESMTPS; {DATE}\n"
            f"From: Waypost <journeys@{OUR_DOMAIN}>\nTo: {to}\nSubject: Your journey is ready\n"
            f"Date: {DATE}\n{id_line}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n")
    return head if headers_only else head + "\nYour journey: https://waypost.test/j/abc123\n"


# --- DSNs: multipart/report; report-type=delivery-status ------------------------------------


def dsn(groups: list[dict[str, str]], *, original_id: str, report_id: str, to: str = "ann@example.org",
        enclosure: str = "message/rfc822", fold_id: bool = False, reporting_mta: str = "mx.example.net",
        from_: str = "Mail Delivery System <MAILER-DAEMON@mx.example.net>",
        subject: str = "Undelivered Mail Returned to Sender", human: str = "Your message could not be delivered.",
        run_together: bool = False) -> bytes:
    """A DSN with one field group per recipient (field name → value, in order). ``enclosure``:
    the content type of the returned original (message/rfc822, text/rfc822-headers, ...; "" for
    none). ``run_together``: all recipients in one block, as some MTAs write them."""
    blocks = ["\n".join(f"{name}: {value}" for name, value in group.items()) for group in groups]
    status = (f"Reporting-MTA: dns; {reporting_mta}\nX-Postfix-Queue-ID: 4QxY7Z1abc\n"
              f"Arrival-Date: {DATE}\n\n" + ("\n".join(blocks) + "\n" if run_together else "\n\n".join(blocks) + "\n"))
    parts = [f"Content-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n{human}\n",
             f"Content-Description: Delivery report\nContent-Type: message/delivery-status\n\n{status}"]
    if enclosure:
        inner = original_message(original_id, to, fold_id=fold_id, headers_only=enclosure != "message/rfc822")
        parts.append(f"Content-Description: Undelivered Message\nContent-Type: {enclosure}\n\n{inner}")
    body = "".join(f"--=_dsn_b7\n{part}\n" for part in parts) + "--=_dsn_b7--\n"
    return _crlf(f"From: {from_}\nTo: {VERP}\nSubject: {subject}\nDate: {DATE}\nMessage-ID: {report_id}\n"
                 "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
                 "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"=_dsn_b7\"\n\n"
                 f"This is a MIME-encapsulated message.\n\n{body}")


def _group(recipient: str, action: str, status: str, diagnostic: str | None = None, *,
           original: str | None = None, remote: str | None = "mx.example.net") -> dict[str, str]:
    group = {}
    if original:
        group["Original-Recipient"] = f"rfc822; {original}"
    group["Final-Recipient"] = f"rfc822; {recipient}"
    group["Action"] = action
    group["Status"] = status
    if remote:
        group["Remote-MTA"] = f"dns; {remote}"
    if diagnostic:
        group["Diagnostic-Code"] = diagnostic
    group["Last-Attempt-Date"] = DATE
    return group


def dsn_samples() -> list[Sample]:
    samples = []

    def add(name: str, groups: list[dict[str, str]], outcomes: dict[str, Outcome], statuses: dict[str, str],
            **options: object) -> None:
        report_id, original_id = f"<dsn-{name}@mx.example.net>", f"<out-{name}@{OUR_DOMAIN}>"
        raw = dsn(groups, original_id=original_id, report_id=report_id, **options)  # type: ignore[arg-type]
        returned = original_id if options.get("enclosure", "message/rfc822") else None
        samples.append(Sample(f"dsn/{name}", "dsn", raw, report_id, returned, outcomes, statuses))

    add("user-unknown", [_group("ann@example.org", "failed", "5.1.1",
                                "smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown")],
        {"ann@example.org": (BOUNCE, P, "NoEmail")}, {"ann@example.org": "5.1.1"})
    # one permanent, one mailbox full: each recipient classified on its own
    add("two-recipients", [
        _group("ben@example.org", "failed", "5.1.1", "smtp; 550 5.1.1 no such mailbox"),
        _group("cleo@example.net", "failed", "5.2.2", "smtp; 552 5.2.2 mailbox full"),
    ], {"ben@example.org": (BOUNCE, P, "NoEmail"), "cleo@example.net": (BOUNCE, T, "MailboxFull")},
        {"ben@example.org": "5.1.1", "cleo@example.net": "5.2.2"}, enclosure="text/rfc822-headers")
    # Original-Recipient is what we sent to; Final-Recipient the alias the receiver rewrote it to
    add("rewritten-alias", [_group("d.ortiz@mbox.internal.example.net", "failed", "5.1.1",
                                   "smtp; 550 5.1.1 unknown user", original="dan@example.net")],
        {"dan@example.net": (BOUNCE, P, "NoEmail")}, {"dan@example.net": "5.1.1"})
    add("delayed", [_group("eve@example.org", "delayed", "4.4.1",
                           "smtp; 451 4.4.1 no answer from host") | {"Will-Retry-Until": DATE}],
        {"eve@example.org": (DELAY, None, None)}, {"eve@example.org": "4.4.1"},
        subject="Delayed Mail (still being retried)")
    # a success notice (NOTIFY=SUCCESS): two recipients delivered, nothing bounced
    add("delivered", [_group("fay@example.org", "delivered", "2.1.5", "smtp; 250 2.1.5 OK"),
                      _group("gus@example.org", "relayed", "2.0.0", remote=None)],
        {"fay@example.org": (DELIVERY, None, None), "gus@example.org": (DELIVERY, None, None)},
        {"fay@example.org": "2.1.5", "gus@example.org": "2.0.0"}, subject="Successful Mail Delivery Report")
    # refused for something on our side (IP reputation): review, never suppress
    add("policy-block", [_group("hana@example.com", "failed", "5.7.1",
                                "smtp; 550 5.7.1 Service unavailable, client host [192.0.2.5] blocked")],
        {"hana@example.com": (BOUNCE, U, "Undetermined")}, {"hana@example.com": "5.7.1"})
    # the reason only in a comment after the Status code: a full mailbox, transient
    add("quota-comment", [_group("ivo@example.org", "failed", "5.0.0 (recipient reached disk quota)", remote=None)],
        {"ivo@example.org": (BOUNCE, T, "MailboxFull")}, {"ivo@example.org": "5.0.0"})
    # gave up after the queue lifetime: a 4.x.x code says nothing about the address
    add("expired", [_group("jo@example.net", "failed", "4.4.7",
                           "X-Postfix; delivery temporarily suspended: connect to mx.example.net timed out")],
        {"jo@example.net": (BOUNCE, T, "General")}, {"jo@example.net": "4.4.7"})
    # a non-specific 5.0.0 gives way to the specific code the diagnostic quotes
    add("specific-diagnostic", [_group("kai@example.org", "failed", "5.0.0",
                                       "smtp; 550-5.1.1 The email account that you tried to reach does not exist")],
        {"kai@example.org": (BOUNCE, P, "NoEmail")}, {"kai@example.org": "5.1.1"})
    add("has-moved", [_group("lea@example.org", "failed", "5.1.6", "smtp; 550 5.1.6 recipient no longer on server")],
        {"lea@example.org": (BOUNCE, P, "NoEmail")}, {"lea@example.org": "5.1.6"}, fold_id=True)
    add("disabled-mailbox", [_group("max@example.com", "failed", "5.2.1", "smtp; 550 5.2.1 mailbox disabled")],
        {"max@example.com": (BOUNCE, T, "General")}, {"max@example.com": "5.2.1"},  # suspended: scored
        enclosure="message/rfc822-headers")
    add("bad-domain", [_group("nia@no-such-host.example", "failed", "5.1.2", "x-postfix; Host not found", remote=None)],
        {"nia@no-such-host.example": (BOUNCE, P, "General")}, {"nia@no-such-host.example": "5.1.2"}, enclosure="")
    add("too-large", [_group("oli@example.org", "failed", "5.3.4", "smtp; 552 5.3.4 message size exceeds limit")],
        {"oli@example.org": (BOUNCE, T, "MessageTooLarge")}, {"oli@example.org": "5.3.4"})
    # several recipients in one block without blank lines between them
    add("run-together", [_group("pia@example.org", "failed", "5.1.1", remote=None),
                         _group("quin@example.org", "failed", "5.2.2", remote=None)],
        {"pia@example.org": (BOUNCE, P, "NoEmail"), "quin@example.org": (BOUNCE, T, "MailboxFull")},
        {"pia@example.org": "5.1.1", "quin@example.org": "5.2.2"}, run_together=True)
    # a sending service's notice: our authentication failed at the receiver
    add("auth-failure", [_group("ray@example.com", "failed", "5.7.26",
                                "smtp; 550 5.7.26 This mail has been blocked because the sender is unauthenticated")],
        {"ray@example.com": (BOUNCE, U, "Undetermined")}, {"ray@example.com": "5.7.26"},
        from_="MAILER-DAEMON@relay.example.com", subject="Delivery Status Notification (Failure)")
    return samples


# --- non-standard bounces --------------------------------------------------------------------


def _plain(from_: str, subject: str, body: str, report_id: str, *, extra: str = "",
           content_type: str = "text/plain; charset=us-ascii") -> bytes:
    return _crlf(f"From: {from_}\nTo: {VERP}\nSubject: {subject}\nDate: {DATE}\nMessage-ID: {report_id}\n{extra}"
                 f"MIME-Version: 1.0\nContent-Type: {content_type}\n\n{body}")


def bounce_samples() -> list[Sample]:
    samples = []

    def add(name: str, raw_of: object, outcomes: dict[str, Outcome], statuses: dict[str, str],
            detector: bool = True, original: bool = True) -> None:
        report_id, original_id = f"<nb-{name}@bounces.example.net>", f"<out-{name}@{OUR_DOMAIN}>"
        raw = raw_of(report_id, original_id)  # type: ignore[operator]
        samples.append(Sample(f"bounce/{name}", "bounce", raw, report_id, original_id if original else None,
                              outcomes, statuses, detector=detector))

    # qmail's QSBMF: an intro paragraph, one paragraph per recipient, a break line, the original
    add("qmail", lambda rid, oid: _plain(
        "MAILER-DAEMON@mail.example.net", "failure notice",
        "Hi. This is the qmail-send program at mail.example.net.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<sam@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        "--- Below this line is a copy of the message.\n\n" + original_message(oid, "sam@example.net"), rid),
        {"sam@example.net": (BOUNCE, P, "NoEmail")}, {"sam@example.net": "5.1.1"})
    # qmail gives up on a connection failure: permanent to flufl, transient by its code
    add("qmail-timeout", lambda rid, oid: _plain(
        "MAILER-DAEMON@mail.example.net", "failure notice",
        "Hi. This is the qmail-send program at mail.example.net.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<tia@example.org>:\n192.0.2.40 failed after I sent the message.\n"
        "I wasn't able to establish an SMTP connection. (#4.4.1)\n\n"
        "--- Below this line is a copy of the message.\n\n" + original_message(oid, "tia@example.org"), rid),
        {"tia@example.org": (BOUNCE, T, "General")}, {"tia@example.org": "4.4.1"})
    # Exim: the failed addresses in X-Failed-Recipients, the SMTP dialogue in the text
    add("exim", lambda rid, oid: _plain(
        "Mail Delivery System <Mailer-Daemon@smtp.example.com>", "Mail delivery failed: returning message to sender",
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  uma@example.com\n    host mx.example.com [192.0.2.60]\n"
        "    SMTP error from remote mail server after RCPT TO:<uma@example.com>:\n"
        "    550 5.1.1 <uma@example.com>: Recipient address rejected: User unknown in virtual mailbox table\n\n"
        "------ This is a copy of the message, including all the headers. ------\n\n"
        + original_message(oid, "uma@example.com"), rid,
        extra="X-Failed-Recipients: uma@example.com\nAuto-Submitted: auto-replied\n"),
        {"uma@example.com": (BOUNCE, P, "NoEmail")}, {"uma@example.com": "5.1.1"})
    # Postfix without a delivery-status part: a "notification" text part and the original
    add("postfix", lambda rid, oid: _plain(
        "MAILER-DAEMON@relay.example.org (Mail Delivery System)", "Undelivered Mail Returned to Sender",
        "--pfx9\nContent-Description: Notification\nContent-Type: text/plain\n\n"
        "This is the Postfix program at host relay.example.org.\n\n"
        "I'm sorry to have to inform you that the message returned\n"
        "below could not be delivered to one or more destinations.\n\n"
        "\t\t\tThe Postfix program\n\n"
        "<vic@example.org>: host mx.example.org[192.0.2.70] said: 550 5.1.1\n"
        "    <vic@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command)\n\n"
        "--pfx9\nContent-Description: Undelivered Message\nContent-Type: message/rfc822\n\n"
        + original_message(oid, "vic@example.org") + "\n--pfx9--\n", rid,
        content_type="multipart/mixed; boundary=pfx9"),
        {"vic@example.org": (BOUNCE, P, "NoEmail")}, {"vic@example.org": "5.1.1"})
    # Yahoo-style, two recipients; one says its mailbox is over quota
    add("yahoo-style", lambda rid, oid: _plain(
        "MAILER-DAEMON@yahoo.example", "Failure Notice",
        "Sorry, we were unable to deliver your message to the following address.\n\n"
        "<wes@example.net>:\nRemote host said: 550 5.1.1 <wes@example.net>... No such user [RCPT_TO]\n\n"
        "<xia@example.net>:\nRemote host said: 552 mailbox over quota [RCPT_TO]\n\n"
        "--- Below this line is a copy of the message.\n\n" + original_message(oid, "wes@example.net"), rid),
        {"wes@example.net": (BOUNCE, P, "NoEmail"), "xia@example.net": (BOUNCE, T, "MailboxFull")},
        {"wes@example.net": "5.1.1"})
    # a delay warning in plain text: a temporary failure, retried
    add("warning", lambda rid, oid: _plain(
        "Mail Delivery Subsystem <mailer-daemon@mx.example.com>", "Delivery Status Notification (Delay)",
        "This is an automatically generated Delivery Status Notification\n\n"
        "THIS IS A WARNING MESSAGE ONLY.\n\nYOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\n"
        "Delivery to the following recipient has been delayed:\n\n     yan@example.com\n\n"
        "Message will be retried for 2 more day(s)\n\n"
        "----- Original message -----\n\n" + original_message(oid, "yan@example.com"), rid),
        {"yan@example.com": (DELAY, None, None)}, {})
    # a permanent failure in plain text without any code: the wording decides (our sender refused)
    add("simple-permanent", lambda rid, oid: _plain(
        "Mail Delivery Subsystem <mailer-daemon@mx.example.com>", "Delivery Status Notification (Failure)",
        "This is an automatically generated Delivery Status Notification\n\n"
        "Delivery to the following recipient failed permanently:\n\n     zoe@example.com\n\n"
        "Technical details of permanent failure:\nThe recipient does not accept mail from this sender.\n\n"
        "----- Original message -----\n\n" + original_message(oid, "zoe@example.com"), rid),
        {"zoe@example.com": (BOUNCE, U, "Undetermined")}, {})  # our sender refused: never suppressed
    # no detector knows this one: the "550 ... <address>" reply lines are the last resort
    add("reply-lines", lambda rid, oid: _plain(
        "Mail Delivery Subsystem <MAILER-DAEMON@gw.example.org>", "Returned mail: see transcript for details",
        "The original message was received at Tue, 3 Mar 2026 11:20:00 +0100\nfrom out1.mail.waypost.test\n\n"
        "   ----- The following addresses had permanent fatal errors -----\n\n"
        "   ----- Transcript -----\n"
        "... while talking to mx.example.org.:\n>>> DATA\n"
        "<<< 550 5.1.1 <abe@example.org>... User unknown\n"
        "<<< 552 5.2.2 <bea@example.org>... Mailbox full\n\n"
        + original_message(oid, "abe@example.org", headers_only=True), rid),
        {"abe@example.org": (BOUNCE, P, "NoEmail"), "bea@example.org": (BOUNCE, T, "MailboxFull")},
        {"abe@example.org": "5.1.1", "bea@example.org": "5.2.2"}, detector=False)
    return samples


# --- feedback reports (ARF) ------------------------------------------------------------------


def arf(fields: list[tuple[str, str]], *, report_id: str, original_id: str | None, to: str = "carl@example.org",
        enclosure: str = "message/rfc822", from_: str = "Feedback Loop <fbl@isp.example>", bom: bool = False) -> bytes:
    """A feedback report: human part, message/feedback-report fields (in order, names may
    repeat), and the original (whole, or its headers) unless ``original_id`` is None."""
    report = "".join(f"{name}: {value}\n" for name, value in fields)
    parts = ["Content-Type: text/plain; charset=us-ascii\n\nThis is an abuse report for a message "
             "received from IP 192.0.2.5 on " + DATE + ".\n",
             f"Content-Type: message/feedback-report\n\n{report}"]
    if original_id is not None:
        inner = original_message(original_id, to, headers_only=enclosure != "message/rfc822")
        parts.append(f"Content-Type: {enclosure}\nContent-Disposition: inline\n\n{inner}")
    body = "".join(f"--arf_5c\n{part}\n" for part in parts) + "--arf_5c--\n"
    data = _crlf(f"From: {from_}\nTo: fbl@{OUR_DOMAIN}\nSubject: FW: Your journey is ready\nDate: {DATE}\n"
                 f"Message-ID: {report_id}\nMIME-Version: 1.0\n"
                 "Content-Type: multipart/report; report-type=feedback-report;\n\tboundary=\"arf_5c\"\n\n" + body)
    return b"\xef\xbb\xbf" + data if bom else data


def arf_samples() -> list[Sample]:
    samples = []
    base = [("Feedback-Type", "abuse"), ("User-Agent", "ExampleFBL/2.1"), ("Version", "1"),
            ("Original-Mail-From", f"<{VERP}>")]

    def add(name: str, fields: list[tuple[str, str]], feedback_type: str, recipients: tuple[str | None, ...],
            *, with_original: bool = True, **options: object) -> None:
        report_id = f"<fbl-{name}@isp.example>"
        original_id = f"<out-{name}@{OUR_DOMAIN}>" if with_original else None
        raw = arf(fields, report_id=report_id, original_id=original_id, **options)  # type: ignore[arg-type]
        samples.append(Sample(f"arf/{name}", "arf", raw, report_id, original_id, feedback_type=feedback_type,
                              recipients=recipients))

    add("abuse", [*base, ("Original-Rcpt-To", "<carl@example.org>"), ("Arrival-Date", DATE),
                  ("Source-IP", "192.0.2.5"), ("Reported-Domain", OUR_DOMAIN)], "abuse", ("carl@example.org",))
    # RFC 5965 §3.2: Original-Rcpt-To repeats, one per recipient who complained
    add("two-recipients", [*base, ("Original-Rcpt-To", "dora@example.org"), ("Original-Rcpt-To", "emil@example.net"),
                           ("Arrival-Date", DATE)], "abuse", ("dora@example.org", "emil@example.net"))
    # a DMARC failure report in ARF form, with only the original's header section
    add("auth-failure", [("Feedback-Type", "auth-failure"), ("User-Agent", "ExampleDMARC/1.0"), ("Version", "1"),
                         ("Original-Rcpt-To", "finn@example.com"), ("Auth-Failure", "dmarc"),
                         ("Authentication-Results", "mx.example.com; dmarc=fail header.from=waypost.test")],
        "auth-failure", ("finn@example.com",), enclosure="text/rfc822-headers", to="finn@example.com")
    # no Original-Rcpt-To: the original's single To names the complainer; Received-Date, the
    # drafts' name for Arrival-Date; a UTF-8 BOM before the header, as some tools save it
    add("recipient-from-original", [("Feedback-Type", "fraud"), ("User-Agent", "ExampleFBL/2.1"), ("Version", "1"),
                                    ("Received-Date", DATE)], "fraud", ("gwen@example.net",),
        to="Gwen <gwen@example.net>", bom=True)
    # redacted and no original: the complainer is unknown, still one complaint
    add("redacted", [*base[:3], ("Original-Rcpt-To", "redacted@"), ("Arrival-Date", DATE)], "abuse", (None,),
        with_original=False)

    # Apple Mail's one-click unsubscribe: a plain mail to the List-Unsubscribe address
    report_id = "<unsub-7F3A@icloud.example>"
    raw = _crlf(f"From: hugo@icloud.example\nTo: unsubscribe+k2@{OUR_DOMAIN}\nSubject: unsubscribe\nDate: {DATE}\n"
                f"Message-ID: {report_id}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                "Auto-Submitted: auto-replied\nX-Apple-Unsubscribe: true\n\n"
                "Apple Mail sent this email to unsubscribe from the message \"Your journey is ready\".\n")
    samples.append(Sample("arf/apple-unsubscribe", "arf", raw, report_id, None, feedback_type="opt-out",
                          recipients=("hugo@icloud.example",), unsubscribe=True))
    return samples


# --- auto-replies (RFC 3834) -----------------------------------------------------------------


def auto_reply_samples() -> list[Sample]:
    samples = []
    for name, sender, marker, subject in [
        ("vacation", "iris@example.net", "Auto-Submitted: auto-replied\n", "Away until 14 March"),
        ("out-of-office", "jan@example.com", "X-Auto-Response-Suppress: All\n",
         "Automatic reply: Your journey is ready"),
        ("autoresponder", "kim@example.org", "X-Autoresponder: yes\nPrecedence: bulk\n", "Re: Your journey is ready"),
    ]:
        report_id = f"<ar-{name}@{sender.split('@')[1]}>"
        raw = _crlf(f"From: {sender}\nTo: {VERP}\nSubject: {subject}\nDate: {DATE}\nMessage-ID: {report_id}\n"
                    f"In-Reply-To: <out-{name}@{OUR_DOMAIN}>\n{marker}Content-Type: text/plain\n\n"
                    "I am away with limited access to mail and will answer when I am back.\n")
        samples.append(Sample(f"auto-reply/{name}", "auto-reply", raw, report_id, None, sender=sender))
    return samples


def all_samples() -> list[Sample]:
    return [*dsn_samples(), *bounce_samples(), *arf_samples(), *auto_reply_samples()]


SAMPLES = all_samples()
