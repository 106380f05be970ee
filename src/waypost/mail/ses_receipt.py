"""Amazon SES's receipt verdicts as an ``AuthVerdict`` (REFERENCE-SES §1c).

Apart from ``auth.py`` so that the SES ingress (and the Lambda that runs it) loads no SPF or
DKIM library: SES has checked the mail, and its words are what the gate judges.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from waypost.mail.resolver import normalise_domain
from waypost.mail.verdict import DMARC_POLICIES, AuthVerdict, DkimResult, clip

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
