"""The one way the application reads a report mail that came back to us: a bounce (RFC 3464
DSN or a non-standard one), a complaint (RFC 5965 ARF) or an auto-reply (RFC 3834).

``read_report`` decides which it is, in this order, and returns ``FeedbackEvent``s:

1. a feedback report (``arf.read_arf``) → kind "arf", one COMPLAINT per reported recipient
   (an opt-out such as Apple Mail's unsubscribe too: feedback type "opt-out", ``unsubscribe``);
2. a bounce (``dsn.read_dsn``) → kind "dsn", one event per recipient: BOUNCE, DELAY or DELIVERY;
3. an auto-reply → kind "auto-reply", one AUTO_REPLY event naming its sender, never a bounce.
   Bounce evidence (a delivery-status part, X-Failed-Recipients, a mailer-daemon sender, a
   bounce subject) rules this out: Exim and Postfix mark bounces ``Auto-Submitted`` too;
4. anything else → kind "unknown", no events.

A report kind other than "unknown" always comes with at least one event.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32

from waypost.feedback.arf import ArfReport, read_arf
from waypost.feedback.dsn import DsnReport, read_dsn
from waypost.feedback.events import FeedbackEvent, FeedbackFormatError, Kind, Source
from waypost.feedback.mailparts import addresses_in, header, human_text, parse_date, part_text, typed_parts
from waypost.feedback.ses_events import parse_ses_notification

log = logging.getLogger(__name__)

HEURISTIC_LIMIT = 4 << 20  # larger mail is not handed to flufl.bounce's line-by-line detectors
_BOM = b"\xef\xbb\xbf"
_STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")
_DAEMONS = frozenset({"mailer-daemon", "mail-daemon", "mailerdaemon", "postmaster", "mdaemon"})
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|has failed|failed|problem|report)|returned mail|"
    r"mail delivery (?:failed|failure|system)|failure notice|non[- ]?delivery|could not be delivered", re.IGNORECASE)
_VACATION_SUBJECT = re.compile(
    r"^\s*(?:(?:re|aw|fw|wg|tr)\s*:\s*)*(?:auto(?:matic|matische|matisch)?[ -]?(?:reply|response|antwort|antwoord)|"
    r"auto\s*:|autoreply|out[ -]of[ -](?:the[ -])?office|ooo\b|away (?:from|until|till)|on vacation|vacation|"
    r"abwesen|r[ée]ponse automatique|absence|risposta automatica|respuesta autom[aá]tica|fuera de la oficina)",
    re.IGNORECASE)
_SES_JSON = re.compile(r'"(?:notificationType|eventType)"\s*:')
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply")


@dataclass(frozen=True)
class Report:
    """One report mail, read. ``original_message_id``: the enclosed original's Message-ID as
    written (angle brackets kept), how the outbox row is found; ``original_return_path``: that
    original's envelope sender as the receiving side recorded it (our VERP address, if any)."""

    kind: str  # "dsn" | "arf" | "auto-reply" | "unknown"
    events: tuple[FeedbackEvent, ...]
    original_message_id: str | None
    report_message_id: str | None
    summary: str
    original_return_path: str | None = None


def read_report(raw: bytes, *, verp_address: str | None = None) -> Report:
    """Read one report mail. ``verp_address``: the address it was delivered to, copied into
    every event. Raises ``FeedbackFormatError`` only for input that is not mail at all (not
    bytes, empty, no header fields); anything else unreadable is kind "unknown"."""
    data = _mail_bytes(raw)
    try:
        message = message_from_bytes(data, policy=compat32)
    except Exception as err:  # the email package recurses per MIME level: absurd nesting breaks it
        log.warning("report mail could not be parsed: %r", err)
        return Report("unknown", (), None, None, f"unparseable mail: {type(err).__name__}")
    if not message.keys():
        raise FeedbackFormatError("no header fields: not a mail message")
    report_id = header(message, "Message-ID")
    try:
        return _read(message, report_id, verp_address, heuristics=len(data) <= HEURISTIC_LIMIT)
    except Exception:  # last guard: hostile mail must end as "unknown", never as a crash
        log.warning("report %s could not be read", report_id, exc_info=True)
        return Report("unknown", (), None, report_id, "unreadable report")


def _mail_bytes(raw: bytes) -> bytes:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise FeedbackFormatError(f"a report is bytes, not {type(raw).__name__}")
    data = bytes(raw).removeprefix(_BOM).lstrip(b"\r\n")  # a BOM or blank line would hide every header
    if not data.strip():
        raise FeedbackFormatError("empty report")
    return data


def _read(message: Message, report_id: str | None, verp: str | None, *, heuristics: bool) -> Report:
    arf = read_arf(message)
    if arf is not None:
        return _from_arf(arf, message, report_id, verp)
    forwarded = _from_ses_json(message, report_id, verp)
    if forwarded is not None:
        return forwarded
    bounce_like = has_bounce_evidence(message)
    auto_reply = not bounce_like and is_auto_reply(message)
    dsn = read_dsn(message, heuristics=heuristics and not auto_reply)
    if dsn is not None:
        return _from_dsn(dsn, message, report_id, verp)
    if auto_reply and (sender := _sender(message)):
        event = FeedbackEvent(Kind.AUTO_REPLY, Source.DSN, sender, parse_date(header(message, "Date")),
                              verp_address=verp, feedback_id=report_id, raw=human_text(message)[:4096],
                              reason="vacation")
        return Report("auto-reply", (event,), None, report_id, f"auto-reply from {sender}")
    what = "bounce without a readable recipient" if bounce_like else "not a bounce, complaint or auto-reply"
    return Report("unknown", (), None, report_id, f"unknown: {what}")


def _from_dsn(dsn: DsnReport, message: Message, report_id: str | None, verp: str | None) -> Report:
    report_date = parse_date(header(message, "Date"))
    original_id = dsn.original.message_id if dsn.original else None
    events = tuple(
        FeedbackEvent(
            kind=recipient.kind, source=Source.DSN, recipient=recipient.address,
            # Last-Attempt-Date (RFC 3464 §2.3.5) is when it failed; Arrival-Date (§2.2.5) only
            # when our message reached the reporting MTA, so the report's own Date comes first
            occurred_at=recipient.last_attempt or report_date or dsn.arrival_date,
            message_id_header=original_id, verp_address=verp, feedback_id=report_id,
            bounce_type=recipient.bounce_type, bounce_subtype=recipient.subtype, action=recipient.action,
            status=recipient.status, diagnostic=recipient.diagnostic, raw=dsn.raw,
            reason=recipient.reason, reply_code=recipient.reply_code,
        )
        for recipient in dsn.recipients
    )
    counts: dict[str, int] = {}
    for event in events:
        label = str(event.bounce_type or event.kind).lower()
        counts[label] = counts.get(label, 0) + 1
    source = dsn.reporting_mta or header(message, "From") or "unknown sender"
    detail = ", ".join(f"{count} {label}" for label, count in sorted(counts.items()))
    noun = "recipient" if len(events) == 1 else "recipients"
    summary = f"{'DSN' if dsn.standard else 'bounce'} from {source}: {len(events)} {noun} ({detail})"
    return Report("dsn", events, original_id, report_id, summary,
                  dsn.original.return_path if dsn.original else None)


def _from_arf(arf: ArfReport, message: Message, report_id: str | None, verp: str | None) -> Report:
    occurred: datetime | None = arf.arrival_date or parse_date(header(message, "Date"))
    original_id = arf.original.message_id if arf.original else None
    events = tuple(
        FeedbackEvent(Kind.COMPLAINT, Source.ARF, recipient, occurred, message_id_header=original_id, verp_address=verp,
                      feedback_id=report_id, feedback_type=arf.feedback_type, unsubscribe=arf.unsubscribe,
                      raw=arf.raw, reason="feedback")
        for recipient in arf.recipients
    )
    source = arf.user_agent or arf.reporting_mta or header(message, "From") or "unknown reporter"
    noun = "recipient" if len(events) == 1 else "recipients"
    summary = f"ARF {arf.feedback_type or 'untyped'} report from {source}: {len(events)} {noun}"
    return Report("arf", events, original_id, report_id, summary,
                  arf.original.return_path if arf.original else None)


def _from_ses_json(message: Message, report_id: str | None, verp: str | None) -> Report | None:
    """An SES notification sent as mail (SES's email feedback forwarding to an address, or an
    SNS email subscription): its JSON is the text. It came by mail, so it is trusted like any
    mail report (``Source.DSN``: it acts only through one of our messages), never like SES's."""
    for part, content_type in typed_parts(message):
        if not content_type.startswith("text/") or not _SES_JSON.search(str(part.get_payload())[:4000]):
            continue  # cheap look at the undecoded text first: nearly every report is no such thing
        text = part_text(part).strip()
        if not text.startswith("{") or not _SES_JSON.search(text[:2000]):
            continue
        try:  # the JSON object, then SNS's "If you wish to stop receiving notifications" trailer
            document = _json_start(text)
            if not isinstance(document, dict):
                return None
            inner = document.get("Message") if "Type" in document else None  # an SNS envelope
            events = parse_ses_notification(inner if isinstance(inner, str) else document)
        except (ValueError, RecursionError, AttributeError, FeedbackFormatError):
            return None
        events = [replace(e, source=Source.DSN, verp_address=verp, feedback_id=e.feedback_id or report_id)
                  for e in events if e.kind not in (Kind.SEND, Kind.OPEN, Kind.CLICK)]
        if not events:
            return None
        kind = "arf" if events[0].kind == Kind.COMPLAINT else "dsn"
        return Report(kind, tuple(events), events[0].message_id_header, report_id,
                      f"SES notification by mail: {len(events)} recipient(s)")
    return None


def _json_start(text: str) -> object:
    """The JSON value at the start of ``text``; a long line folded in transit (a line break
    and a space inserted, as for header fields) is unfolded when the text does not parse."""
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except ValueError:
        return json.JSONDecoder().raw_decode(re.sub(r"\r?\n ", "", text))[0]


def _sender(message: Message) -> str | None:
    for name in ("From", "Sender", "Return-Path"):
        found = addresses_in(header(message, name))
        if found:
            return found[0]
    return None


def decoded_header(message: Message, name: str) -> str:
    """A field with RFC 2047 encoded words decoded; "" when absent."""
    value = header(message, name) or ""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return value


def has_bounce_evidence(message: Message) -> bool:
    """Signs of a machine report that outweigh any auto-reply marker: a multipart/report (RFC
    6522: DSNs, feedback and DMARC failure reports, never an RFC 3834 reply) or delivery-status
    part, X-Failed-Recipients (Exim), a mailer-daemon/postmaster sender, a bounce subject."""
    if message.get_content_type() == "multipart/report":
        return True
    if header(message, "X-Failed-Recipients") or any(
            content_type in _STATUS_PARTS for _, content_type in typed_parts(message)):
        return True
    senders = addresses_in(header(message, "From")) + addresses_in(header(message, "Sender"))
    if any(address.split("@")[0].lower() in _DAEMONS for address in senders):
        return True
    if (header(message, "From") or "").strip("<> ").lower() in _DAEMONS:  # a bare "From: mailer-daemon"
        return True
    return bool(_BOUNCE_SUBJECT.search(decoded_header(message, "Subject")))


def is_auto_reply(message: Message) -> bool:
    """Marked as an automatic reply (RFC 3834 §5 Auto-Submitted: auto-replied, the common
    X-Autoreply family, Precedence: auto_reply) or titled like one ("Out of office", "Automatic
    reply", "Auto: ..."). Callers check ``has_bounce_evidence`` first."""
    if (header(message, "Auto-Submitted") or "").lower().startswith("auto-replied"):
        return True
    for name in _AUTO_REPLY_HEADERS:
        value = header(message, name)
        if value is not None and value.lower() not in ("no", "false", "0"):
            return True
    if (header(message, "Precedence") or "").lower() in ("auto_reply", "auto-reply"):
        return True
    if (header(message, "X-Autogenerated") or "").lower() == "reply":  # Outlook.com
        return True
    return bool(_VACATION_SUBJECT.search(decoded_header(message, "Subject")))
