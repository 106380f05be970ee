"""The reports a mail to the reports mailbox carries.

- aggregate reports: an XML, gzip or zip attachment (RFC 7489 §7.2.1.1), or XML in the body;
- SMTP TLS reports: ``application/tlsrpt+json`` or ``application/tlsrpt+gzip`` (RFC 8460 §5.3);
- failure reports: a ``message/feedback-report`` part with ``Feedback-Type: auth-failure``
  (RFC 6591 §3), or a ``multipart/report`` of a reporter that left the ARF part out.

Whatever cannot be read becomes a malformed ``Report``: this never raises on bad input.
"""

from __future__ import annotations

import base64
import binascii
import email
import hashlib
import quopri
import re
from collections.abc import Iterator
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr

from waypost.dmarc.formats import GZIP_MAGIC, ZIP_MAGIC, parse_aggregate, parse_tls, unpack
from waypost.dmarc.reports import Report, ReportFormatError, ReportKind, malformed

TLS_TYPES = ("application/tlsrpt+json", "application/tlsrpt+gzip")
PAYLOAD_TYPES = ("application/gzip", "application/x-gzip", "application/zip", "application/x-zip",
                 "application/x-zip-compressed", "application/xml", "text/xml", "application/octet-stream",
                 "application/json", *TLS_TYPES)
PAYLOAD_SUFFIXES = (".xml", ".gz", ".zip", ".json", ".gzip")
# RFC 6591 §3.1 fields kept from a failure report (their values only; the original message is not kept)
FAILURE_FIELDS = ("feedback-type", "user-agent", "version", "original-mail-from", "original-rcpt-to",
                  "arrival-date", "source-ip", "reported-domain", "auth-failure", "authentication-results",
                  "delivery-result", "dkim-domain", "dkim-identity", "dkim-selector", "spf-dns",
                  "identity-alignment", "reported-uri")
ORIGINAL_HEADERS = ("from", "to", "subject", "date", "message-id")
_TEXT_IP = re.compile(r"(?:Sender IP Address|Source IP|from IP)\s*:?\s*([0-9A-Fa-f.:]+[0-9A-Fa-f])", re.I)
_TEXT_DOMAIN = re.compile(r"(?:Sender Domain|Reported Domain|Report for)\s*:?\s*([A-Za-z0-9.-]+\.[A-Za-z]{2,})", re.I)


def read_reports(raw: bytes, limit: int) -> list[Report]:
    """Every report in the mail ``raw``; ``limit`` caps each unpacked payload (bombs)."""
    try:
        message = email.message_from_bytes(raw, policy=compat32)
        reports = list(_reports(message, raw, limit))
    except (ValueError, TypeError, LookupError, IndexError) as err:  # the stdlib parser's rare failures
        return [malformed(ReportKind.UNKNOWN, f"unreadable mail ({err})", raw)]
    return reports or [malformed(ReportKind.UNKNOWN, "no DMARC or TLS report found in this mail", raw,
                                 org_name=_reporter(message))]


def _reports(message: Message, raw: bytes, limit: int) -> Iterator[Report]:
    parts = list(_leaves(message))
    feedback = [part for part in parts if part.get_content_type() == "message/feedback-report"]
    if feedback:
        yield _failure(message, feedback[0])
        return
    found = False
    for part in parts:
        if _is_payload(part):
            found = True
            yield read_payload(_decoded(part), limit, tls=part.get_content_type() in TLS_TYPES)
    if found:
        return
    if message.get_content_type() == "multipart/report" or "forensic" in str(message.get("Subject", "")).lower():
        yield _failure_from_text(message, parts)
        return
    body = _decoded(parts[0]) if parts else b""
    if body.lstrip().startswith((b"<?xml", b"<feedback", b"{")):
        yield read_payload(body, limit, tls=False)


def read_payload(data: bytes, limit: int, *, tls: bool) -> Report:
    """One aggregate or TLS report from an attachment's bytes; malformed when it cannot be read."""
    kind = ReportKind.TLS if tls else ReportKind.AGGREGATE
    try:
        text = unpack(data, limit)
        if text.lstrip().startswith(b"{"):
            kind = ReportKind.TLS
        return parse_tls(text) if kind is ReportKind.TLS else parse_aggregate(text)
    except ReportFormatError as err:
        return malformed(kind, str(err), data)


def _leaves(part: Message) -> Iterator[Message]:
    """The parts that are not multipart, without entering a quoted message (message/rfc822):
    a failure report quotes the failed mail, whose attachments are not reports."""
    if part.get_content_type() == "message/feedback-report" or not part.is_multipart():
        yield part
        return
    if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
        yield part
        return
    for inner in part.get_payload():
        if isinstance(inner, Message):
            yield from _leaves(inner)


def _is_payload(part: Message) -> bool:
    name = (part.get_filename() or "").lower()
    if part.get_content_type() in PAYLOAD_TYPES or name.endswith(PAYLOAD_SUFFIXES):
        return True
    return part.get_content_type() == "text/plain" and _decoded(part).lstrip()[:4] in (GZIP_MAGIC, ZIP_MAGIC)


def _decoded(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _reporter(message: Message) -> str | None:
    address = parseaddr(str(message.get("From", "")))[1]
    return address.rsplit("@", 1)[1].lower() if "@" in address else None


def _field_block(part: Message) -> bytes:
    """The fields of a message/feedback-report part. The stdlib parses message/* parts as a
    nested message; a transfer encoding (some reporters base64 the part) is undone by hand."""
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        block = inner[0].as_bytes()
    else:
        block = str(inner).encode("utf-8", "replace")
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    try:
        if encoding == "base64":
            return base64.b64decode(block)
        if encoding == "quoted-printable":
            return quopri.decodestring(block)
    except (binascii.Error, ValueError):
        pass
    return block


def _failure(message: Message, part: Message) -> Report:
    block = _field_block(part)
    fields = BytesHeaderParser(policy=compat32).parsebytes(block.lstrip(b"\r\n"))
    values = {name: " ".join(str(v).split()) for name in FAILURE_FIELDS if (v := fields.get(name)) is not None}
    org = _reporter(message)
    digest = hashlib.sha256(block + str(message.get("Message-ID", "")).encode()).hexdigest()
    kind = values.get("feedback-type", "").lower()
    if kind != "auth-failure":
        return malformed(ReportKind.FAILURE, f"feedback type {kind or 'missing'!r} is not auth-failure (RFC 6591)",
                         block, org_name=org)
    details = {"digest": digest, "fields": values, "original": _original_headers(message)}
    return Report(ReportKind.FAILURE, org_name=org, policy_domain=(values.get("reported-domain") or "").lower() or None,
                  details=details)


def _failure_from_text(message: Message, parts: list[Message]) -> Report:
    """A failure report without its machine-readable part: the source IP and the domain read
    from the human-readable text, as far as it names them."""
    text = b"\n".join(_decoded(p) for p in parts if p.get_content_type() == "text/plain").decode("utf-8", "replace")
    text = f"{message.get('Subject', '')}\n{text}"
    ip, domain = _TEXT_IP.search(text), _TEXT_DOMAIN.search(text)
    fields = {"feedback-type": "auth-failure", "arf-part": "missing"}
    if ip:
        fields["source-ip"] = ip.group(1)
    if domain:
        fields["reported-domain"] = domain.group(1).lower()
    digest = hashlib.sha256(text.encode() + str(message.get("Message-ID", "")).encode()).hexdigest()
    return Report(ReportKind.FAILURE, org_name=_reporter(message), policy_domain=fields.get("reported-domain"),
                  details={"digest": digest, "fields": fields, "original": {}})


def _original_headers(message: Message) -> dict[str, str]:
    """A few headers of the failed message (personal data: purged with the report)."""
    for part in message.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            inner = part.get_payload()
            quoted = inner[0] if isinstance(inner, list) and inner and isinstance(inner[0], Message) else \
                BytesHeaderParser(policy=compat32).parsebytes(_decoded(part))
            return {name: " ".join(str(v).split())[:500] for name in ORIGINAL_HEADERS
                    if (v := quoted.get(name)) is not None}
    return {}
