"""What one client may ask of a listener, and how many clients there may be at once.

The limits on message data (line length, header section size, header field count) are checked
as the data arrives (``ingress/spool.py``); this module holds their values and their replies.
Clients are counted by address, IPv6 ones by their /64 (one host usually holds a whole /64);
``trusted_networks`` are not limited per client but count towards the total ceiling.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from waypost.ingress.throttle import LogThrottle

if TYPE_CHECKING:
    from waypost.config import Settings

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 5321 §4.5.3.1.8 requires room for at least 100 recipients; we need far fewer.
MAX_RECIPIENTS = 100
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address"


@dataclass(frozen=True)
class SessionLimits:
    """What one client may ask of a listener. Defaults match ``SmtpSettings``."""

    max_recipients: int = MAX_RECIPIENTS
    max_line_length: int = 10_000  # octets per line of message data, CRLF included
    max_header_bytes: int = 256 * 1024  # the whole header section, line ends included
    max_header_count: int = 1000
    max_connections_per_ip: int = 20  # at once, per client (see client_key)
    timeout: float = 300.0  # seconds; see smtp.py's docstring
    unlimited_networks: tuple[Network, ...] = ()  # not subject to max_connections_per_ip

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionLimits:
        smtp = settings.smtp
        return cls(max_recipients=smtp.max_recipients, max_line_length=smtp.max_line_length,
                   max_header_bytes=smtp.max_header_bytes, max_header_count=smtp.max_header_count,
                   max_connections_per_ip=smtp.max_connections_per_ip, timeout=smtp.timeout,
                   unlimited_networks=tuple(settings.trusted_networks))

    def header_too_large(self) -> str:
        return f"552 5.3.4 Header section too large: at most {self.max_header_bytes} octets"

    def too_many_fields(self) -> str:
        return f"552 5.3.4 Too many header fields: at most {self.max_header_count}"


def line_too_long(limit: int) -> str:
    return f"500 5.5.2 Line too long: at most {limit} octets per line including CRLF (RFC 5321 4.5.3.1.6)"


def client_key(ip: str) -> str:
    """Whom to count: the address, an IPv6 one by its /64, an IPv4-mapped one as IPv4."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _in_networks(ip: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class ConnectionCounter:
    """Open connections per client on one listener. Used only on the listener's loop."""

    def __init__(self, limit: int, unlimited: Iterable[Network] = ()) -> None:
        self.limit = limit
        self.unlimited = tuple(unlimited)
        self._open: defaultdict[str, int] = defaultdict(int)

    def enter(self, ip: str) -> bool:
        key = client_key(ip)
        if self._open[key] >= self.limit and not _in_networks(ip, self.unlimited):
            return False
        self._open[key] += 1
        return True

    def leave(self, ip: str) -> None:
        key = client_key(ip)
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]


class ConnectionCeiling:
    """Sessions open at once over every listener sharing it. Used only on the listeners' loop
    (``serve`` runs both on one). Refusals are logged once per interval with their count: a
    flood past the ceiling would otherwise write a line per connection."""

    def __init__(self, limit: int, *, refusals: LogThrottle | None = None) -> None:
        self.limit = limit
        self.open = 0
        self._refusals = refusals or LogThrottle()

    def enter(self) -> bool:
        if self.open >= self.limit:
            if (count := self._refusals.note()) is not None:
                log.warning("refused %d connection(s) since the last report: %d sessions open, "
                            "smtp.max_connections is %d", count, self.open, self.limit)
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1


def too_many_connections(hostname: str) -> str:
    # RFC 5321 §3.8: 421 in place of the greeting; 4.7.0, a policy refusal (RFC 3463)
    return f"421 4.7.0 {hostname} Too many connections, try again later"

