"""SPF records read without evaluating them (RFC 7208).

A small reader of our own: pyspf (our verifier) evaluates a record for one client IP and stops
at the first matching mechanism, so it cannot count every DNS-querying term of a record tree;
checkdmarc can, but would bring a dozen dependencies (requests, pyleri, expiringdict, ...) for
this one count. The grammar needed is small: terms separated by spaces, a qualifier, a
mechanism or a modifier (§4.6.1, §12).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from waypost.doctor.records import Lookups

MAX_LOOKUPS = 10  # RFC 7208 §4.6.4: include, a, mx, ptr, exists and redirect together
MAX_VOID_LOOKUPS = 2  # RFC 7208 §4.6.4: lookups answered NXDOMAIN or with no records
_MAX_DEPTH = 20  # a loop of includes stops here (each step counts anyway)
_QUERYING = ("include", "a", "mx", "ptr", "exists")
_VERSION = re.compile(r"v=spf1(\s|$)", re.IGNORECASE)
_MODIFIER = re.compile(r"([a-z][a-z0-9_.-]*)=(.*)", re.IGNORECASE)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def spf_records(texts: list[str]) -> list[str]:
    """The TXT strings that are SPF records (§4.5: "v=spf1" then a space or the end)."""
    return [text for text in texts if _VERSION.match(text.strip())]


@dataclass
class Term:
    qualifier: str  # + - ~ ?
    name: str  # mechanism or modifier name, lower-case
    value: str  # the domain-spec, address or modifier value ("" when none)
    modifier: bool


def parse(record: str) -> list[Term]:
    terms = []
    for word in record.split()[1:]:
        if match := _MODIFIER.fullmatch(word):
            terms.append(Term("", match.group(1).lower(), match.group(2), True))
            continue
        qualifier = word[0] if word[0] in "+-~?" else "+"
        body = word[1:] if word[0] in "+-~?" else word
        cut = min((body.find(sep) for sep in ":/" if sep in body), default=-1)
        # "a:host/24" names host; "a/24" the current domain (the "/" stays to tell them apart)
        name, value = (body, "") if cut < 0 else (body[:cut], body[cut + 1:] if body[cut] == ":" else body[cut:])
        terms.append(Term(qualifier, name.lower(), value, False))
    return terms


@dataclass
class SpfTree:
    """What a record and everything it includes add up to."""

    lookups: int = 0
    void: int = 0
    includes: list[str] = field(default_factory=list)  # every domain reached by include/redirect
    networks: list[Network] = field(default_factory=list)  # ip4/ip6, and what a and mx resolved to
    all_qualifier: str | None = None  # of the top record (or its redirect target)
    problems: list[str] = field(default_factory=list)


def walk(lookups: Lookups, domain: str) -> SpfTree:
    """Count recursively, as a receiver would on the longest path (every term visited).
    Raises ``DnsUnavailable`` when a lookup gets no answer."""
    tree = SpfTree()
    tree.all_qualifier = _visit(lookups, domain, tree, depth=0, seen=set())
    return tree


def _visit(lookups: Lookups, domain: str, tree: SpfTree, depth: int, seen: set[str]) -> str | None:
    texts = lookups.txt(domain)
    tree.void += depth > 0 and not texts
    records = spf_records(texts)
    if len(records) != 1:
        tree.problems.append(f"{domain}: {len(records)} SPF records (a receiver gets permerror)")
        return None
    if domain in seen or depth > _MAX_DEPTH:
        tree.problems.append(f"{domain}: included in a loop")
        return None
    seen = seen | {domain}
    terms = parse(records[0])
    final = None
    for term in terms:
        final = _term(lookups, domain, term, tree, depth, seen) or final
    return final


def _term(lookups: Lookups, domain: str, term: Term, tree: SpfTree, depth: int, seen: set[str]) -> str | None:
    """Counts one term; returns the qualifier when it is "all" or the redirect target's."""
    if term.modifier:
        if term.name != "redirect":
            return None
        tree.lookups += 1
        tree.includes.append(term.value.lower())
        return _nested(lookups, term.value, tree, depth, seen)
    if term.name == "all":
        return term.qualifier
    if term.name in ("ip4", "ip6"):
        _network(term.value, tree)
    elif term.name in _QUERYING:
        tree.lookups += 1
        _resolve(lookups, domain, term, tree, depth, seen)
    else:
        tree.problems.append(f"{domain}: unknown mechanism {term.name!r} (permerror)")
    return None


def _nested(lookups: Lookups, target: str, tree: SpfTree, depth: int, seen: set[str]) -> str | None:
    if "%" in target:  # a macro depends on the message; nothing to follow here
        return None
    return _visit(lookups, target.lower(), tree, depth + 1, seen)


def _resolve(lookups: Lookups, domain: str, term: Term, tree: SpfTree, depth: int, seen: set[str]) -> None:
    target = (term.value.split("/")[0] if term.value and not term.value.startswith("/") else domain).lower()
    if term.name == "include":
        tree.includes.append(target)
        _nested(lookups, target, tree, depth, seen)
    elif "%" in target or term.name == "ptr":  # macros and ptr depend on the connecting client
        return
    elif term.name == "mx":
        exchanges = lookups.mx(target)
        tree.void += not exchanges
        for _, exchange in exchanges[:MAX_LOOKUPS]:  # §4.6.4: at most 10 address lookups per mx
            _addresses(lookups.addresses(exchange), tree)
    else:  # a, exists
        found = lookups.addresses(target)
        tree.void += not found
        if term.name == "a":
            _addresses(found, tree)


def _addresses(found: list[str], tree: SpfTree) -> None:
    tree.networks += [ipaddress.ip_network(address) for address in found]


def _network(value: str, tree: SpfTree) -> None:
    try:
        tree.networks.append(ipaddress.ip_network(value, strict=False))
    except ValueError:
        tree.problems.append(f"bad address {value!r}")


def covers(tree: SpfTree, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in tree.networks)
