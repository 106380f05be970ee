"""``ResolverQuery`` (mail/spf_check.py) against pyspf as shipped: for each SPF situation both
give the same result, explanation and DNS questions in the same order. The reference is pyspf's
own ``query`` with its module-global ``DNSLookup`` replaced, for the length of one test, by the
lookup Waypost used to install there, so what the subclass reimplements (cache, void-lookup
limit, time budget, name checks) is compared with pyspf's own code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.zone_resolver import ZoneResolver
from waypost.mail.resolver import DnsUnavailable, lookup
from waypost.mail.spf_check import SPF_TIME_LIMIT, ResolverQuery, check_spf, spf

OUR_IP = "192.0.2.10"
FOREIGN_IP = "203.0.113.66"


def zone_of(records: dict[tuple[str, str], list[str]], failing: frozenset[str] = frozenset()) -> ZoneResolver:
    """A resolver answering from ``records`` (test_auth's), with ``failing`` names in SERVFAIL."""
    zone = ZoneResolver()
    zone.records = dict(records)
    zone.failing = set(failing)
    return zone


_RDATA: dict[str, Callable[[Any], Any]] = {
    "A": lambda r: r.address, "AAAA": lambda r: r.address,
    "MX": lambda r: (r.preference, r.exchange.to_text(omit_final_dot=True)),
    "PTR": lambda r: r.target.to_text(omit_final_dot=True),
    "TXT": lambda r: tuple(r.strings), "SPF": lambda r: tuple(r.strings),
}


def module_lookup(zone: ZoneResolver) -> Callable[..., list[tuple[Any, Any]]]:
    """The function Waypost used to put in place of ``spf.DNSLookup`` (before ResolverQuery)."""

    def dns_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[tuple[Any, Any]]:
        convert = _RDATA.get(qtype)
        if convert is None:
            return []
        try:
            records = lookup(zone, name, qtype, lifetime=max(0.1, min(timeout, zone.lifetime)))  # type: ignore[arg-type]
        except DnsUnavailable as err:
            raise spf.TempError(f"DNS {err}") from err
        return [((name, qtype), convert(record)) for record in records]

    return dns_lookup


def txt(value: str) -> str:
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))


INCLUDES = " ".join(f"include:i{n}.example.org" for n in range(11))
CASES: dict[str, dict[tuple[str, str], list[str]]] = {
    "ip4 pass": {("example.org", "TXT"): [txt(f"v=spf1 ip4:{OUR_IP} -all")]},
    "softfail": {("example.org", "TXT"): [txt("v=spf1 ip4:198.51.100.1 ~all")]},
    "include": {("example.org", "TXT"): [txt("v=spf1 include:_spf.example.net -all")],
                ("_spf.example.net", "TXT"): [txt(f"v=spf1 ip4:{OUR_IP}/24 -all")]},
    "a": {("example.org", "TXT"): [txt("v=spf1 a -all")], ("example.org", "A"): [OUR_IP]},
    "mx": {("example.org", "TXT"): [txt("v=spf1 mx -all")], ("example.org", "MX"): ["10 mx.example.org."],
           ("mx.example.org", "A"): [OUR_IP]},
    "ptr": {("example.org", "TXT"): [txt("v=spf1 ptr -all")],
            ("10.2.0.192.in-addr.arpa", "PTR"): ["mx.example.org."], ("mx.example.org", "A"): [OUR_IP]},
    "exists with a macro": {("example.org", "TXT"): [txt("v=spf1 exists:%{i}.allow.example.org -all")],
                            (f"{OUR_IP}.allow.example.org", "A"): ["127.0.0.2"]},
    "redirect": {("example.org", "TXT"): [txt("v=spf1 redirect=other.example.org")],
                 ("other.example.org", "TXT"): [txt(f"v=spf1 ip4:{OUR_IP} -all")]},
    "void lookups over the limit": {("example.org", "TXT"): [
        txt("v=spf1 a:n1.example.org a:n2.example.org a:n3.example.org -all")]},
    "lookups over the limit": {("example.org", "TXT"): [txt(f"v=spf1 {INCLUDES} -all")],
                               **{(f"i{n}.example.org", "TXT"): [txt("v=spf1 -all")] for n in range(11)}},
    "a label over 63 octets": {("example.org", "TXT"): [txt(f"v=spf1 a:{'x' * 64}.example.org -all")]},
    "an unknown macro": {("example.org", "TXT"): [txt("v=spf1 a:%{z}.example.org -all")]},
    "two records": {("example.org", "TXT"): [txt("v=spf1 -all"), txt("v=spf1 +all")]},
    "no record": {("example.org", "A"): [OUR_IP]},
    "an unknown domain": {},
    "the same name twice (cache)": {("example.org", "TXT"): [txt("v=spf1 a a:example.org -all")],
                                    ("example.org", "A"): ["198.51.100.1"]},
}


def run_stock(zone: ZoneResolver, monkeypatch: pytest.MonkeyPatch, ip: str) -> tuple[Any, ...]:
    with monkeypatch.context() as patch:
        patch.setattr(spf, "DNSLookup", module_lookup(zone))
        query = spf.query(i=ip, s="alice@example.org", h="mx.example.org", querytime=SPF_TIME_LIMIT)
        return (*query.check(), query.lookups, query.void_lookups)


def run_ours(zone: ZoneResolver, ip: str) -> tuple[Any, ...]:
    query = ResolverQuery(zone, i=ip, s="alice@example.org", h="mx.example.org",  # type: ignore[arg-type]
                          querytime=SPF_TIME_LIMIT)
    return (*query.check(), query.lookups, query.void_lookups)


@pytest.mark.parametrize("ip", [OUR_IP, FOREIGN_IP])
@pytest.mark.parametrize("case", list(CASES))
def test_the_query_answers_as_pyspf_does(case: str, ip: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stock_zone, our_zone = zone_of(CASES[case]), zone_of(CASES[case])
    assert run_ours(our_zone, ip) == run_stock(stock_zone, monkeypatch, ip)
    assert our_zone.queries == stock_zone.queries


def test_dns_trouble_is_temperror_as_in_pyspf(monkeypatch: pytest.MonkeyPatch) -> None:
    records = {("example.org", "TXT"): [txt("v=spf1 include:broken.example.net -all")]}
    failing = frozenset({"broken.example.net"})
    ours = run_ours(zone_of(records, failing), OUR_IP)
    assert ours[0] == "temperror"
    assert ours == run_stock(zone_of(records, failing), monkeypatch, OUR_IP)


@pytest.mark.parametrize("querytime", [-1.0, 0.0, 5.0])
def test_the_time_budget_is_kept_as_in_pyspf(querytime: float, monkeypatch: pytest.MonkeyPatch) -> None:
    records = {("example.org", "TXT"): [txt("v=spf1 -all")]}

    def ask(query: Any) -> Any:
        query.querytime = querytime
        try:
            return query.dns("example.org", "TXT")
        except spf.TempError:
            return "temperror"

    with monkeypatch.context() as patch:
        patch.setattr(spf, "DNSLookup", module_lookup(zone_of(records)))
        stock = ask(spf.query(i=OUR_IP, s="alice@example.org", h="mx.example.org"))
    assert ask(ResolverQuery(zone_of(records), i=OUR_IP, s="alice@example.org",  # type: ignore[arg-type]
                             h="mx.example.org", querytime=0)) == stock
    assert (stock == "temperror") == (querytime < 0)


def test_an_empty_name_raises_as_in_pyspf() -> None:
    query = ResolverQuery(zone_of({}), i=OUR_IP, s="alice@example.org", h="mx.example.org",  # type: ignore[arg-type]
                          querytime=0)
    with pytest.raises(Exception, match="Invalid query"):
        query.dns("", "TXT")


def test_check_spf_never_touches_pyspfs_module(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pyspf's module-level lookup was used")

    monkeypatch.setattr(spf, "DNSLookup", forbidden)
    zone = zone_of(CASES["include"])
    outcome = check_spf(zone, OUR_IP, "mx.example.org", "alice@example.org")  # type: ignore[arg-type]
    assert (outcome.result, outcome.domain, outcome.scope) == ("pass", "example.org", "mailfrom")
    assert ("_spf.example.net", "TXT") in zone.queries
