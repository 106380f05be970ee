"""The outcome of sender authentication: one ``AuthVerdict`` per message, with one
``DkimResult`` per signature, in the result words of RFC 8601 §2.7 (and RFC 7489 §11.2 for
DMARC), whichever ingress delivered the mail. It is stored with the message (``to_json``) and
stamped on it as an ``Authentication-Results:`` field (``to_header``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
DKIM_RESULTS = frozenset({"pass", "fail", "neutral", "none", "policy", "temperror", "permerror"})
DMARC_RESULTS = frozenset({"pass", "fail", "none", "temperror", "permerror"})
DMARC_POLICIES = frozenset({"none", "quarantine", "reject"})
SOURCES = frozenset({"smtp", "ses"})
SPF_SCOPES = frozenset({"mailfrom", "helo"})
TEXT_LIMIT = 300  # characters of one reason or explanation kept in a verdict


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut: the free text of a
    verdict comes partly from the sender's DNS and mail, so its size is ours to bound."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(frozen=True)
class DkimResult:
    """One DKIM-Signature: its d= and s=, the RFC 8601 result, and whether d= aligns with the
    From domain under the DMARC record's adkim (relaxed when there is no record)."""

    domain: str
    selector: str
    result: str
    aligned: bool
    reason: str = ""

    def __post_init__(self) -> None:
        if self.result not in DKIM_RESULTS:
            raise ValueError(f"not a DKIM result: {self.result!r}")


@dataclass(frozen=True)
class AuthVerdict:
    """SPF, DKIM and DMARC results for one message (result words of RFC 8601 §2.7 and, for
    DMARC, RFC 7489 §11.2).

    ``spf_domain`` is the identity SPF checked: the MAIL FROM domain, or the HELO name when MAIL
    FROM was null (``spf_scope`` "helo", RFC 7208 §2.4). ``dmarc_policy`` is the policy that
    applies to the From domain (``sp=`` for a subdomain covered by its organizational domain's
    record). ``spam`` and ``virus`` carry SES's scan verdicts and are None for SMTP.
    Construction raises ``ValueError`` for a word outside those sets.
    """

    spf: str
    spf_domain: str | None
    spf_aligned: bool
    dkim: tuple[DkimResult, ...]
    dmarc: str
    dmarc_policy: str | None
    dmarc_record_found: bool
    from_domain: str | None
    source: str
    detail: str = ""
    spam: str | None = None
    virus: str | None = None
    spf_scope: str = "mailfrom"

    def __post_init__(self) -> None:
        checks = ((self.spf, SPF_RESULTS, "SPF result"), (self.dmarc, DMARC_RESULTS, "DMARC result"),
                  (self.source, SOURCES, "source"), (self.spf_scope, SPF_SCOPES, "SPF scope"))
        for value, allowed, what in checks:
            if value not in allowed:
                raise ValueError(f"not a {what}: {value!r}")
        if self.dmarc_policy is not None and self.dmarc_policy not in DMARC_POLICIES:
            raise ValueError(f"not a DMARC policy: {self.dmarc_policy!r}")

    @property
    def spf_aligned_pass(self) -> bool:
        return self.spf == "pass" and self.spf_aligned

    @property
    def dkim_aligned_pass(self) -> bool:
        """A signature by the From domain (or, relaxed, its organizational domain) verified."""
        return any(sig.result == "pass" and sig.aligned for sig in self.dkim)

    @property
    def aligned_pass(self) -> bool:
        """An aligned SPF or DKIM pass, whether or not the From domain publishes DMARC."""
        return self.spf_aligned_pass or self.dkim_aligned_pass

    @property
    def dmarc_pass(self) -> bool:
        """DMARC passed: the From domain publishes a policy and SPF or DKIM passed aligned
        (for SES: SES said so)."""
        return self.dmarc == "pass"

    def awaits_dns(self, *, spf_counts_without_dmarc: bool = False) -> bool:
        """True when the verdict is undecided because DNS failed temporarily, so that a later
        try may authenticate the mail: DMARC itself is temperror (the policy lookup failed, or
        an aligned identifier could not be checked and none passed, RFC 7489 §11.2), or the
        From domain publishes no DMARC record, nothing aligned passed and an aligned DKIM
        signature (or, when ``spf_counts_without_dmarc``, an aligned SPF check) is temperror.
        RFC 7489 §7: a temporary error during policy evaluation should be answered with a
        temporary failure, so the sending server tries again."""
        if self.dmarc == "temperror":
            return True
        if self.dmarc != "none" or self.dmarc_record_found:
            return False  # decided by a published policy: pass, fail or permerror
        passed = self.aligned_pass if spf_counts_without_dmarc else self.dkim_aligned_pass
        if passed:
            return False
        spf_pending = spf_counts_without_dmarc and self.spf == "temperror" and self.spf_aligned
        return spf_pending or any(sig.result == "temperror" and sig.aligned for sig in self.dkim)

    def to_header(self, authserv_id: str) -> str:
        """The value of an ``Authentication-Results:`` field (RFC 8601 §2.2). Every domain and
        selector is a token or a quoted-string, so hostile text cannot add fields."""
        if not authserv_id.strip():
            raise ValueError("authserv-id must not be empty")
        note = " (via Amazon SES)" if self.source == "ses" else ""
        spf_part = f"spf={self.spf}{note}" + _prop(f"smtp.{self.spf_scope}", self.spf_domain)
        dkim_parts = [f"dkim={sig.result}{note}" + _prop("header.d", sig.domain) + _prop("header.s", sig.selector)
                      for sig in self.dkim] or [f"dkim=none{note}"]
        policy = f" (p={self.dmarc_policy})" if self.dmarc_policy else ""
        dmarc_part = f"dmarc={self.dmarc}{note}{policy}" + _prop("header.from", self.from_domain)
        return "; ".join([_value(authserv_id.strip()), spf_part, *dkim_parts, dmarc_part])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for a database JSON column); ``from_json`` reads it back."""
        data = dataclasses.asdict(self)
        data["dkim"] = [dataclasses.asdict(sig) for sig in self.dkim]
        return {"version": 1, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthVerdict:
        """Raises ``ValueError`` when ``data`` is not what ``to_json`` writes."""
        if not isinstance(data, Mapping) or data.get("version") != 1:
            raise ValueError("not a stored AuthVerdict (version 1)")
        signatures = data.get("dkim")
        if not isinstance(signatures, list):
            raise ValueError("dkim: expected a list")
        fields = {f.name: _typed(data, f.name, _JSON_TYPES[f.name])
                  for f in dataclasses.fields(cls) if f.name != "dkim"}
        dkim_results = tuple(DkimResult(**{f.name: _typed(sig, f.name, _JSON_TYPES[f.name])
                                           for f in dataclasses.fields(DkimResult)})
                             for sig in signatures)
        return cls(dkim=dkim_results, **fields)


_OPTIONAL_TEXT = (str, type(None))
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "spf": (str,), "spf_domain": _OPTIONAL_TEXT, "spf_aligned": (bool,), "dmarc": (str,),
    "dmarc_policy": _OPTIONAL_TEXT, "dmarc_record_found": (bool,), "from_domain": _OPTIONAL_TEXT,
    "source": (str,), "detail": (str,), "spam": _OPTIONAL_TEXT, "virus": _OPTIONAL_TEXT, "spf_scope": (str,),
    "domain": (str,), "selector": (str,), "result": (str,), "aligned": (bool,), "reason": (str,),
}


def _typed(data: Any, key: str, types: tuple[type, ...]) -> Any:
    if not isinstance(data, Mapping) or key not in data or not isinstance(data[key], types):
        raise ValueError(f"{key}: missing or not {' or '.join(t.__name__ for t in types)}")
    return data[key]


_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")  # RFC 2045 token characters a domain or selector needs


def _value(text: str) -> str:
    """A token when it is one, else a quoted-string (RFC 5322 §3.2.4) with every character
    outside printable ASCII replaced: no CR/LF, ';' or '(' can leave the quotes."""
    if _TOKEN.fullmatch(text):
        return text
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prop(name: str, value: str | None) -> str:
    return f" {name}={_value(value)}" if value else ""
