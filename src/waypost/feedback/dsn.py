"""Delivery status notifications (RFC 3464) and the non-standard bounces MTAs send instead.

Two readers, one result (``DsnReport``):

* our own reading of ``message/delivery-status`` parts (also ``message/global-delivery-status``,
  RFC 6533): per-message Reporting-MTA and Arrival-Date, per-recipient Original-Recipient /
  Final-Recipient, Action, Status, Diagnostic-Code, Remote-MTA, Last-Attempt-Date. It wins
  wherever it finds a recipient, because it carries the status and the diagnostic;
* ``flufl.bounce`` for bounces without such a part (qmail, Exim, Yahoo, Exchange, ...): it names
  the failed addresses and says permanent or temporary; the status and diagnostic are then
  looked for in the few lines of the notice that follow each address.

``classify`` turns what was read into (kind, bounce type, SES-style subtype); the first row
that applies wins:

==========================================  ===============  =====================  ===============
input                                       kind             bounce type            subtype
==========================================  ===============  =====================  ===============
Action delayed                              DELAY            None                   None
Action delivered/relayed/expanded           DELIVERY         None                   None
status 2.x.x (no action)                    DELIVERY         None                   None
status 5.7.x (policy, security, auth)       BOUNCE           Undetermined           Undetermined
status 5.1.7, 5.1.8 (our sender address)    BOUNCE           Undetermined           Undetermined
diagnostic says mailbox full / over quota   BOUNCE           Transient              MailboxFull
status 4.2.2, 5.2.2                         BOUNCE           Transient              MailboxFull
status 4.2.3, 5.2.3, 4.3.4, 5.3.4           BOUNCE           Transient              MessageTooLarge
status 5.1.2 (bad destination domain)       BOUNCE           Permanent              General
other 5.1.x (0, 1, 3, 6, 10, ...)           BOUNCE           Permanent              NoEmail
other 5.x.x                                 BOUNCE           Permanent              General
other 4.x.x                                 BOUNCE           Transient              General
no status: diagnostic's reply code 5xx/4xx  as 5.0.0 / 4.0.0 (an enhanced code in it first)
no code at all: permanent_hint True/False   BOUNCE           Permanent/Transient    General
nothing to go on                            BOUNCE           Undetermined           Undetermined
==========================================  ===============  =====================  ===============

A status of x.0.0 ("other or undefined") gives way to a more specific code of the same class
quoted in the Diagnostic-Code (``550 5.1.1 ...``). A 5.7.x bounce is a problem on the sending
side (blocked IP, failed authentication, spam verdict), not a dead address: it goes to review
and the address is not suppressed. RFC 3463 §3.3 notes mailbox full is usually transient even
under class 5; SES maps it to Transient/MailboxFull and so do we.

Auto-replies (RFC 3834) are told apart in ``reports``, which turns the heuristics off for them.
The helpers for reading mail (headers, part text, field blocks, addresses, dates, the enclosed
original) are in ``mailparts``, shared with ``arf`` and ``reports``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

from flufl.bounce import all_failures

from waypost.feedback.events import BounceType, Kind
from waypost.feedback.mailparts import (
    Original,
    addresses_in,
    clean_address,
    field_blocks,
    find_original,
    header,
    headers,
    human_text,
    iter_parts,
    parse_date,
    part_text,
)

log = logging.getLogger(__name__)

DELIVERED_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_ACTION_ALIASES = {"error": "failed", "deliverable": "delivered"}  # opensmtpd; Postfix address verification
_STATUS_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})  # RFC 3464, RFC 6533
_MESSAGE_FIELDS = frozenset({"reporting-mta", "dsn-gateway", "received-from-mta", "arrival-date",
                             "original-envelope-id"})  # RFC 3464 §2.2
_RECIPIENT_FIELDS = frozenset({"final-recipient", "original-recipient"})  # RFC 3464 §2.3

_ADDRESS_TOKEN = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
# RFC 3463 class.subject.detail; not part of a dotted quad or a version number
_ENHANCED = re.compile(r"(?<![\w.])([245]\.\d{1,3}\.\d{1,3})(?!\w|\.\d)")
_REPLY_THEN_ENHANCED = re.compile(r"(?<![\w.-])[245]\d\d[\s'\"#:-]*([245]\.\d{1,3}\.\d{1,3})(?!\w|\.\d)")
_REPLY = re.compile(r"(?<![\w.-])([45])\d\d(?![\w.])")  # RFC 5321 §4.2 reply code
_MAILBOX_FULL = re.compile(
    r"mail ?box (?:is )?full|quota (?:exceeded|full)|over ?quota|exceed\w* (?:\w+ ){0,3}quota|(?:disk|storage|mailbox) "
    r"quota|insufficient (?:disk|storage|space)|not enough (?:disk |storage )?space|out of (?:disk |storage )?space|"
    r"mailbox size limit|storage (?:limit|full)", re.IGNORECASE)


def action_word(action: str | None) -> str | None:
    """RFC 3464 §2.3.3 Action, lower-cased, comments dropped ("failed (bad mailbox)" → "failed")."""
    words = re.findall(r"[a-z-]+", (action or "").lower())
    return _ACTION_ALIASES.get(words[0], words[0]) if words else None


def effective_status(status: str | None, diagnostic: str | None) -> str | None:
    """The enhanced status code (RFC 3463) to act on: the Status field's code, unless it is a
    non-specific x.0.0 and the diagnostic quotes a more specific one of the same class; with
    no usable Status, the code quoted in the diagnostic (after a reply code preferred)."""
    code = _code(_ENHANCED.search(status)) if status else None
    quoted = None
    if diagnostic:
        quoted = _code(_REPLY_THEN_ENHANCED.search(diagnostic)) or _code(_ENHANCED.search(diagnostic))
    if code is None:
        return quoted
    if quoted and code.endswith(".0.0") and quoted[0] == code[0] and not quoted.endswith(".0.0"):
        return quoted
    return code


def _code(match: re.Match[str] | None) -> str | None:
    if match is None:
        return None
    digits = match.group(1).split(".")
    return ".".join(str(int(number)) for number in digits)


_BY_CODE: dict[str, tuple[BounceType, str]] = {
    "5.1.2": (BounceType.PERMANENT, "General"),  # bad destination system: the domain, not the mailbox
    "5.1.7": (BounceType.UNDETERMINED, "Undetermined"),  # bad *sender's* mailbox syntax: ours to fix
    "5.1.8": (BounceType.UNDETERMINED, "Undetermined"),  # bad *sender's* system address
    "4.2.2": (BounceType.TRANSIENT, "MailboxFull"),
    "5.2.2": (BounceType.TRANSIENT, "MailboxFull"),  # RFC 3463 §3.3: usually transient
    "4.2.3": (BounceType.TRANSIENT, "MessageTooLarge"),
    "5.2.3": (BounceType.TRANSIENT, "MessageTooLarge"),
    "4.3.4": (BounceType.TRANSIENT, "MessageTooLarge"),
    "5.3.4": (BounceType.TRANSIENT, "MessageTooLarge"),
}


def classify(status: str | None, action: str | None, diagnostic: str | None,
             permanent_hint: bool | None) -> tuple[Kind, BounceType | None, str | None]:
    """(kind, bounce type, SES-style subtype) for one recipient; see the module table.
    ``permanent_hint`` is flufl.bounce's verdict, used only when no code can be found."""
    verb = action_word(action)
    if verb == "delayed":
        return Kind.DELAY, None, None
    if verb in DELIVERED_ACTIONS:
        return Kind.DELIVERY, None, None
    code = effective_status(status, diagnostic)
    if code is None and diagnostic and (reply := _REPLY.search(diagnostic)):
        code = f"{reply.group(1)}.0.0"
    if code is None:
        if permanent_hint is None:
            return Kind.BOUNCE, BounceType.UNDETERMINED, "Undetermined"
        return Kind.BOUNCE, BounceType.PERMANENT if permanent_hint else BounceType.TRANSIENT, "General"
    klass, subject, _ = code.split(".")
    if klass == "2":
        return (Kind.DELIVERY, None, None) if verb is None else (Kind.BOUNCE, BounceType.UNDETERMINED, "Undetermined")
    if klass == "5" and subject == "7":  # RFC 3463 §3.8 security or policy status
        return Kind.BOUNCE, BounceType.UNDETERMINED, "Undetermined"
    if diagnostic and _MAILBOX_FULL.search(diagnostic):
        return Kind.BOUNCE, BounceType.TRANSIENT, "MailboxFull"
    if code in _BY_CODE:
        return (Kind.BOUNCE, *_BY_CODE[code])
    if klass == "5":
        return Kind.BOUNCE, BounceType.PERMANENT, "NoEmail" if subject == "1" else "General"
    return Kind.BOUNCE, BounceType.TRANSIENT, "General"


# --- reading a DSN ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """One recipient's outcome, classified."""

    address: str
    action: str | None
    status: str | None
    diagnostic: str | None
    remote_mta: str | None
    last_attempt: datetime | None
    kind: Kind
    bounce_type: BounceType | None
    subtype: str | None


@dataclass(frozen=True)
class DsnReport:
    """What a bounce said. ``standard``: read from a delivery-status part (else heuristics)."""

    reporting_mta: str | None
    arrival_date: datetime | None
    recipients: tuple[Recipient, ...]
    original: Original | None
    standard: bool
    raw: str


def read_dsn(message: Message, *, heuristics: bool = True) -> DsnReport | None:
    """Read a bounce; None when it is none. A delivery-status part with recipients is read as
    RFC 3464 says; otherwise, when ``heuristics`` is on (the caller turns it off for
    auto-replies and huge mail), flufl.bounce looks for failed addresses. Recipients are
    de-duplicated, first one wins."""
    status_parts = [part for part in iter_parts(message) if part.get_content_type() in _STATUS_PARTS]
    text = human_text(message)
    if status_parts:
        raw = "\n".join(part_text(part) for part in status_parts)
        fields, recipients = _read_status_fields(raw)
        if recipients:
            # the fallback search includes the status text: a broken boundary can put the
            # original's headers there
            return DsnReport(fields.get("reporting-mta"), parse_date(fields.get("arrival-date")),
                             recipients, find_original(message, f"{text}\n{raw}"), True, raw)
    if not heuristics:
        return None
    original = find_original(message, text)
    recipients = _read_notice(message, text, original)
    if not recipients:
        return None
    return DsnReport(None, None, recipients, original, False, text[:4096])


def _read_status_fields(text: str) -> tuple[dict[str, str], tuple[Recipient, ...]]:
    """Per-message fields and recipients of delivery-status text. A block with a repeated
    recipient field holds several recipients run together (seen in the wild): split there."""
    message_fields: dict[str, str] = {}
    recipients: dict[str, Recipient] = {}
    for block in field_blocks(text):
        group: dict[str, str] = {}
        for name, value in block:
            if name in _MESSAGE_FIELDS:
                message_fields.setdefault(name, value)
                continue
            if name in group and _RECIPIENT_FIELDS & group.keys():
                _add(recipients, group)
                group = {}
            group.setdefault(name, value)
        _add(recipients, group)
    return message_fields, tuple(recipients.values())


def _add(recipients: dict[str, Recipient], fields: dict[str, str]) -> None:
    # RFC 3464 §2.3.1: Original-Recipient is the address we gave in RCPT TO; Final-Recipient
    # (§2.3.2) may be an alias the receiving side rewrote it to
    address = clean_address(fields.get("original-recipient")) or clean_address(fields.get("final-recipient"))
    if address is None or address.lower() in recipients:
        return
    status, action = fields.get("status"), fields.get("action")
    diagnostic = fields.get("diagnostic-code") or _comment(status)
    recipients[address.lower()] = Recipient(
        address, action_word(action), effective_status(status, diagnostic), diagnostic, fields.get("remote-mta"),
        parse_date(fields.get("last-attempt-date")), *classify(status, action, diagnostic, None))


def _comment(status: str | None) -> str | None:
    """The text some MTAs put after the code: "5.0.0 (recipient reached disk quota)"."""
    match = re.search(r"\((.+)\)", status or "")
    return match.group(1).strip() if match else None


def _read_notice(message: Message, text: str, original: Original | None) -> tuple[Recipient, ...]:
    """Failed addresses of a non-standard bounce (flufl.bounce), each with the status and
    diagnostic found in the lines after its first mention in the notice."""
    verdicts = _flufl(message)
    if not verdicts:  # last resort: "550 5.1.1 <ann@example.org>... User unknown" lines
        verdicts = {address: reply == "5" for address, reply in _reply_lines(text)}
    ours = _our_addresses(message, original)
    verdicts = {address: permanent for address, permanent in verdicts.items() if address.lower() not in ours}
    near = _diagnostics_near(text, {address.lower() for address in verdicts})
    recipients = []
    for address, permanent in sorted(verdicts.items(), key=lambda item: item[0].lower()):
        status, diagnostic = near.get(address.lower(), (None, None))
        action = "failed" if permanent else "delayed"  # inferred: flufl's temporary means a warning
        recipients.append(Recipient(address, action, status, diagnostic, None, None,
                                    *classify(status, action, diagnostic, permanent)))
    return tuple(recipients)


def _flufl(message: Message) -> dict[str, bool]:
    """flufl.bounce's failed addresses → permanent?; {} when its detectors fail on this mail."""
    if not header(message, "From"):  # every bounce names a sender; flufl's Yale detector needs one
        return {}
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector choking on odd mail must not lose the report
        log.debug("flufl.bounce failed on this message", exc_info=True)
        return {}
    verdicts: dict[str, bool] = {}
    for raw_address, is_permanent in [*((a, False) for a in temporary), *((a, True) for a in permanent)]:
        address = clean_address(raw_address.decode("ascii", "replace"))
        if address:
            verdicts[address] = verdicts.get(address, False) or is_permanent
    return verdicts


def _reply_lines(text: str) -> Iterator[tuple[str, str]]:
    """(address, reply class) for each address on a line that carries an SMTP reply code,
    read up to the first quoted header line (the copy of the original starts there)."""
    for line in text.splitlines():
        if re.match(r"(Received|Return-Path|Message-Id|From|To|Date|Subject|DKIM-Signature):", line, re.IGNORECASE):
            return
        reply = _REPLY.search(line)
        if reply:
            for token in _ADDRESS_TOKEN.findall(line):
                if (address := clean_address(token)) is not None:
                    yield address, reply.group(1)


def _our_addresses(message: Message, original: Original | None) -> set[str]:
    """Our side of the exchange, which heuristics must not report as failed: whoever the
    bounce went to and came from, the original's sender, and its Message-ID (which looks
    like an address)."""
    names = ("To", "Cc", "Return-Path", "From", "Message-ID")
    ours = {address.lower() for name in names for value in headers(message, name) for address in addresses_in(value)}
    if original:
        ours.update(address.lower() for address in addresses_in(original.message_id))
        if original.return_path:
            ours.add(original.return_path.lower())
    return ours


def _diagnostics_near(text: str, wanted: set[str]) -> dict[str, tuple[str | None, str]]:
    """address → (status, diagnostic line) from the first line of ``text`` with a 4xx/5xx
    reply code or enhanced code, among the 8 lines from the address's first mention, stopping
    at a line that names another wanted address (the next recipient's paragraph)."""
    lines = text.splitlines()
    mentions = [{token.lower() for token in _ADDRESS_TOKEN.findall(line)} & wanted for line in lines]
    first: dict[str, int] = {}
    for index, found in enumerate(mentions):
        for address in found:
            first.setdefault(address, index)
    near: dict[str, tuple[str | None, str]] = {}
    for address, start in first.items():
        for index in range(start, min(start + 8, len(lines))):
            if index > start and mentions[index] and address not in mentions[index]:
                break
            line = lines[index]
            if _REPLY.search(line) or _ENHANCED.search(line):
                near[address] = (effective_status(None, line), line.strip())
                break
    return near

