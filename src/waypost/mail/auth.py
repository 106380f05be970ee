"""Sender authentication of inbound mail: SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489),
reported as one ``AuthVerdict`` whichever ingress delivered the mail.

Only what we verify ourselves (or what Amazon SES states in its receipt) counts: an
``Authentication-Results`` header that arrives with the message is never read, since anyone can
write one (RFC 8601 §5). Every DNS question goes through the one dnspython ``Resolver`` given to
``verify``: pyspf gets it through a query subclass (spf_check.py), dkimpy as its ``dnsfunc``
(dkim_verify.py), and the DMARC policy lookup is ours (dmarc.py).

This module runs the three checks; the checks live in their own modules, SES receipts are mapped
in ses_receipt.py (which the SES ingress imports alone, without the checks' libraries), and the
names other code imports from here are re-exported.

``verify`` never raises: hostile or broken mail becomes permerror, DNS trouble temperror.
"""

from __future__ import annotations

import dataclasses
import logging

import dns.resolver

from waypost.mail.dkim_verify import MAX_DKIM_SIGNATURES, MAX_HEADER_FIELDS, MAX_SIGNED_FIELDS, check_dkim
from waypost.mail.dmarc import PolicyDiscovery, aligned, discover_policy, dmarc_result, organizational_domain
from waypost.mail.resolver import make_resolver, normalise_domain
from waypost.mail.ses_receipt import from_ses_receipt
from waypost.mail.spf_check import SPF_TIME_LIMIT, SpfOutcome, check_spf
from waypost.mail.spooled import SpooledMessage
from waypost.mail.verdict import (
    DKIM_RESULTS,
    DMARC_POLICIES,
    DMARC_RESULTS,
    SPF_RESULTS,
    AuthVerdict,
    DkimResult,
    clip,
)

__all__ = [
    "DKIM_RESULTS", "DMARC_POLICIES", "DMARC_RESULTS", "MAX_DKIM_SIGNATURES", "MAX_HEADER_FIELDS",
    "MAX_SIGNED_FIELDS", "SPF_RESULTS", "SPF_TIME_LIMIT", "AuthVerdict", "DkimResult", "from_ses_receipt",
    "make_resolver", "normalise_domain", "organizational_domain", "verify",
]

log = logging.getLogger(__name__)


def verify(raw: bytes | SpooledMessage, *, peer_ip: str | None, helo: str | None, mail_from: str | None,
           from_domain: str | None, resolver: dns.resolver.Resolver) -> AuthVerdict:
    """Check SPF for the client IP and MAIL FROM (HELO when MAIL FROM is null), every DKIM
    signature (up to MAX_DKIM_SIGNATURES), and DMARC for ``from_domain`` (the RFC5322.From
    domain, which the caller extracts; None gives dmarc=none). A ``SpooledMessage`` is read
    from its file, never whole. Never raises."""
    try:
        return _verify(raw, peer_ip, helo, mail_from, from_domain, resolver)
    except Exception as err:  # a bug or a library surprise must not lose the message: fail closed
        log.exception("authentication checks failed")
        return AuthVerdict("temperror", None, False, (), "temperror", None, False, normalise_domain(from_domain),
                           "smtp", clip(f"internal error: {type(err).__name__}: {err}"))


def _verify(raw: bytes | SpooledMessage, peer_ip: str | None, helo: str | None, mail_from: str | None,
            from_domain: str | None, resolver: dns.resolver.Resolver) -> AuthVerdict:
    spf_outcome = check_spf(resolver, peer_ip, helo, mail_from)
    signatures, dkim_note = check_dkim(raw if isinstance(raw, SpooledMessage) else bytes(raw), resolver)
    domain = normalise_domain(from_domain)
    if domain is None:
        # RFC 7489 §11.2: none also means that no aligned identifier could be extracted
        discovery = PolicyDiscovery("none", f"no usable RFC5322.From domain ({from_domain!r})")
    else:
        discovery = discover_policy(resolver, domain)
    spf_aligned = aligned(spf_outcome.domain, domain, discovery.aspf)
    dkim_results = tuple(dataclasses.replace(s, aligned=aligned(s.domain, domain, discovery.adkim))
                         for s in signatures)
    return AuthVerdict(
        spf=spf_outcome.result, spf_domain=spf_outcome.domain, spf_aligned=spf_aligned, dkim=dkim_results,
        dmarc=dmarc_result(discovery, spf_outcome.result, spf_aligned, dkim_results), dmarc_policy=discovery.policy,
        dmarc_record_found=discovery.record_found, from_domain=domain, source="smtp",
        detail=_detail(spf_outcome, dkim_note, dkim_results, discovery), spf_scope=spf_outcome.scope,
    )


def _detail(spf_outcome: SpfOutcome, dkim_note: str, dkim_results: tuple[DkimResult, ...],
            discovery: PolicyDiscovery) -> str:
    """What each check found, in words, for the operator (the verdict's ``detail``)."""
    detail = (f"spf: {spf_outcome.result} for {spf_outcome.scope} {spf_outcome.domain}: "
              f"{clip(spf_outcome.explanation)}; dkim: {dkim_note}"
              f"{''.join(f' [{s.domain}/{s.selector}: {s.reason}]' for s in dkim_results)}; dmarc: {discovery.note}")
    return clip(detail, 2000)


