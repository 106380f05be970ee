"""AuthVerdict.awaits_dns: which verdicts a retry could still change (RFC 7489 §7 tempfail)."""

from __future__ import annotations

import pytest

from waypost.mail.verdict import AuthVerdict, DkimResult


def verdict(*, dmarc: str = "none", record: bool = False, spf: str = "none", spf_aligned: bool = False,
            dkim: tuple[tuple[str, bool], ...] = ()) -> AuthVerdict:
    signatures = tuple(DkimResult("example.org" if aligned else "other.test", "s1", result, aligned)
                       for result, aligned in dkim)
    return AuthVerdict(spf, "example.org", spf_aligned, signatures, dmarc, "reject" if record else None, record,
                       "example.org", "smtp")


@pytest.mark.parametrize(("case", "auth", "awaits"), [
    ("policy lookup failed", verdict(dmarc="temperror"), True),
    ("aligned key lookup failed under a policy", verdict(dmarc="temperror", record=True,
                                                         dkim=(("temperror", True),)), True),
    ("no record, aligned key lookup failed", verdict(dkim=(("temperror", True),)), True),
    ("no record, aligned key failed but another aligned passed", verdict(dkim=(("temperror", True),
                                                                                ("pass", True))), False),
    ("no record, only a foreign signature failed", verdict(dkim=(("temperror", False),)), False),
    ("no record, nothing signed", verdict(spf="pass", spf_aligned=True), False),
    ("no record, SPF lookup failed: SPF does not count", verdict(spf="temperror", spf_aligned=True), False),
    ("DMARC pass", verdict(dmarc="pass", record=True, dkim=(("pass", True),)), False),
    ("DMARC fail", verdict(dmarc="fail", record=True, dkim=(("fail", True),)), False),
    ("DMARC permerror", verdict(dmarc="permerror", record=True), False),
    ("no record, key missing", verdict(dkim=(("permerror", True),)), False),
])
def test_only_a_verdict_dns_left_undecided_awaits_dns(case: str, auth: AuthVerdict, awaits: bool) -> None:
    assert auth.awaits_dns() is awaits, case


def test_spf_counts_without_dmarc_when_the_gate_says_so() -> None:
    pending = verdict(spf="temperror", spf_aligned=True)
    assert pending.awaits_dns(spf_counts_without_dmarc=True)
    assert not verdict(spf="temperror", spf_aligned=False).awaits_dns(spf_counts_without_dmarc=True)
    # an aligned SPF pass decides it when SPF counts, whatever a signature's lookup did
    assert not verdict(spf="pass", spf_aligned=True, dkim=(("temperror", True),)).awaits_dns(
        spf_counts_without_dmarc=True)
