"""Delivery status notifications (RFC 3464) and the non-standard bounces MTAs send instead.

Two readers, one result (``DsnReport``):

* our own reading of ``message/delivery-status`` parts (also ``message/global-delivery-status``,
  RFC 6533): per-message Reporting-MTA and Arrival-Date, per-recipient Original-Recipient /
  Final-Recipient, Action, Status, Diagnostic-Code, Remote-MTA, Last-Attempt-Date. It wins
  wherever it finds a recipient, because it carries the status and the diagnostic;
* ``flufl.bounce`` for bounces without such a part (qmail, Exim, Yahoo, Exchange, ...): it names
  the failed addresses and says permanent or temporary; the status and diagnostic are then
  looked for in the few lines of the notice that follow each address.

``assess`` turns what was read into a ``Verdict``: the kind, the reason (``reasons``: why the
recipient failed) and the SES-style bounce type and subtype that follow from the reason; the
first row that applies wins:

=============================================  ========  =============================================
input                                          kind      reason → bounce type / subtype
=============================================  ========  =============================================
Action delayed                                 DELAY     expired (or the setup reason it names)
Action delivered/relayed/expanded, or 2.x.x    DELIVERY  delivered
reason proves the address dead                 BOUNCE    Permanent / NoEmail (hostunknown: General)
... but under a 4.x.x code that is not x.1.x   BOUNCE    Transient / General (not final)
reason about our sending (x.7.x, 5.1.7/5.1.8)  BOUNCE    Undetermined / Undetermined: review, alarm
the message was refused                        BOUNCE    Transient / MessageTooLarge, ContentRejected
transient reason, or a 5.x.x without a cause   BOUNCE    Transient / General (MailboxFull)
nothing to go on                               BOUNCE    Undetermined / Undetermined
=============================================  ========  =============================================

A status of x.0.0 ("other or undefined") gives way to a more specific code of the same class
quoted in the Diagnostic-Code (``550 5.1.1 ...``); with no status, the diagnostic's reply code
stands in as 5.0.0 / 4.0.0. "Unknown user" proves a dead mailbox only with an x.1.x (or x.2.1)
code or when it answered RCPT TO (``_proves_no_mailbox``); in reply to DATA it is a filter.
flufl.bounce's permanent/temporary verdict only tells a failure from a delay: it is no proof.

Auto-replies (RFC 3834) are told apart in ``reports``, which turns the heuristics off for them.
The helpers for reading mail (headers, part text, field blocks, addresses, dates, the enclosed
original) are in ``mailparts``, shared with ``arf`` and ``reports``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

from waypost.feedback import reasons
from waypost.feedback.detectors import all_failures
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
    parse_date,
    part_text,
    typed_parts,
)
from waypost.feedback.phrases import Caseless, lowered_ascii

log = logging.getLogger(__name__)

DELIVERED_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "root", "noreply"})
# where the copy of the original begins: its first header field, or a separator line naming it
_ORIGINAL_STARTS = re.compile(
    r"(?:Received|Return-Path|Message-Id|DKIM-Signature):|"
    r"\s*-+ ?(?:original message|returned message|this is a copy|message headers|undelivered message)|"
    r"\s*(?:message headers follow|original message follows)", re.IGNORECASE)
_NOTICE_LIMIT = 4096  # a notice says why in its first lines; more only costs time
_QUOTED_HEADER = re.compile(r"(Received|Return-Path|Message-Id|From|To|Date|Subject|DKIM-Signature):", re.IGNORECASE)
_ACTION_ALIASES = {"error": "failed", "deliverable": "delivered"}  # opensmtpd; Postfix address verification
_STATUS_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})  # RFC 3464, RFC 6533
_MESSAGE_FIELDS = frozenset({"reporting-mta", "dsn-gateway", "received-from-mta", "arrival-date",
                             "original-envelope-id"})  # RFC 3464 §2.2
_RECIPIENT_FIELDS = frozenset({"final-recipient", "original-recipient"})  # RFC 3464 §2.3

_EMBEDDED_FIELDS = re.compile(r"^(?:Reporting-MTA|Final-Recipient|Original-Recipient):", re.IGNORECASE | re.MULTILINE)
_ADDRESS_TOKEN = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
# RFC 3463 class.subject.detail; not part of a dotted quad or a version number
_ENHANCED = re.compile(r"(?<![\w.])([245]\.\d{1,3}\.\d{1,3})(?!\w|\.\d)")
_REPLY_THEN_ENHANCED = re.compile(r"(?<![\w.-])[245]\d\d[\s'\"#:-]*([245]\.\d{1,3}\.\d{1,3})(?!\w|\.\d)")
_REPLY = re.compile(r"(?<![\w.-])([45])\d\d(?![\w.])")  # RFC 5321 §4.2 reply code
_CODE_START = re.compile(r"\s*(?:<<<|>>>|(?:in|out):|[2-5]\d\d\b)", re.IGNORECASE)  # a transcript line, a reply
_WORD = re.compile(r"[^\W\d_]{2,}")
_HELP_LINE = re.compile(r"\bcontact\b|for (?:further )?assistance", re.IGNORECASE)
_SENDER_LISTING = re.compile(r"\s*(?:mail from|from|sender|return-path|reply-to|envelope-from)\s*:", re.IGNORECASE)
_LISTING = re.compile(r"\s*[^\W\d][\w -]{0,24}:\s*<?[\w.+=-]+@")  # "RCPT TO: ann@...": a listing, not a reason


def _address_tokens(text: str) -> list[str]:
    """The address-like tokens of ``text``. Most lines of a notice hold none: without an "@"
    the pattern is not run, since it would try a match from every word character (quadratic
    on long lines such as base64)."""
    return _ADDRESS_TOKEN.findall(text) if "@" in text else []


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


# what a reason's family means for the bounce type and SES-style subtype (see ``reasons``)
_VERDICT: dict[str, tuple[BounceType, str]] = {
    reasons.DEAD: (BounceType.PERMANENT, "General"),
    reasons.SETUP: (BounceType.UNDETERMINED, "Undetermined"),
    reasons.TRANSIENT: (BounceType.TRANSIENT, "General"),
    reasons.MESSAGE: (BounceType.TRANSIENT, "MessageTooLarge"),
    reasons.INFO: (BounceType.UNDETERMINED, "Undetermined"),
}
_SUBTYPE = {"userunknown": "NoEmail", "hasmoved": "NoEmail", "notaccept": "NoEmail", "mailboxfull": "MailboxFull",
            "virusdetected": "ContentRejected"}
# the remote refused at DATA, after taking the address at RCPT: "unknown user" there is a filter
_RCPT_STAGE = Caseless(r"rcpt to|rcpt\b|recipient address rejected|>>> rcpt|(?<![\d.])[45]\.1\.1(?![\d.])|"
                       r"server has rejected address")  # Sun/Oracle Messaging Server: refused at RCPT
_DATA_STAGE = Caseless(r"(?:in reply to|after) (?:end of )?data\b|final data")


@dataclass(frozen=True)
class Verdict:
    """One recipient's outcome: what kind of feedback, the reason (``reasons`` vocabulary),
    and the SES-style bounce type and subtype derived from that reason."""

    kind: Kind
    reason: str | None
    bounce_type: BounceType | None
    subtype: str | None


def assess(status: str | None, action: str | None, diagnostic: str | None, permanent_hint: bool | None,
           *, context: str | None = None, recipient: Collection[str] = (), transcript: str | None = None) -> Verdict:
    """The verdict for one recipient; ``context``: the notice's text, read for phrases when the
    status and diagnostic say nothing; ``recipient``: the recipient's addresses (original and
    final), to tell a refusal about it from one about another mailbox; ``transcript``: the text
    read for the SMTP stage the refusal answered, when it is more than ``context``.
    ``permanent_hint`` (flufl.bounce) only separates "no evidence at all" (undetermined) from "a
    failure without a cause" (scored, never hard)."""
    verb = action_word(action)
    if verb == "delayed":  # not a failure yet: if it stays so, the retries expire
        said = reasons.classify(effective_status(status, diagnostic), diagnostic)
        return Verdict(Kind.DELAY, said if reasons.family(said) == reasons.SETUP else "expired", None, None)
    if verb in DELIVERED_ACTIONS:
        return Verdict(Kind.DELIVERY, "delivered", None, None)
    code = effective_status(status, diagnostic)
    if code is None and diagnostic and (reply := _REPLY.search(diagnostic)):
        code = f"{reply.group(1)}.0.0"
    if code is not None and code[0] == "2":
        return Verdict(Kind.DELIVERY, "delivered", None, None) if verb is None else \
            Verdict(Kind.BOUNCE, "undefined", BounceType.UNDETERMINED, "Undetermined")
    reason = reasons.classify(code, diagnostic, context=context)
    if reason == "userunknown" and not _proves_no_mailbox(code, diagnostic, transcript or context, recipient):
        reason = "filtered"
    if reason in ("undefined", "onhold") and code is None and permanent_hint is None:
        return Verdict(Kind.BOUNCE, reason, BounceType.UNDETERMINED, "Undetermined")
    if reasons.family(reason) == reasons.DEAD and code and code[0] == "4" and code.split(".")[1] != "1":
        # a temporary (4.x.x) answer about the domain is not final: a DNS failure, or a null MX
        # seen while retrying; only an x.1.x code names the address itself (RFC 3463 §3.2)
        reason = "networkerror" if reason == "hostunknown" else reason
        return Verdict(Kind.BOUNCE, reason, BounceType.TRANSIENT, "General")
    bounce_type, subtype = _VERDICT[reasons.family(reason)]
    return Verdict(Kind.BOUNCE, reason, bounce_type, _SUBTYPE.get(reason, subtype))


def _proves_no_mailbox(code: str | None, diagnostic: str | None, context: str | None,
                       recipient: Collection[str] = ()) -> bool:
    """An "unknown user" is proof only with an x.1.x code (RFC 3463 §3.2, addressing status;
    x.2.1 too, which MTAs commonly send for unknown users),
    or when the refusal answered RCPT TO (RFC 5321 §4.1.1.3), never when it answered DATA: a
    content filter that pretends the user is unknown after taking the address is "filtered".
    Nor when the refusal names another mailbox than the recipient's (the target of an alias or
    forward at the receiving side): that one is unknown, ours was found."""
    text = " ".join(f"{diagnostic or ''} {context or ''}".split())
    lowered = lowered_ascii(text)
    if _DATA_STAGE.found(text, lowered):
        return False
    named = {token.lower() for token in _address_tokens(diagnostic or "")}
    if named and recipient and not named & {address.lower() for address in recipient}:
        return False
    addressing = code is not None and (code.split(".")[1] == "1" or code.endswith(".2.1"))
    return addressing or _RCPT_STAGE.found(text, lowered) or reasons.names_no_mailbox(text, lowered)


def classify(status: str | None, action: str | None, diagnostic: str | None,
             permanent_hint: bool | None) -> tuple[Kind, BounceType | None, str | None]:
    """(kind, bounce type, SES-style subtype) for one recipient, from ``assess``."""
    verdict = assess(status, action, diagnostic, permanent_hint)
    return verdict.kind, verdict.bounce_type, verdict.subtype


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
    reason: str | None = None  # ``reasons`` vocabulary; None for delays
    reply_code: str | None = None  # RFC 5321 reply code quoted in the diagnostic


@dataclass(frozen=True)
class DsnReport:
    """What a bounce said. ``standard``: read from a delivery-status part (else heuristics)."""

    reporting_mta: str | None
    arrival_date: datetime | None
    recipients: tuple[Recipient, ...]
    original: Original | None
    standard: bool
    raw: str


def read_dsn(message: Message, *, heuristics: bool = True, forwarded: bool = True) -> DsnReport | None:
    """Read a bounce; None when it is none. A delivery-status part with recipients is read as
    RFC 3464 says; otherwise, when ``heuristics`` is on (the caller turns it off for
    auto-replies and huge mail), flufl.bounce looks for failed addresses. Recipients are
    de-duplicated, first one wins. ``forwarded``: a notice without a status part that encloses
    a whole DSN (a gateway passing the real report on) is read from that DSN, one level deep."""
    status_parts = [part for part, content_type in typed_parts(message) if content_type in _STATUS_PARTS]
    if not status_parts and forwarded and (enclosed := _enclosed_report(message)) is not None:
        report = read_dsn(enclosed, heuristics=heuristics, forwarded=False)
        if report is not None and report.standard:
            return report
    text = human_text(message)
    if status_parts:
        raw = "\n".join(part_text(part) for part in status_parts)
        fields, recipients = _read_status_fields(raw, _notice(text))
        if recipients:
            # the fallback search includes the status text: a broken boundary can put the
            # original's headers there
            return DsnReport(fields.get("reporting-mta"), parse_date(fields.get("arrival-date")),
                             recipients, find_original(message, f"{text}\n{raw}"), True, raw)
    if not heuristics:
        return None
    text = text or _body_text(message)
    if (embedded := _EMBEDDED_FIELDS.search(text)) is not None:
        # a delivery-status part whose MIME boundary is broken: its fields are in the text
        fields, recipients = _read_status_fields(text[embedded.start():], _notice(text[:embedded.start()]))
        if recipients:
            return DsnReport(fields.get("reporting-mta"), parse_date(fields.get("arrival-date")), recipients,
                             find_original(message, text), True, text[embedded.start():][:4096])
    original = find_original(message, text)
    recipients = _read_notice(message, text, original)
    if not recipients:
        return None
    return DsnReport(None, None, recipients, original, False, text[:4096])


def _enclosed_report(message: Message) -> Message | None:
    """A multipart/report (RFC 6522) enclosed as message/rfc822: a forwarded DSN."""
    for part, content_type in typed_parts(message):
        payload = part.get_payload() if content_type == "message/rfc822" else None
        if isinstance(payload, list) and payload and isinstance(payload[0], Message) \
                and payload[0].get_content_type() == "multipart/report":
            return payload[0]
    return None


def _body_text(message: Message) -> str:
    """The body when no text part could be found: a multipart whose boundary never occurs, at
    the top or nested (a boundary parameter folded without indentation is lost, RFC 5322
    §2.2.3, and the part's text stays one unsplit string)."""
    payload = message.get_payload(decode=False)
    if isinstance(payload, str):
        return payload
    unsplit = [text for part, content_type in typed_parts(message) if content_type.startswith("multipart/")
               and isinstance(text := part.get_payload(decode=False), str)]
    return "\n".join(part for part in (message.preamble, *unsplit, message.epilogue) if part)


def _read_status_fields(text: str, context: str) -> tuple[dict[str, str], tuple[Recipient, ...]]:
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
                _add(recipients, group, context)
                group = {}
            group.setdefault(name, value)
        _add(recipients, group, context)
    return message_fields, tuple(recipients.values())


def _add(recipients: dict[str, Recipient], fields: dict[str, str], context: str) -> None:
    # RFC 3464 §2.3.1: Original-Recipient is the address we gave in RCPT TO; Final-Recipient
    # (§2.3.2) may be an alias the receiving side rewrote it to
    named = [a for a in (clean_address(fields.get("original-recipient")), clean_address(fields.get("final-recipient")))
             if a]
    address = named[0] if named else None
    if address is None or address.lower() in recipients:
        return
    status, action = fields.get("status"), fields.get("action")
    diagnostic = fields.get("diagnostic-code") or _comment(status)
    verdict = assess(status, action, diagnostic, None, context=context, recipient=named)
    recipients[address.lower()] = Recipient(
        address, action_word(action), effective_status(status, diagnostic), diagnostic, fields.get("remote-mta"),
        parse_date(fields.get("last-attempt-date")), verdict.kind, verdict.bounce_type, verdict.subtype,
        verdict.reason, reasons.reply_code(diagnostic))


def _comment(status: str | None) -> str | None:
    """The text some MTAs put after the code: "5.0.0 (recipient reached disk quota)"."""
    match = re.search(r"\((.+)\)", status or "")
    return match.group(1).strip() if match else None


def _read_notice(message: Message, text: str, original: Original | None) -> tuple[Recipient, ...]:
    """Failed addresses of a non-standard bounce (flufl.bounce), each with the status and
    diagnostic found in the lines after its first mention in the notice."""
    ours = _our_addresses(message, original)
    detected = _flufl(message)
    verdicts = _without(detected, ours, set())
    if not verdicts:  # "550 5.1.1 <ann@example.org>... User unknown" lines
        verdicts = _without({address: reply == "5" for address, reply in _reply_lines(text)}, ours, set())
    if not verdicts:  # Exim names them in a header, even when they are also our own addresses
        verdicts = {address: True for address in addresses_in(header(message, "X-Failed-Recipients"))}
    if not verdicts:  # last resort: any foreign address the notice names before the original,
        # only those the original was sent to when there are such (a help desk, in any language)
        named = _without({address: True for address in _notice_addresses(text)}, ours)
        sent_to = {address.lower() for address in (*(original.to if original else ()), *_quoted_to(text))}
        verdicts = {address: True for address in named if address.lower() in sent_to} or named
    if not verdicts:
        # a notice that names only the recipient's domain ("example.com (smtp)... Deferred"): the
        # quoted original's own To in that domain
        verdicts = {address: True for address in _quoted_to(text) if _names_domain(text, address)}
    if not verdicts:
        # the failed address is our own (a message to oneself, or an anonymised report): still
        # reported, since a report acts only on the recipient of the outbound message it names
        verdicts = _without(detected, set())
    near = _diagnostics_near(text, {address.lower() for address in verdicts})
    context = _notice(text)
    lowered = text.lower()
    # with several recipients, one that has its own paragraph reads only the notice's words
    # before the first of them: the rest of the notice is the other recipients' reasons
    lowered_context = context.lower()
    preamble = context[:min((_position(lowered_context, address) for address in verdicts), default=0)]
    recipients = []
    # in the order the notice names them (an address it never names goes last, by name)
    for address, permanent in sorted(verdicts.items(), key=lambda item: (_position(lowered, item[0]), item[0].lower())):
        status, diagnostic = near.get(address.lower(), (None, None))
        action = "failed" if permanent else "delayed"  # inferred: flufl's temporary means a warning
        own_context = preamble if len(verdicts) > 1 and diagnostic else context
        verdict = assess(status, action, diagnostic, permanent, context=own_context, recipient=(address,),
                         transcript=context)
        recipients.append(Recipient(address, action, status, diagnostic, None, None, verdict.kind,
                                    verdict.bounce_type, verdict.subtype, verdict.reason,
                                    reasons.reply_code(diagnostic)))
    return tuple(recipients)


def _quoted_to(text: str) -> list[str]:
    """The To of the original quoted after the notice."""
    notice_end = len(_notice(text))
    found = re.search(r"^[ \t>]*To[ \t]*:[ \t]*(\S[^\r\n]*)", text[notice_end:notice_end + 8192],
                      re.IGNORECASE | re.MULTILINE)
    return addresses_in(found.group(1)) if found else []


def _names_domain(text: str, address: str) -> bool:
    domain = address.rsplit("@", 1)[1]
    return re.search(rf"(?<![\w.@-]){re.escape(domain)}(?![\w-])", _notice(text), re.IGNORECASE) is not None


def _position(text: str, address: str) -> int:
    found = text.find(address.lower())
    return found if found >= 0 else len(text)


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


def _without(verdicts: dict[str, bool], ours: set[str], daemons: frozenset[str] | set[str] = _DAEMONS
             ) -> dict[str, bool]:
    return {address: permanent for address, permanent in verdicts.items()
            if address.lower() not in ours and address.split("@")[0].lower() not in daemons}


def _notice_addresses(text: str) -> Iterator[str]:
    """Addresses in the notice's own words, up to the copy of the original. Safe to be generous:
    a report acts only on the recipient of the outbound row it links to (``policy``). A line
    that lists the sender ("MAIL FROM: ...", "From: ...") names our side, and one that offers
    help ("please contact <support@...>") the reporting site's, not a failure."""
    for line in _notice_lines(text):
        if _SENDER_LISTING.match(line) or _HELP_LINE.search(line):
            continue
        for token in _address_tokens(line):
            if (address := clean_address(token)) is not None:
                yield address


def _notice(text: str) -> str:
    """The notice's own words (up to the copy of the original), for reading a reason in."""
    return "\n".join(_notice_lines(text[:_NOTICE_LIMIT * 4]))[:_NOTICE_LIMIT]


def _notice_lines(text: str, end: re.Pattern[str] = _ORIGINAL_STARTS) -> Iterator[str]:
    for line in text.splitlines():
        if end.match(line):
            return
        yield line


def _reply_lines(text: str) -> Iterator[tuple[str, str]]:
    """(address, reply class) for each address on a line that carries an SMTP reply code,
    read up to the first quoted header line (the copy of the original starts there)."""
    for line in _notice_lines(text, _QUOTED_HEADER):
        reply = _REPLY.search(line)
        if reply:
            for token in _address_tokens(line):
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
    """address → (status, diagnostic) from the address's own paragraph, so that a notice naming
    several recipients gives each its own: the first line with a 4xx/5xx reply code or enhanced
    code among the 8 lines from the address's first mention, stopping at a line that names
    another wanted address (the next recipient's paragraph), with the words before it in the
    same paragraph and its continuation lines. A paragraph of the notice with no code gives its
    own words ("This user doesn't have an account"), which the notice's text as a whole would
    blur with the other recipients' reasons."""
    lines = text.splitlines()
    mentions = [_mentioned(line, wanted) for line in lines]
    first: dict[str, int] = {}
    for index, found in enumerate(mentions):
        for address in found:
            first.setdefault(address, index)
    notice_end = next((index for index, line in enumerate(lines) if _ORIGINAL_STARTS.match(line)), len(lines))
    near: dict[str, tuple[str | None, str]] = {}
    for address, start in first.items():
        paragraph = _Paragraph(lines, mentions, address, start)
        coded = paragraph.coded()
        if coded is not None:
            near[address] = (effective_status(None, coded[1]), " ".join(part for part in coded if part))
        elif start < notice_end and (words := paragraph.words()):
            near[address] = (None, words)
    return near


def _mentioned(line: str, wanted: set[str]) -> frozenset[str]:
    """The wanted addresses a line names (lower-cased)."""
    if "@" not in line:
        return _NONE_MENTIONED
    return frozenset(token.lower() for token in _ADDRESS_TOKEN.findall(line)) & wanted


_NONE_MENTIONED: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Paragraph:
    """The lines about one recipient in a notice, from its first mention."""

    lines: list[str]
    mentions: list[frozenset[str]]
    address: str
    start: int

    def _others(self, index: int) -> bool:
        return bool(self.mentions[index]) and self.address not in self.mentions[index]

    def _ends(self, index: int) -> bool:
        line = self.lines[index]
        return not line.strip() or self._others(index) or _ORIGINAL_STARTS.match(line) is not None

    def coded(self) -> tuple[str, str] | None:
        """(the words before it in the same paragraph, the first line with a failure code and
        the indented lines that continue it)."""
        for index in range(self.start, min(self.start + 8, len(self.lines))):
            if index > self.start and self._others(index):
                return None
            line = self.lines[index]
            enhanced = _ENHANCED.search(line)  # a 2.x.x success code ("250 2.1.5 Ok") is no diagnostic
            if _REPLY.search(line) or (enhanced and enhanced.group(1)[0] != "2"):
                return (" ".join(part.strip() for part in self._before(index)),
                        " ".join(part.strip() for part in [line, *self._after(index)]))
        return None

    def _before(self, index: int) -> list[str]:
        """Lines after the mention and before the code line, when no blank line parts them and
        they are words, not an SMTP transcript."""
        between = self.lines[self.start + 1:index]
        if any(self._ends(self.start + 1 + offset) or _CODE_START.match(line) for offset, line in enumerate(between)):
            return []
        return between

    def _after(self, index: int) -> list[str]:
        after = []
        for following in range(index + 1, min(index + 5, len(self.lines))):
            line = self.lines[following]
            if self._ends(following) or not line[:1].isspace() or _CODE_START.match(line):
                break
            after.append(line)
        return after

    def words(self) -> str | None:
        """The paragraph's own text (up to 4 lines), when it says more than the address; never
        a piece of an SMTP transcript."""
        taken = [self.lines[self.start]]
        if _CODE_START.match(taken[0]) or _LISTING.match(taken[0]):
            return None
        for index in range(self.start + 1, min(self.start + 5, len(self.lines))):
            if self._ends(index) or _CODE_START.match(self.lines[index]):
                break
            taken.append(self.lines[index])
        said = " ".join(line.strip() for line in taken)
        return said if len(_WORD.findall(_ADDRESS_TOKEN.sub(" ", said))) >= 3 else None
