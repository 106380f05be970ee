"""`waypost feedback explain`: what a saved report says about each recipient, and what the
policy would do with it, without touching any database. Operators use it to answer "why was
this address suppressed?" from the DSN, ARF mail or SES notification that did it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from waypost.feedback.events import FeedbackEvent, FeedbackFormatError, Kind
from waypost.feedback.policy import explain_action
from waypost.feedback.reasons import DEAD, family
from waypost.feedback.reports import read_report
from waypost.feedback.ses_events import parse_ses_notification, unwrap_queue_body


def read_events(data: bytes) -> list[FeedbackEvent]:
    """The events in one saved file: SES JSON (bare or in an SNS envelope), report mail, or
    several report mails in an mbox, in order. Raises ``FeedbackFormatError`` (or
    ``UnicodeDecodeError``) for what cannot be read."""
    if data.lstrip()[:1] == b"{":
        return parse_ses_notification(unwrap_queue_body(data.decode("utf-8"))[0])
    return [event for message in mbox_messages(data) for event in read_report(message).events]


# an mbox separator (RFC 4155): a line starting "From " (the envelope sender and a date)
_MBOX_SEPARATOR = re.compile(rb"^From [^\r\n]*\r?\n", re.MULTILINE)


def mbox_messages(data: bytes) -> list[bytes]:
    """The messages of a saved file. Mail reaches Waypost one message at a time (SMTP DATA, an
    SES S3 object), so ``read_report`` reads one; but a file an operator saved from a mail
    spool is an mbox (RFC 4155), where each message follows a "From " line and a second
    message would otherwise be read as the first one's epilogue. A file that starts otherwise
    is one message; one "From " line is the envelope line of a single message. Body lines
    that start with "From " are escaped (">From ") in an mbox, so splitting there is safe."""
    if not data.startswith(b"From "):
        return [data]
    return [message for message in _MBOX_SEPARATOR.split(data) if message.strip()]


def explain(path: Path, data: bytes) -> Iterator[dict[str, Any]]:
    """One record per recipient: file, recipient, status, reply_code, reason, hard, action."""
    for event in read_events(data):
        action = explain_action(event)
        yield {"file": str(path), "recipient": event.recipient, "status": event.status,
               "reply_code": event.reply_code, "reason": event.reason,
               "hard": event.kind == Kind.BOUNCE and action == "suppress" and _dead(event), "action": action}


def _dead(event: FeedbackEvent) -> bool:
    """Suppressed at once because the address does not exist (or SES said so), not scored."""
    return event.reason is None or event.reason == "undefined" or family(event.reason) == DEAD


__all__ = ["FeedbackFormatError", "explain", "mbox_messages", "read_events"]
