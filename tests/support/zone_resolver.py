"""An in-memory stand-in for dnspython's resolver, for unit tests that count the DNS questions
a check asks (the integration tests run a real DNS server on loopback, conftest's ``dns``)."""

from __future__ import annotations

from typing import Any

import dns.name
import dns.rdata
import dns.resolver


class ZoneResolver:
    """Answers from a dict like dnspython's ``Resolver.resolve``: NXDOMAIN for unknown names,
    NoAnswer for other types, NoNameservers (what SERVFAIL becomes) for failing names."""

    lifetime = 1.0

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.failing: set[str] = set()
        self.queries: list[tuple[str, str]] = []

    def add_txt(self, name: str, value: str) -> None:
        chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
        self.records.setdefault((name, "TXT"), []).append(" ".join(f'"{chunk}"' for chunk in chunks))

    def resolve(self, qname: dns.name.Name | str, rdtype: str, search: bool = False,
                lifetime: float | None = None) -> list[Any]:
        name = str(qname).rstrip(".").lower()
        self.queries.append((name, str(rdtype)))
        if name in self.failing:
            raise dns.resolver.NoNameservers()
        if (name, rdtype) in self.records:
            return [dns.rdata.from_text("IN", rdtype, text) for text in self.records[(name, rdtype)]]
        if any(known == name for known, _ in self.records):
            raise dns.resolver.NoAnswer()
        raise dns.resolver.NXDOMAIN()
