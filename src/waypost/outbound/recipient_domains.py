"""Whether a recipient's domain takes mail at all, asked once per domain before the first send.

A domain that publishes a null MX (RFC 7505) or has no mail host (no MX, and no A/AAAA for
the implicit MX of RFC 5321 §5.1) will never accept the message: sending it anyway costs a
bounce, and bounces count against the sender's reputation. The answer is cached in memory per
process for a while, so a run of messages to one domain asks DNS once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import dns.resolver

from waypost.errors import TransientError
from waypost.mail.resolver import DnsUnavailable, lookup, normalise_domain

DEFAULT_TTL = 3600.0  # seconds an answer is kept; DNS changes of a mail domain are rare and slow


class DomainLookupUnavailable(TransientError):
    """No DNS answer for the recipient's domain (SERVFAIL, timeout): the send is retried later,
    as any other temporary failure is, and the message is not failed."""


class RecipientDomains:
    """``refusal(address)``: why mail to ``address`` cannot be delivered (its domain has a null
    MX or no mail host), or None when it can (or the domain is exempt). Raises
    ``DomainLookupUnavailable`` when DNS gave no answer; that is never cached."""

    def __init__(self, resolver: Callable[[], dns.resolver.Resolver], *, exempt: Iterable[str] = (),
                 ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._make_resolver = resolver  # built at the first lookup: a process that never sends needs none
        self._resolver: dns.resolver.Resolver | None = None
        self.exempt = frozenset(domain.lower().rstrip(".") for domain in exempt)
        self.ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def refusal(self, address: str) -> str | None:
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        if domain in self.exempt or domain.startswith("["):  # an address literal names no DNS domain
            return None
        name = normalise_domain(domain)
        if name is None:
            return f"{domain!r} is not a DNS domain name"
        now = self._clock()
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            answer = self._ask(name)
        except DnsUnavailable as err:
            raise DomainLookupUnavailable(f"no DNS answer for the recipient domain {name}: {err}") from err
        with self._lock:
            self._cache[name] = (now + self.ttl, answer)
        return answer

    def _ask(self, name: str) -> str | None:
        resolver = self._resolver
        if resolver is None:
            resolver = self._resolver = self._make_resolver()
        exchanges = lookup(resolver, name, "MX")
        if exchanges:
            # RFC 7505 §3: a null MX is the only MX of its domain, preference 0, exchange "."
            if len(exchanges) == 1 and exchanges[0].preference == 0 and exchanges[0].exchange.to_text() == ".":
                return f"{name} accepts no mail (null MX, RFC 7505)"
            return None
        # RFC 5321 §5.1: no MX, so the domain itself is the mail host if it has an address
        if lookup(resolver, name, "A") or lookup(resolver, name, "AAAA"):
            return None
        return f"{name} has no mail host (no MX and no A/AAAA record, RFC 5321 §5.1)"
