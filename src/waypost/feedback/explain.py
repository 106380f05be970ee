"""`waypost feedback explain`: what a saved report says about each recipient, and what the
policy would do with it, without touching any database. Operators use it to answer "why was
this address suppressed?" from the DSN, ARF mail or SES notification that did it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from waypost.feedback.events import FeedbackEvent, FeedbackFormatError, Kind
from waypost.feedback.policy import explain_action
from waypost.feedback.reasons import DEAD, family
from waypost.feedback.reports import read_report
from waypost.feedback.ses_events import parse_ses_notification, unwrap_queue_body


def read_events(data: bytes) -> list[FeedbackEvent]:
    """The events in one saved file: SES JSON (bare or in an SNS envelope) or report mail.
    Raises ``FeedbackFormatError`` (or ``UnicodeDecodeError``) for what cannot be read."""
    if data.lstrip()[:1] == b"{":
        return parse_ses_notification(unwrap_queue_body(data.decode("utf-8"))[0])
    return list(read_report(data).events)


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


__all__ = ["FeedbackFormatError", "explain", "read_events"]
