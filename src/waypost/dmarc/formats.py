"""Report payloads: unpacking (gzip, zip) with a cap on the unpacked size, then the aggregate
XML (RFC 7489 appendix C and the DMARC 2.0 namespace of RFC 9990) and the TLS-RPT JSON
(RFC 8460 §4.4).

XML goes through defusedxml: a report comes from anyone who sends mail to the mailbox, so
entity expansion and external entities are refused. The schema is small enough that a reader
of our own is shorter than adapting parsedmarc, which pulls in many heavy dependencies.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeTree
from defusedxml.common import DefusedXmlException

from waypost.dmarc.reports import Record, Report, ReportFormatError, ReportKind, TlsPolicy

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
CHUNK = 64 * 1024


def unpack(data: bytes, limit: int) -> bytes:
    """The report inside ``data``: gunzipped, unzipped (first member) or as is, sniffed by magic
    bytes (RFC 7489 §7.2.1.1 asks for gzip; zip and bare XML occur). Raises ReportFormatError
    when the unpacked bytes would pass ``limit`` (a zip or gzip bomb) or cannot be unpacked."""
    if data.startswith(GZIP_MAGIC):
        return _gunzip(data, limit)
    if data.startswith(ZIP_MAGIC):
        return _unzip(data, limit)
    if len(data) > limit:
        raise ReportFormatError(f"report of {len(data)} bytes is over the limit of {limit}")
    return data


def _gunzip(data: bytes, limit: int) -> bytes:
    out = bytearray()
    while data.startswith(GZIP_MAGIC):  # a gzip file may hold several members (RFC 1952 §2.2)
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as err:
            raise ReportFormatError(f"not a readable gzip file ({err})") from err
        if len(out) > limit:
            raise ReportFormatError(f"gzip report unpacks to over {limit} bytes")
        if not inflater.eof:
            raise ReportFormatError("gzip report is truncated")
        data = inflater.unused_data
    return bytes(out)


def _unzip(data: bytes, limit: int) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if not members:
                raise ReportFormatError("zip report holds no file")
            # the declared size is the sender's word: read at most limit + 1 bytes regardless
            with archive.open(members[0]) as member:
                out = member.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, ValueError) as err:
        raise ReportFormatError(f"not a readable zip file ({err})") from err
    if len(out) > limit:
        raise ReportFormatError(f"zip report unpacks to over {limit} bytes")
    return out


# --- aggregate reports -------------------------------------------------------------------------

_FEEDBACK = re.compile(rb"<(?:\w+:)?feedback[\s>].*</(?:\w+:)?feedback\s*>", re.S)
# reporters write "<dmarc@example.net>" inside <email>: an address in brackets is not a tag
_BRACKETED_ADDRESS = re.compile(rb"<([^<>\s/!?]+@[^<>\s]+)>")
# a "<" whose next angle bracket is another "<" opens no tag: text the reporter did not escape
_STRAY_LT = re.compile(rb"<(?=[^<>]*<)")


def parse_aggregate(data: bytes) -> Report:
    """An aggregate report from its XML. Raises ReportFormatError when it is not one."""
    root, repairs = _feedback_root(data)
    metadata, policy = _child(root, "report_metadata"), _child(root, "policy_published")
    if metadata is None or policy is None:
        raise ReportFormatError("no report_metadata or policy_published: not a DMARC aggregate report")
    org_name, report_id = _text(metadata, "org_name"), _text(metadata, "report_id")
    domain = _text(policy, "domain")
    if not org_name and "@" in (_text(metadata, "email") or ""):  # some reporters leave it empty
        org_name = str(_text(metadata, "email")).rsplit("@", 1)[1].strip("<> ").lower()
    if not org_name or not report_id or not domain:
        raise ReportFormatError("org_name, report_id or the policy domain is missing")
    dates = _child(metadata, "date_range")
    published = {_local(e.tag): (e.text or "").strip() for e in policy}
    details: dict[str, Any] = {
        "schema": "dmarc-2.0" if root.tag.startswith("{urn:ietf:params:xml:ns:dmarc-2.0}") else "rfc7489",
        "email": _text(metadata, "email"), "policy": published,
        "errors": [(e.text or "").strip() for e in _children(metadata, "error")]}
    if repairs:
        details["repaired"] = repairs
    return Report(ReportKind.AGGREGATE, org_name=org_name, report_id=report_id, policy_domain=domain.lower(),
                  begin=_epoch(_text(dates, "begin")), end=_epoch(_text(dates, "end")), details=details,
                  records=tuple(_record(e) for e in _children(root, "record")))


def _feedback_root(data: bytes) -> tuple[Element, list[str]]:
    """Parse strictly; failing that, try the repairs real reporters need: bytes that are not
    UTF-8, a wrapper around <feedback> (the schema pasted in front), an address in brackets."""
    if not data.strip():
        raise ReportFormatError("empty report")
    try:
        return _parse(data), []
    except ReportFormatError as first:
        repairs = []
        text = data.decode("utf-8", errors="replace").encode("utf-8")
        if text != data:
            repairs.append("replaced bytes that are not UTF-8")
        if match := _FEEDBACK.search(text):
            if match.group(0) != text.strip():
                repairs.append("read the <feedback> element alone")
            text = match.group(0)
        fixed = _STRAY_LT.sub(b"&lt;", _BRACKETED_ADDRESS.sub(rb"&lt;\1&gt;", text))
        if fixed != text:
            repairs.append("escaped angle brackets that open no tag")
        if not repairs:
            raise first
        try:
            return _parse(fixed), repairs
        except ReportFormatError:
            raise first from None


def _parse(data: bytes) -> Element:
    try:
        root = SafeTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as err:
        raise ReportFormatError(f"refused XML construct ({type(err).__name__})") from err
    except SafeTree.ParseError as err:
        raise ReportFormatError(f"not well-formed XML ({err})") from err
    if _local(root.tag) != "feedback":
        raise ReportFormatError(f"root element <{_local(root.tag)}> is not <feedback>")
    return root


def _record(element: Element) -> Record:
    row = _child(element, "row")
    evaluated = _child(row, "policy_evaluated")
    ip, count = _text(row, "source_ip"), _text(row, "count")
    if not ip or count is None or not count.isdigit():
        raise ReportFormatError("a record has no source_ip or no count")
    auth = _child(element, "auth_results")
    identifiers = _child(element, "identifiers")
    reasons = [{_local(e.tag): (e.text or "").strip() for e in reason}
               for reason in _children(evaluated, "reason")]
    results = {kind: [{_local(e.tag): (e.text or "").strip() for e in result} for result in _children(auth, kind)]
               for kind in ("dkim", "spf")}
    header_from = _text(identifiers, "header_from")
    return Record(ip, int(count), (_text(evaluated, "disposition") or "unknown").lower(),
                  (_text(evaluated, "dkim") or "unknown").lower(), (_text(evaluated, "spf") or "unknown").lower(),
                  header_from.lower() if header_from else None,
                  {**results, "reasons": reasons, "envelope_from": _text(identifiers, "envelope_from")})


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(parent: Element | None, name: str) -> list[Element]:
    return [] if parent is None else [e for e in parent if _local(e.tag) == name]


def _child(parent: Element | None, name: str) -> Element | None:
    found = _children(parent, name)
    return found[0] if found else None


def _text(parent: Element | None, name: str) -> str | None:
    element = _child(parent, name)
    return None if element is None or element.text is None else element.text.strip() or None


def _epoch(value: str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value), UTC) if value else None
    except (ValueError, OverflowError, OSError):
        return None


# --- SMTP TLS reports ---------------------------------------------------------------------------

def parse_tls(data: bytes) -> Report:
    """A TLS report from its JSON (RFC 8460 §4.4). Raises ReportFormatError when it is not one."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ReportFormatError(f"not JSON ({err})") from err
    if not isinstance(body, dict) or not isinstance(body.get("policies"), list):
        raise ReportFormatError("no policies: not an SMTP TLS report")
    org, report_id = body.get("organization-name"), body.get("report-id")
    if not isinstance(org, str) or not isinstance(report_id, str) or not org or not report_id:
        raise ReportFormatError("organization-name or report-id is missing")
    dates = body.get("date-range")
    dates = dates if isinstance(dates, dict) else {}
    policies = tuple(_tls_policy(entry) for entry in body["policies"])
    return Report(ReportKind.TLS, org_name=org, report_id=report_id,
                  policy_domain=policies[0].policy_domain if policies else None,
                  begin=_rfc3339(dates.get("start-datetime")), end=_rfc3339(dates.get("end-datetime")),
                  details={"contact": body.get("contact-info")}, policies=policies)


def _tls_policy(entry: Any) -> TlsPolicy:
    try:
        policy, summary = entry["policy"], entry["summary"]
        failures = entry.get("failure-details") or []
        success, failure = summary["total-successful-session-count"], summary["total-failure-session-count"]
        if not isinstance(success, int) or not isinstance(failure, int) or not isinstance(failures, list):
            raise TypeError("counts are not numbers")
        return TlsPolicy(str(policy["policy-domain"]).lower(), str(policy.get("policy-type", "")), success, failure,
                         [f for f in failures if isinstance(f, dict)])
    except (KeyError, TypeError) as err:
        raise ReportFormatError(f"a policy entry is incomplete ({err})") from err


def _rfc3339(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
