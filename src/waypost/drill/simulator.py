"""The mailbox provider of the local drill: what happens to a message the loopback MX accepted.

- ``success``: nothing (delivered);
- ``bounce``: a DSN (RFC 3464, ``multipart/report; report-type=delivery-status``) with status
  5.1.1 to the envelope sender, our VERP address, from the null sender (RFC 3464 §2);
- ``complaint``: an ARF report (RFC 5965, ``report-type=feedback-report``, Feedback-Type abuse)
  enclosing the message, to the complaints mailbox, as a feedback loop sends it;
- ``ooto``: an out-of-office answer (RFC 3834: ``Auto-Submitted: auto-replied``, null return
  path, §3.3) to the envelope sender.

The replies are handed to Waypost's own inbox as any ingress would: they go through the
router, the feedback mail apps and the feedback policy like real reports.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import format_datetime, make_msgid

from waypost.clock import utcnow
from waypost.drill.scenarios import scenario_of
from waypost.ingress.drill_mx import Accepted
from waypost.pipeline.inbox import ReceivedMail

MX_NAME = "mx.drill.waypost.invalid"
_BOUNDARY = "drill-report-boundary"


def replies(accepted: Accepted, complaints_to: str) -> list[ReceivedMail]:
    """The mail the simulated provider sends back for one accepted message."""
    build = _REPLIES.get(scenario_of(accepted.recipient))
    if build is None:
        return []
    to, raw = build(accepted, complaints_to)
    return [ReceivedMail(raw, "", (to,), peer_ip="127.0.0.1", helo=MX_NAME, ingress="drill")]


def _headers(accepted: Accepted) -> str:
    end = accepted.raw.find(b"\r\n\r\n")
    head = accepted.raw[: end if end >= 0 else len(accepted.raw)]
    return head.decode("utf-8", "replace")


def _header(accepted: Accepted, name: str) -> str:
    for line in _headers(accepted).split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def _envelope(subject: str, sender: str, to: str, content_type: str, extra: str = "") -> str:
    return (f"From: {sender}\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {format_datetime(utcnow())}\r\n"
            f"Message-ID: {make_msgid(domain=MX_NAME)}\r\nMIME-Version: 1.0\r\n{extra}"
            f"Content-Type: {content_type}\r\n\r\n")


def _dsn(accepted: Accepted, complaints_to: str) -> tuple[str, bytes]:
    rcpt = accepted.recipient
    head = _envelope("Undelivered Mail Returned to Sender", f"Mail Delivery System <MAILER-DAEMON@{MX_NAME}>",
                     accepted.mail_from,
                     f'multipart/report; report-type=delivery-status; boundary="{_BOUNDARY}"',
                     "Auto-Submitted: auto-replied\r\n")
    body = (f"--{_BOUNDARY}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"This is the waypost drill's simulated mail server. Your message to <{rcpt}> could not be\r\n"
            "delivered: the mailbox does not exist.\r\n\r\n"
            f"--{_BOUNDARY}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; {MX_NAME}\r\nArrival-Date: {format_datetime(utcnow())}\r\n\r\n"
            f"Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822; {rcpt}\r\nAction: failed\r\n"
            f"Status: 5.1.1\r\nRemote-MTA: dns; {MX_NAME}\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown\r\n\r\n"
            f"--{_BOUNDARY}\r\nContent-Type: text/rfc822-headers\r\n\r\n{_headers(accepted)}\r\n\r\n"
            f"--{_BOUNDARY}--\r\n")
    return accepted.mail_from, (head + body).encode()


def _arf(accepted: Accepted, complaints_to: str) -> tuple[str, bytes]:
    rcpt = accepted.recipient
    head = _envelope("Abuse report (waypost drill)", f"Feedback Loop <fbl@{MX_NAME}>", complaints_to,
                     f'multipart/report; report-type=feedback-report; boundary="{_BOUNDARY}"')
    body = (f"--{_BOUNDARY}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "This is an email abuse report for a message the drill's simulated user marked as spam.\r\n\r\n"
            f"--{_BOUNDARY}\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: abuse\r\nUser-Agent: waypost-drill/1.0\r\nVersion: 1\r\n"
            f"Original-Mail-From: <{accepted.mail_from}>\r\nOriginal-Rcpt-To: <{rcpt}>\r\n"
            f"Arrival-Date: {format_datetime(utcnow())}\r\nReporting-MTA: dns; {MX_NAME}\r\n\r\n"
            f"--{_BOUNDARY}\r\nContent-Type: message/rfc822\r\n\r\n")
    return complaints_to, head.encode() + body.encode() + accepted.raw.rstrip(b"\r\n") + \
        f"\r\n\r\n--{_BOUNDARY}--\r\n".encode()


def _ooto(accepted: Accepted, complaints_to: str) -> tuple[str, bytes]:
    original = _header(accepted, "Message-ID")
    threading = f"In-Reply-To: {original}\r\nReferences: {original}\r\n" if original else ""
    head = _envelope(f"Out of office: {_header(accepted, 'Subject')}", f"<{accepted.recipient}>",
                     accepted.mail_from, "text/plain; charset=us-ascii",
                     f"Auto-Submitted: auto-replied\r\n{threading}")
    body = "I am out of the office until the drill ends. (An automatic answer from the waypost drill.)\r\n"
    return accepted.mail_from, (head + body).encode()


_REPLIES: dict[str, Callable[[Accepted, str], tuple[str, bytes]]] = {
    "bounce": _dsn, "complaint": _arf, "ooto": _ooto,
}
