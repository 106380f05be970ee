"""The audit log: every console action, every view of a share link, every failed login.

Written inside the transaction of the action it records, so an action and its record commit
together. Entries are never changed or deleted by the application.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.store.models import audit_log, utcnow


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: str | None
    ip: str | None


def record(conn: Connection, action: str, *, actor: str, target: str | None = None, detail: str | None = None,
           ip: str | None = None) -> None:
    conn.execute(audit_log.insert().values(at=utcnow(), actor=actor[:64], action=action[:48],
                                           target=target[:320] if target else None,
                                           detail=detail[:4000] if detail else None, ip=ip[:64] if ip else None))


def record_alone(engine: Engine, action: str, *, actor: str, target: str | None = None,
                 detail: str | None = None, ip: str | None = None) -> None:
    """``record`` in a transaction of its own, for an event that changes nothing else (a
    visitor viewing a shared journey): there is no action to commit it with."""
    with engine.begin() as conn:
        record(conn, action, actor=actor, target=target, detail=detail, ip=ip)


def entries(conn: Connection, *, limit: int = 100, before: int | None = None,
            action: str | None = None) -> list[AuditEntry]:
    """Newest first, ``limit`` at a time before the entry id ``before`` (a cursor); ``action``
    keeps those whose action starts with it (``allowlist`` matches ``allowlist.add``)."""
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(audit_log.c.id < before)
    if action:
        query = query.where(audit_log.c.action.startswith(action, autoescape=True))
    return [_entry(r) for r in conn.execute(query)]


def recorded_since(conn: Connection, action: str, since: datetime) -> list[AuditEntry]:
    """Every entry of exactly ``action`` recorded after ``since``, oldest first."""
    query = (sa.select(audit_log).where(audit_log.c.action == action, audit_log.c.at > since)
             .order_by(audit_log.c.id))
    return [_entry(r) for r in conn.execute(query)]


def _entry(row: sa.Row) -> AuditEntry:
    return AuditEntry(row.id, row.at, row.actor, row.action, row.target, row.detail, row.ip)


def truncated_ip(ip: str | None) -> str | None:
    """A visitor's address cut to its network, IPv4 /24 and IPv6 /48 (``203.0.113.0/24``): enough
    to see where views come from, not who made them. Anything unreadable is dropped."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
