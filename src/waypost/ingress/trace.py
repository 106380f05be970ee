"""Our ``Received:`` trace line (RFC 5321 §4.4, RFC 3848); see ``smtp.py``'s docstring."""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

_DOMAIN = re.compile(r"(?=.{1,253}\.?\Z)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                     r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?\Z")
_ADDRESS_LITERAL = re.compile(r"\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]{2,45})\]\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def received_header(*, helo: str | None, peer_ip: str | None, hostname: str, protocol: str,
                    recipients: Sequence[str], when: datetime) -> bytes:
    """Our trace line (RFC 5321 §4.4), folded, with CRLF line ends; see the module docstring."""
    literal = _address_literal(peer_ip) if peer_ip else None
    if helo and (_DOMAIN.match(helo) or _ADDRESS_LITERAL.match(helo)):
        origin = f"{helo} ({literal})" if literal else helo
    else:
        origin = f"{literal} ({literal})" if literal else "unknown"
    lines = [f"Received: from {origin}", f"\tby {hostname} (Waypost) with {protocol}"]
    one = recipients[0] if len(recipients) == 1 else None
    if one is not None and not _CONTROL.search(one):
        lines.append(f"\tfor <{one}>")
    lines[-1] += f"; {email.utils.format_datetime(when)}"
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=4096)  # the same peers come back, message after message
def _address_literal(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return "[unknown]"
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"


def with_protocol(session: Session, envelope: Envelope, server: SMTP) -> str:
    """The ``with`` keyword: RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA), RFC 6531 (UTF8SMTP…)."""
    if not session.extended_smtp:
        return "SMTP"
    base = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP"
    tls = "S" if server.transport is not None and server.transport.get_extra_info("sslcontext") else ""
    return f"{base}{tls}{'A' if session.authenticated else ''}"

