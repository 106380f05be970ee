"""Abuse Reporting Format complaints (RFC 5965), strict where they are standard and lenient
where they are not.

A standard report is ``multipart/report; report-type=feedback-report`` with a human part, a
``message/feedback-report`` part of ``Name: value`` fields (RFC 5965 §3) and the original
message or its headers. Two non-standard forms are also read:

* the feedback fields written into a text part instead of their own part (some older feedback
  loops): read from the first line that starts with ``Feedback-Type:``;
* Apple Mail's one-click unsubscribe (``X-Apple-Unsubscribe: true``, a plain mail to the
  List-Unsubscribe address): an ``opt-out`` report from the mail's sender, no abuse verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

from waypost.feedback.mailparts import (
    Original,
    addresses_in,
    clean_address,
    field_blocks,
    find_original,
    header,
    human_text,
    parse_date,
    part_text,
    typed_parts,
)
from waypost.feedback.phrases import Caseless

OPT_OUT = "opt-out"  # not an IANA feedback type (RFC 5965 §7.3); sisimai's name for an unsubscribe
_FEEDBACK_LINE = Caseless(r"^feedback-type[ \t]*:", re.MULTILINE)  # read in every report's text: kept cheap


@dataclass(frozen=True)
class ArfReport:
    """The fields of one feedback report (RFC 5965 §3.1-3.2) and the original it is about.

    ``recipients``: one entry per Original-Rcpt-To (None where redacted or unreadable); with
    none, the original's single To address; with no single To either, ``(None,)``: a report
    always concerns at least one, possibly unknown, recipient."""

    feedback_type: str | None  # lower-cased: abuse, fraud, other, virus, not-spam, auth-failure, opt-out
    user_agent: str | None
    version: str | None
    original_mail_from: str | None
    recipients: tuple[str | None, ...]
    arrival_date: datetime | None
    reporting_mta: str | None
    source_ip: str | None
    reported_domains: tuple[str, ...]
    original: Original | None
    unsubscribe: bool  # an opt-out request rather than a complaint
    raw: str


def read_arf(message: Message) -> ArfReport | None:
    """Read a feedback report; None when ``message`` is not one (no feedback-report part,
    no ``Feedback-Type:`` field in its text, no Apple unsubscribe header)."""
    raw = next((part_text(part) for part, content_type in typed_parts(message)
                if content_type == "message/feedback-report"), None)  # RFC 5965 §2 (b)
    if raw is None:
        text = human_text(message)
        start = _FEEDBACK_LINE.search(text)
        if start is None:
            return _apple_unsubscribe(message, text)
        raw = _first_block_text(text[start.start():])
    fields = _fields(raw)
    original = find_original(message)
    feedback_type = _first(fields, "feedback-type", lower=True)
    return ArfReport(
        feedback_type=feedback_type,
        user_agent=_first(fields, "user-agent"),
        version=_first(fields, "version"),
        original_mail_from=clean_address(_first(fields, "original-mail-from")),
        recipients=_recipients(fields.get("original-rcpt-to", []), original),
        # RFC 5965 §3.2: Arrival-Date; Received-Date is its name in drafts still in use
        arrival_date=parse_date(_first(fields, "arrival-date") or _first(fields, "received-date")),
        reporting_mta=_first(fields, "reporting-mta"),
        source_ip=_first(fields, "source-ip"),
        reported_domains=tuple(fields.get("reported-domain", [])),
        original=original,
        unsubscribe=feedback_type == OPT_OUT,
        raw=raw,
    )


def _first_block_text(text: str) -> str:
    """The field block that starts ``text``: up to the first blank line."""
    match = re.search(r"\n[ \t]*\r?\n", text)
    return text[:match.start() + 1] if match else text


def _fields(raw: str) -> dict[str, list[str]]:
    """Every field of every block, in order, by lower-cased name (some fields repeat)."""
    fields: dict[str, list[str]] = {}
    for block in field_blocks(raw):
        for name, value in block:
            if value:
                fields.setdefault(name, []).append(value)
    return fields


def _first(fields: dict[str, list[str]], name: str, *, lower: bool = False) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    return values[0].lower() if lower else values[0]


def _recipients(rcpt_to: list[str], original: Original | None) -> tuple[str | None, ...]:
    if rcpt_to:
        found: list[str | None] = []
        seen: set[str | None] = set()
        for value in rcpt_to:  # RFC 5965 §3.2: may repeat, one per recipient
            address = clean_address(value)
            if (key := address.lower() if address else None) not in seen:
                seen.add(key)
                found.append(address)
        return tuple(found)
    if original and len(original.to) == 1:
        return original.to
    return (None,)  # redacted, several, or no original: the complainer is unknown


def _apple_unsubscribe(message: Message, text: str) -> ArfReport | None:
    """Apple Mail's unsubscribe mail: the sender asks to be taken off the list."""
    if (header(message, "X-Apple-Unsubscribe") or "").lower() != "true":
        return None
    sender = addresses_in(header(message, "From"))
    return ArfReport(
        feedback_type=OPT_OUT, user_agent=header(message, "X-Mailer"), version=None, original_mail_from=None,
        recipients=(sender[0] if sender else None,), arrival_date=parse_date(header(message, "Date")),
        reporting_mta=None, source_ip=None, reported_domains=(), original=find_original(message),
        unsubscribe=True, raw=text[:4096],
    )
