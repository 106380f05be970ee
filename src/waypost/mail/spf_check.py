"""SPF (RFC 7208): may the client IP send for the MAIL FROM domain, or for the HELO name when
MAIL FROM is null (§2.4)?

pyspf evaluates the record. Its DNS questions go to the resolver given to ``check_spf`` through
``ResolverQuery``, a subclass of ``spf.query``: the ``spf`` module itself is never changed, so
each check carries its own resolver, and any other user of pyspf in the process gets pyspf as
shipped. (The module is named ``spf_check`` so that ``spf`` always means pyspf.)
"""

from __future__ import annotations

import ipaddress
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.resolver

from waypost.mail.resolver import DnsUnavailable, lookup, normalise_domain
from waypost.mail.verdict import SPF_RESULTS

with warnings.catch_warnings():
    # pyspf 2.0.14 has invalid escape sequences in docstrings: Python warns when it compiles them
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", SyntaxWarning)
    import spf

SPF_TIME_LIMIT = 20.0  # seconds for one check_host(); RFC 7208 §4.6.4 says allow at least 20
_MIN_LOOKUP_TIME = 0.1  # a lookup started with almost no budget left still gets one short try

# the value pyspf keeps for each record type it asks about
_RDATA: dict[str, Callable[[Any], Any]] = {
    "A": lambda r: r.address, "AAAA": lambda r: r.address,
    "MX": lambda r: (r.preference, r.exchange.to_text(omit_final_dot=True)),
    "PTR": lambda r: r.target.to_text(omit_final_dot=True),
    "TXT": lambda r: tuple(r.strings), "SPF": lambda r: tuple(r.strings),
}


@dataclass(frozen=True)
class SpfOutcome:
    """The result word (RFC 8601 §2.7.2), the identity checked and its scope, and why."""

    result: str
    domain: str | None
    scope: str
    explanation: str


class ResolverQuery(spf.query):
    """pyspf's ``query`` with every DNS question sent to one dnspython resolver.

    pyspf 2.0.14's ``query.dns`` asks the module-global ``spf.DNSLookup``. This override keeps
    the rest of that method: the per-query cache, the void-lookup limit (RFC 7208 §4.6.4) and
    the time budget ``querytime`` shared by all lookups of one check. dnspython follows CNAMEs
    itself and the records come back under the name asked, so pyspf's CNAME bookkeeping would
    have nothing to do and is left out. Re-read ``spf.query.dns`` when pyspf is upgraded.
    """

    def __init__(self, resolver: dns.resolver.Resolver, *, i: str, s: str, h: str, querytime: float) -> None:
        self.dns_resolver = resolver  # set first: nothing may look up before it exists
        super().__init__(i=i, s=s, h=h, querytime=querytime)

    def dns(self, name: str, qtype: str, cnames: Any = None, ignore_void: bool = False) -> list[Any]:
        """pyspf's contract: the values of ``qtype`` at ``name``, [] for none; raises
        ``spf.TempError`` when DNS gave no answer, ``spf.PermError`` past the void limit."""
        query_name = _query_name(name)
        if query_name is None:
            return []
        result: list[Any] = self.cache.get((query_name, qtype), [])
        if not result:
            result = self._fetch(query_name, qtype)
        if not result and not ignore_void:
            self._count_void_lookup()
        return result

    def _fetch(self, name: str, qtype: str) -> list[Any]:
        if self.querytime < 0:
            raise spf.TempError("DNS Error: exceeded max query lookup time")
        timeout = self.querytime if 0 < self.querytime < self.timeout else self.timeout
        started = time.monotonic()
        for value in self._ask(name, qtype, timeout):
            self.cache.setdefault((name, qtype), []).append(value)
        if self.querytime > 0:
            self.querytime -= time.monotonic() - started
        cached: list[Any] = self.cache.get((name, qtype), [])
        return cached

    def _ask(self, name: str, qtype: str, timeout: float) -> list[Any]:
        convert = _RDATA.get(qtype)
        if convert is None:
            return []
        lifetime = max(_MIN_LOOKUP_TIME, min(timeout, self.dns_resolver.lifetime))
        try:
            records = lookup(self.dns_resolver, name, qtype, lifetime=lifetime)
        except DnsUnavailable as err:
            raise spf.TempError(f"DNS {err}") from err
        return [convert(record) for record in records]

    def _count_void_lookup(self) -> None:
        # RFC 7208 §4.6.4: more than two lookups answering nothing is a permerror
        self.void_lookups += 1
        if self.void_lookups > spf.MAX_VOID_LOOKUPS:
            raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")


def _query_name(name: Any) -> str | None:
    """The name as pyspf asks it: lower case, no root dot; None when a label is empty or
    longer than 63 octets (RFC 1035 §2.3.4), which pyspf answers with no records."""
    if not name:
        raise Exception("Invalid query")  # pyspf's own error here; check_spf makes it permerror
    text = str(name).removesuffix(".")
    if not all(0 < len(label) < 64 for label in text.split(".")):
        return None
    return text.lower()


def check_spf(resolver: dns.resolver.Resolver, peer_ip: str | None, helo: str | None,
              mail_from: str | None) -> SpfOutcome:
    """check_host() (RFC 7208 §4) for ``peer_ip`` and the MAIL FROM domain, or the HELO name
    when MAIL FROM is null. Never raises: broken input is none or permerror."""
    sender = (mail_from or "").strip().removeprefix("<").removesuffix(">").strip()
    scope = "mailfrom" if sender else "helo"
    # pyspf splits at the first '@', but a quoted local part may hold one: split at the last
    local, _, raw_domain = sender.rpartition("@") if sender else ("postmaster", "", helo or "")
    domain = normalise_domain(raw_domain)
    if domain is None:
        return SpfOutcome("none", None, scope, f"no valid {scope} domain to check")
    try:
        address = str(ipaddress.ip_address((peer_ip or "").strip()))
    except ValueError:
        return SpfOutcome("none", domain, scope, "no usable client IP address")
    local = local if local and "@" not in local else "postmaster"
    return _evaluate(ResolverQuery(resolver, i=address, s=f"{local}@{domain}",
                                   h=normalise_domain(helo) or "unknown", querytime=SPF_TIME_LIMIT),
                     domain, scope)


def _evaluate(query: ResolverQuery, domain: str, scope: str) -> SpfOutcome:
    try:
        result, _code, explanation = query.check()
    except Exception as err:  # pyspf raises bare exceptions on some hostile input
        return SpfOutcome("permerror", domain, scope, f"SPF evaluation failed: {type(err).__name__}: {err}")
    if result not in SPF_RESULTS:
        return SpfOutcome("permerror", domain, scope, f"unexpected SPF result {result!r}: {explanation}")
    return SpfOutcome(result, domain, scope, str(explanation) or ("no SPF record" if result == "none" else ""))
