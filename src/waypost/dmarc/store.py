"""Reports in the database: stored once each, summarised per source and reporter, and read
for our own sources failing DMARC."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.dmarc.reports import Report, ReportKind
from waypost.store.db import conflict_insert
from waypost.store.models import dmarc_records, dmarc_reports, tls_report_policies, utcnow


def save(conn: Connection, report: Report, received_at: datetime) -> bool:
    """Store ``report`` unless the same one is stored already; True when it was new."""
    insert = conflict_insert(conn, dmarc_reports)
    values = {"kind": str(report.kind), "dedupe_key": report.dedupe_key, "org_name": _cut(report.org_name),
              "report_id": _cut(report.report_id), "policy_domain": _cut(report.policy_domain),
              "date_begin": report.begin, "date_end": report.end, "received_at": received_at,
              "malformed": report.malformed, "problem": report.problem, "details": report.details, "raw": report.raw}
    statement = insert.on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(dmarc_reports.c.id)
    pk = conn.execute(statement, values).scalar()
    if pk is None:  # the same report is stored already
        return False
    if report.records:
        conn.execute(dmarc_records.insert(), [
            {"report_pk": pk, "source_ip": r.source_ip[:64], "count": r.count, "disposition": r.disposition[:16],
             "dkim": r.dkim[:16], "spf": r.spf[:16], "header_from": _cut(r.header_from), "auth": r.auth}
            for r in report.records])
    if report.policies:
        conn.execute(tls_report_policies.insert(), [
            {"report_pk": pk, "policy_domain": p.policy_domain[:255], "policy_type": p.policy_type[:16],
             "success_count": p.success_count, "failure_count": p.failure_count, "failures": p.failures}
            for p in report.policies])
    return True


def _cut(value: str | None) -> str | None:
    return value[:255] if value is not None else None


@dataclass
class SourceRow:
    """Messages from one source IP as one reporter saw them, with aligned results."""

    source_ip: str
    reporter: str
    messages: int = 0
    dkim_aligned: int = 0
    spf_aligned: int = 0
    dmarc_pass: int = 0
    dispositions: dict[str, int] = field(default_factory=dict)
    own: bool = False

    @property
    def dmarc_fail(self) -> int:
        return self.messages - self.dmarc_pass


@dataclass
class TlsRow:
    policy_domain: str
    reports: int = 0
    successes: int = 0
    failures: int = 0
    failure_types: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    days: int
    since: datetime
    sources: list[SourceRow]
    tls: list[TlsRow]
    counts: dict[str, int]  # reports by kind, and "malformed"
    failures: list[dict[str, Any]]  # recent failure reports: reporter, domain, source IP, when

    def to_dict(self) -> dict[str, Any]:
        return {"days": self.days, "since": self.since.isoformat(), "counts": self.counts,
                "sources": [{**asdict(row), "dmarc_fail": row.dmarc_fail} for row in self.sources],
                "tls": [asdict(row) for row in self.tls], "failure_reports": self.failures}


def _period() -> sa.ColumnElement[Any]:
    """When a report's traffic happened: its date range's end, else when it reached us."""
    return sa.func.coalesce(dmarc_reports.c.date_end, dmarc_reports.c.received_at)


def summary(conn: Connection, days: int, own_ips: Iterable[str] = (), now: datetime | None = None) -> Summary:
    since = (now or utcnow()) - timedelta(days=days)
    own = set(own_ips)
    return Summary(days, since, _sources(conn, since, own), _tls(conn, since), _counts(conn, since),
                   _failures(conn, since))


def _sources(conn: Connection, since: datetime, own: set[str]) -> list[SourceRow]:
    r, d = dmarc_records.c, dmarc_reports.c
    query = (sa.select(r.source_ip, d.org_name, r.disposition, r.dkim, r.spf, sa.func.sum(r.count).label("n"))
             .join(dmarc_reports, d.id == r.report_pk).where(_period() >= since, d.malformed.is_(False))
             .group_by(r.source_ip, d.org_name, r.disposition, r.dkim, r.spf))
    rows: dict[tuple[str, str], SourceRow] = {}
    for ip, reporter, disposition, dkim, spf, n in conn.execute(query):
        row = rows.setdefault((ip, reporter or ""), SourceRow(ip, reporter or "", own=ip in own))
        n = int(n or 0)
        row.messages += n
        row.dkim_aligned += n if dkim == "pass" else 0
        row.spf_aligned += n if spf == "pass" else 0
        row.dmarc_pass += n if "pass" in (dkim, spf) else 0
        row.dispositions[disposition] = row.dispositions.get(disposition, 0) + n
    return sorted(rows.values(), key=lambda row: (-row.messages, row.source_ip, row.reporter))


def _tls(conn: Connection, since: datetime) -> list[TlsRow]:
    p, d = tls_report_policies.c, dmarc_reports.c
    query = (sa.select(p.policy_domain, p.success_count, p.failure_count, p.failures)
             .join(dmarc_reports, d.id == p.report_pk).where(_period() >= since, d.malformed.is_(False)))
    rows: dict[str, TlsRow] = {}
    for domain, successes, failures, details in conn.execute(query):
        row = rows.setdefault(domain, TlsRow(domain))
        row.reports += 1
        row.successes += successes
        row.failures += failures
        for detail in details or []:
            kind = str(detail.get("result-type", "unknown"))
            count = detail.get("failed-session-count", 0)
            row.failure_types[kind] = row.failure_types.get(kind, 0) + (count if isinstance(count, int) else 0)
    return sorted(rows.values(), key=lambda row: (-row.failures, row.policy_domain))


def _counts(conn: Connection, since: datetime) -> dict[str, int]:
    d = dmarc_reports.c
    found: dict[str, int] = defaultdict(int)
    query = sa.select(d.kind, d.malformed, sa.func.count()).where(d.received_at >= since).group_by(d.kind, d.malformed)
    for kind, bad, n in conn.execute(query):
        found["malformed" if bad else kind] += n
    return {kind: found.get(kind, 0) for kind in (*(str(k) for k in ReportKind if k is not ReportKind.UNKNOWN),
                                                  "malformed")}


def _failures(conn: Connection, since: datetime, limit: int = 50) -> list[dict[str, Any]]:
    d = dmarc_reports.c
    query = (sa.select(d.org_name, d.policy_domain, d.received_at, d.details)
             .where(d.kind == str(ReportKind.FAILURE), d.malformed.is_(False), d.received_at >= since)
             .order_by(d.received_at.desc()).limit(limit))
    return [{"reporter": org, "domain": domain, "received_at": at.isoformat(),
             "source_ip": (details.get("fields") or {}).get("source-ip"),
             "auth_failure": (details.get("fields") or {}).get("auth-failure")}
            for org, domain, at, details in conn.execute(query)]


def malformed_reports(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest reports that could not be read, for the operator to look at."""
    d = dmarc_reports.c
    query = (sa.select(d.id, d.kind, d.org_name, d.received_at, d.problem).where(d.malformed.is_(True))
             .order_by(d.received_at.desc()).limit(limit))
    return [{"id": pk, "kind": kind, "reporter": org, "received_at": at.isoformat(), "problem": problem}
            for pk, kind, org, at, problem in conn.execute(query)]


@dataclass(frozen=True)
class OwnFailure:
    source_ip: str
    reporter: str
    header_from: str | None
    messages: int


def own_failures(conn: Connection, since: datetime, *, ips: Iterable[str], domains: Iterable[str]) -> list[OwnFailure]:
    """Records of our own mail that failed DMARC (neither aligned DKIM nor aligned SPF passed):
    from one of ``ips``, or with a header From in ``domains`` or below them (SES mode, where the
    sending addresses are Amazon's)."""
    r, d = dmarc_records.c, dmarc_reports.c
    ips = list(ips)
    ours: list[sa.ColumnElement[bool]] = [r.source_ip.in_(ips)] if ips else []
    for domain in domains:
        ours += [r.header_from == domain, r.header_from.like(f"%.{domain}")]
    if not ours:
        return []
    query = (sa.select(r.source_ip, d.org_name, r.header_from, sa.func.sum(r.count))
             .join(dmarc_reports, d.id == r.report_pk)
             .where(_period() >= since, d.malformed.is_(False), r.dkim != "pass", r.spf != "pass", sa.or_(*ours))
             .group_by(r.source_ip, d.org_name, r.header_from).order_by(sa.func.sum(r.count).desc()))
    return [OwnFailure(ip, org or "", header_from, int(n or 0)) for ip, org, header_from, n in conn.execute(query)]
