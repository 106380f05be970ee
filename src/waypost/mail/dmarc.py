"""DMARC (RFC 7489): the From domain's policy, found in DNS, and whether an SPF or DKIM
pass aligns with the From domain.

The organizational domain comes from the Public Suffix List that the ``publicsuffixlist``
package ships, so finding one never touches the network.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import dns.resolver
from publicsuffixlist import PublicSuffixList

from waypost.mail.resolver import DnsUnavailable, txt_records
from waypost.mail.verdict import DMARC_POLICIES, DkimResult, clip


@functools.cache
def _suffix_list() -> PublicSuffixList:
    return PublicSuffixList()  # the list bundled with the package; no download


def organizational_domain(domain: str) -> str:
    """The registrable domain (RFC 7489 §3.2): one label below the public suffix, by the whole
    bundled Public Suffix List, private section included, so user1.github.io and user2.github.io
    never align. A name that is itself a public suffix is its own organizational domain."""
    return _suffix_list().privatesuffix(domain) or domain


def aligned(identifier: str | None, from_domain: str | None, mode: str) -> bool:
    """RFC 7489 §3.1: strict means the same name, relaxed the same organizational domain."""
    if not identifier or not from_domain:
        return False
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


@dataclass(frozen=True)
class PolicyDiscovery:
    """Outcome of DMARC policy discovery (RFC 7489 §6.6.3)."""

    status: str  # "found", "none", "temperror" or "permerror"
    note: str
    policy: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    record_found: bool = False


_DMARC_VERSION = re.compile(rb"\s*v\s*=\s*DMARC1\s*(;|$)")


def _dmarc_tags(record: bytes) -> dict[str, str]:
    """Tag names and values; a tag without '=' is a syntax error to ignore (RFC 7489 §6.3)."""
    tags: dict[str, str] = {}
    for part in record.decode("ascii", "replace").split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip(), value.strip())
    return tags


def _parse_record(record: bytes, location: str, for_subdomain: bool) -> PolicyDiscovery:
    tags = _dmarc_tags(record)
    p, sp = tags.get("p", "").lower(), tags.get("sp", "").lower() or None
    where = f"_dmarc.{location}" + (" (organizational domain)" if for_subdomain else "")
    modes = {key: tags.get(key, "r").lower() if tags.get(key, "r").lower() in ("r", "s") else "r"
             for key in ("adkim", "aspf")}
    if p in DMARC_POLICIES and sp in (None, *DMARC_POLICIES):
        policy = (sp or p) if for_subdomain else p
    elif tags.get("rua"):  # RFC 7489 §6.6.3 step 6: a bad p=/sp= with rua= acts as p=none
        policy = "none"
    else:
        return PolicyDiscovery("permerror", clip(f"{where}: invalid p= or sp= and no rua="), record_found=True)
    note = f"{where}: p={policy} adkim={modes['adkim']} aspf={modes['aspf']}"
    return PolicyDiscovery("found", note, policy, modes["adkim"], modes["aspf"], True)


def discover_policy(resolver: dns.resolver.Resolver, from_domain: str) -> PolicyDiscovery:
    """_dmarc.<From domain>, then _dmarc.<organizational domain> (no tree walk, RFC 7489 §6.6.3)."""
    for location in dict.fromkeys((from_domain, organizational_domain(from_domain))):
        try:
            texts = txt_records(resolver, f"_dmarc.{location}")
        except DnsUnavailable as err:
            return PolicyDiscovery("temperror", clip(f"policy lookup failed: {err}"))
        records = [text for text in texts if _DMARC_VERSION.match(text)]
        if len(records) > 1:
            return PolicyDiscovery("permerror", f"{len(records)} DMARC records at _dmarc.{location}",
                                   record_found=True)
        if records:
            return _parse_record(records[0], location, for_subdomain=location != from_domain)
    return PolicyDiscovery("none", f"no DMARC record for {from_domain}")


def dmarc_result(discovery: PolicyDiscovery, spf_result: str, spf_aligned: bool,
                 signatures: tuple[DkimResult, ...]) -> str:
    """The DMARC result (RFC 7489 §11.2) once policy, SPF and DKIM are known: pass for an
    aligned pass of either (§4.2), and only a domain that publishes a policy can pass."""
    if discovery.status != "found":
        return discovery.status
    if (spf_result == "pass" and spf_aligned) or any(s.result == "pass" and s.aligned for s in signatures):
        return "pass"
    # an aligned identifier whose check could not finish might still pass on a retry
    if (spf_result == "temperror" and spf_aligned) or any(s.result == "temperror" and s.aligned for s in signatures):
        return "temperror"
    return "fail"
