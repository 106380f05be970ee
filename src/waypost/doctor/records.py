"""The DNS questions the doctor asks, all through the one configured resolver
(``dns_nameservers``), each answer in the plain form the checks compare."""

from __future__ import annotations

import dns.resolver
import dns.reversename

from waypost.mail.resolver import lookup, txt_records

NULL_MX = (0, "")  # RFC 7505: one MX, preference 0, exchange "." (no mail accepted)


def _host(name: object) -> str:
    return str(name).rstrip(".").lower()


class Lookups:
    """Empty answers for names without such records; ``DnsUnavailable`` when no server
    answered (a check then says it could not tell, never that the record is missing)."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    def txt(self, name: str) -> list[str]:
        return [text.decode("utf-8", "replace") for text in txt_records(self.resolver, name)]

    def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange) sorted by preference; a null MX has exchange ""."""
        return sorted((int(r.preference), _host(r.exchange)) for r in lookup(self.resolver, name, "MX"))

    def addresses(self, name: str) -> list[str]:
        return [r.address for rdtype in ("A", "AAAA") for r in lookup(self.resolver, name, rdtype)]

    def ptr(self, address: str) -> list[str]:
        return [_host(r.target) for r in lookup(self.resolver, dns.reversename.from_address(address).to_text(),
                                                "PTR")]

    def cname(self, name: str) -> str | None:
        found = lookup(self.resolver, name, "CNAME")
        return _host(found[0].target) if found else None
