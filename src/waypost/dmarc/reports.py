"""The reports as Waypost holds them: frozen values built at the edge from XML, JSON or mail.

A report that could not be read is still a ``Report``: ``problem`` says why and ``raw`` keeps
its bytes (capped), so the operator can look at it; it never raises past the reader."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from waypost.errors import PermanentError

# what a malformed report keeps of its bytes (the mail itself follows its app's raw retention)
RAW_KEPT = 256 * 1024


class ReportFormatError(PermanentError):
    """The bytes are not a report we can read (malformed, truncated, too large once unpacked)."""


class ReportKind(StrEnum):
    AGGREGATE = "aggregate"  # DMARC rua, RFC 7489 §7.2 / RFC 9990
    FAILURE = "failure"  # DMARC ruf, RFC 6591 auth-failure
    TLS = "tls"  # SMTP TLS reporting, RFC 8460
    UNKNOWN = "unknown"  # mail to the reports mailbox in which no report could be read


@dataclass(frozen=True)
class Record:
    """One <record> of an aggregate report: ``dkim``/``spf`` are the DMARC-aligned results of
    policy_evaluated (pass | fail); ``auth`` keeps the raw auth_results and override reasons."""

    source_ip: str
    count: int
    disposition: str
    dkim: str
    spf: str
    header_from: str | None
    auth: dict[str, Any] = field(default_factory=dict)

    @property
    def passes(self) -> bool:
        """DMARC passes when either aligned result passes (RFC 7489 §4.2)."""
        return "pass" in (self.dkim, self.spf)


@dataclass(frozen=True)
class TlsPolicy:
    policy_domain: str
    policy_type: str
    success_count: int
    failure_count: int
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    kind: ReportKind
    org_name: str | None = None
    report_id: str | None = None
    policy_domain: str | None = None
    begin: datetime | None = None
    end: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    records: tuple[Record, ...] = ()
    policies: tuple[TlsPolicy, ...] = ()
    problem: str | None = None  # set: malformed, kept and flagged
    raw: bytes | None = None  # kept only for a malformed report, at most RAW_KEPT bytes

    @property
    def malformed(self) -> bool:
        return self.problem is not None

    @property
    def dedupe_key(self) -> str:
        """The same report twice is stored once: aggregate and TLS reports by reporter and report
        id (RFC 7489 §7.2.1.1, RFC 8460 §4.4), others by their content."""
        if self.report_id and not self.malformed:
            key = f"{self.kind}:{self.org_name or ''}:{self.report_id}"
        else:
            key = f"{self.kind}:{self.org_name or ''}:{self.details.get('digest', '')}"
        if len(key) > 200:
            key = f"{self.kind}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
        return key


def malformed(kind: ReportKind, problem: str, raw: bytes, *, org_name: str | None = None) -> Report:
    """A report kept and flagged; its key is its bytes' digest, so a resent copy is one row."""
    return Report(kind, org_name=org_name, problem=problem[:2000], raw=raw[:RAW_KEPT],
                  details={"digest": hashlib.sha256(raw).hexdigest(), "size": len(raw)})
