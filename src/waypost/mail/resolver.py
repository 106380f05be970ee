"""The DNS side of sender authentication: the one dnspython ``Resolver`` every SPF, DKIM and
DMARC question goes through, host names in the form those checks compare, and lookups that
tell "no such record" (an answer) from "no answer" (a temporary error, RFC 8601 temperror).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from waypost.errors import ConfigError

ATTEMPT_TIMEOUT = 2.0  # one try at one server; the resolver retries within its lifetime
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def make_resolver(nameservers: tuple[str, ...], timeout: float) -> dns.resolver.Resolver:
    """The resolver for every authentication lookup. Empty ``nameservers``: the system's
    (/etc/resolv.conf); else exactly those ("ip", "ip:port", "[ipv6]:port"), with no system
    fallback. ``timeout`` bounds each lookup. Raises ``ValueError`` for a malformed server and
    ``ConfigError`` when the system has no resolver configured."""
    if not timeout > 0:
        raise ValueError("DNS timeout must be positive")
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*_split_nameserver(text)) for text in nameservers]
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise ConfigError("no system DNS resolver is configured: set dns_nameservers") from None
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, ATTEMPT_TIMEOUT)
    return resolver


def _split_nameserver(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [ipv6]:port")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    try:
        address, number = ipaddress.ip_address(host), int(port or 53)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address with an optional :port") from None
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return str(address), number


def normalise_domain(domain: str | None) -> str | None:
    """Lower-case A-label form without the root dot; None when it is no DNS host name
    (letters, digits, '-' and '_' in labels of at most 63 octets, RFC 1035 §2.3.4)."""
    if not isinstance(domain, str) or not domain.strip().rstrip("."):
        return None
    try:
        text = dns.name.from_text(domain.strip().rstrip(".")).to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return None
    return text if _HOST_NAME.fullmatch(text) else None


class DnsUnavailable(Exception):
    """No answer (SERVFAIL, timeout, refused): a later retry may get one, so RFC 8601 temperror.
    Not a dkimpy exception on purpose: dkimpy would turn its own DNS errors into a plain fail."""


def lookup(resolver: dns.resolver.Resolver, name: str, rdtype: str, lifetime: float | None = None) -> list[Any]:
    """The records of ``rdtype`` at ``name``; [] when there are none or ``name`` is no DNS name.
    Raises ``DnsUnavailable`` when no server answered."""
    try:
        qname = dns.name.from_text(name)
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return []
    try:
        answer = resolver.resolve(qname, rdtype, search=False, lifetime=lifetime)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as err:
        raise DnsUnavailable(f"{name} {rdtype}: {err}") from err
    return list(answer)


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[bytes]:
    """Each TXT record's strings joined into one (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
    return [b"".join(record.strings) for record in lookup(resolver, name, "TXT")]
