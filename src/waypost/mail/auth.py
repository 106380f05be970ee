"""Sender authentication of inbound mail: SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489),
reported as one ``AuthVerdict`` whichever ingress delivered the mail.

Only what we verify ourselves (or what Amazon SES states in its receipt) counts: an
``Authentication-Results`` header that arrives with the message is never read, since anyone can
write one (RFC 8601 §5). Every DNS question goes through the one dnspython ``Resolver`` given to
``verify``: pyspf gets it through a query subclass (spf_check.py), dkimpy as its ``dnsfunc``
(dkim_verify.py), and the DMARC policy lookup is ours (dmarc.py).

This module runs the three checks and maps SES receipts; the checks live in their own modules
and the names other code imports from here are re-exported.

``verify`` never raises: hostile or broken mail becomes permerror, DNS trouble temperror.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import dns.resolver

from waypost.mail.dkim_verify import MAX_DKIM_SIGNATURES, MAX_HEADER_FIELDS, MAX_SIGNED_FIELDS, check_dkim
from waypost.mail.dmarc import PolicyDiscovery, aligned, discover_policy, dmarc_result, organizational_domain
from waypost.mail.resolver import make_resolver, normalise_domain
from waypost.mail.spf_check import SPF_TIME_LIMIT, SpfOutcome, check_spf
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


def verify(raw: bytes, *, peer_ip: str | None, helo: str | None, mail_from: str | None,
           from_domain: str | None, resolver: dns.resolver.Resolver) -> AuthVerdict:
    """Check SPF for the client IP and MAIL FROM (HELO when MAIL FROM is null), every DKIM
    signature (up to MAX_DKIM_SIGNATURES), and DMARC for ``from_domain`` (the RFC5322.From
    domain, which the caller extracts; None gives dmarc=none). Never raises."""
    try:
        return _verify(raw, peer_ip, helo, mail_from, from_domain, resolver)
    except Exception as err:  # a bug or a library surprise must not lose the message: fail closed
        log.exception("authentication checks failed")
        return AuthVerdict("temperror", None, False, (), "temperror", None, False, normalise_domain(from_domain),
                           "smtp", clip(f"internal error: {type(err).__name__}: {err}"))


def _verify(raw: bytes, peer_ip: str | None, helo: str | None, mail_from: str | None,
            from_domain: str | None, resolver: dns.resolver.Resolver) -> AuthVerdict:
    spf_outcome = check_spf(resolver, peer_ip, helo, mail_from)
    signatures, dkim_note = check_dkim(bytes(raw), resolver)
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


_SES_WORDS = {"PASS": "pass", "FAIL": "fail", "GRAY": "none", "PROCESSING_FAILED": "temperror"}
_SES_VERDICTS = ("spfVerdict", "dkimVerdict", "dmarcVerdict", "spamVerdict", "virusVerdict")


def _ses_status(value: Any, *, bare_string: bool = False) -> str | None:
    """The upper-cased ``status`` of a verdict object; None when absent, "MALFORMED" when it
    is there in a shape SES does not send (a bare string only where ``bare_string``)."""
    if value is None:
        return None
    status = value if bare_string and isinstance(value, str) else \
        value.get("status") if isinstance(value, Mapping) else None
    return status.strip().upper() if isinstance(status, str) and status.strip() else "MALFORMED"


def _ses_word(status: str | None) -> str:
    """GRAY (no verdict: unsigned, no record) is none; a status SES never documented is permerror."""
    return "none" if status is None else _SES_WORDS.get(status, "permerror")


def from_ses_receipt(receipt: Mapping[str, Any], from_domain: str | None) -> AuthVerdict:
    """Map the ``receipt`` of an SES inbound notification (REFERENCE-SES §1c) to an AuthVerdict.

    SES says whether some DKIM signature passed, not whose, and whether DMARC passed, not by
    which identifier. So DKIM becomes one DkimResult for the From domain (no selector), marked
    aligned only when SES reports both DKIM and DMARC pass; SPF likewise counts as aligned only
    when SPF and DMARC pass. When both pass, at least one of them was aligned but SES does not
    say which: both are marked. ``dmarc`` itself is SES's word, so ``dmarc_pass`` stays exact.
    ``dmarcPolicy`` (a string, or an object with ``status`` in older documents) is present only
    when DMARC failed. Never raises.
    """
    receipt = receipt if isinstance(receipt, Mapping) else {}
    status = {key: _ses_status(receipt.get(key)) for key in _SES_VERDICTS}
    spf_word, dkim_word, dmarc_word = (_ses_word(status[key]) for key in _SES_VERDICTS[:3])
    dmarc_passed = dmarc_word == "pass"
    domain = normalise_domain(from_domain)
    dkim_results = () if status["dkimVerdict"] is None else (
        DkimResult(domain or "", "", dkim_word, dmarc_passed and dkim_word == "pass",
                   f"SES dkimVerdict {status['dkimVerdict']}: no per-signature detail"),)
    policy_word = (_ses_status(receipt.get("dmarcPolicy"), bare_string=True) or "").lower()
    policy = policy_word if policy_word in DMARC_POLICIES else None
    detail = "Amazon SES receipt: " + " ".join(f"{key}={status[key] or '-'}" for key in _SES_VERDICTS)
    return AuthVerdict(
        spf=spf_word, spf_domain=None, spf_aligned=dmarc_passed and spf_word == "pass", dkim=dkim_results,
        dmarc=dmarc_word, dmarc_policy=policy, dmarc_record_found=dmarc_word in ("pass", "fail") or policy is not None,
        from_domain=domain, source="ses", detail=clip(detail + (f" dmarcPolicy={policy}" if policy else "")),
        spam=(status["spamVerdict"] or "").lower() or None, virus=(status["virusVerdict"] or "").lower() or None,
    )
