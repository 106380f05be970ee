"""What Waypost holds about one person, for the operator (``waypost person show ADDRESS``): their
allowlist entries, their suppression, their journeys and how many messages came from them and
went to them. The address is taken as written and without its +tag, as the gate takes it."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.apps.journeys import repository
from waypost.mail.addresses import address_key
from waypost.outbound import suppression
from waypost.pipeline.allowlist import AllowlistEntry
from waypost.store.models import allowlist, inbound_messages, outbound_messages


@dataclass(frozen=True)
class Person:
    address: str
    allowlist: list[AllowlistEntry]  # the address's own entry and its domain's
    suppressions: list[suppression.Suppression]  # in force, for the address as written or without +tag
    stopped_by_self: bool  # left by their own stop by mail: they alone may undo it (start)
    journeys: list[repository.JourneySummary]
    inbound: dict[str, int]  # messages from them, by status
    outbound: dict[str, int]  # messages to them, by state


def describe(engine: Engine, address: str) -> Person:
    """Raises ``AddressError`` for an address that is none."""
    keys = list(dict.fromkeys((address.strip().lower(), address_key(address))))
    with engine.connect() as conn:
        entries = [e for key in keys if (e := suppression.lookup(conn, key)) is not None]
        found = {j.id: j for key in keys for j in repository.list_journeys(conn, owner=key, limit=1000)}
        return Person(
            address=keys[-1], allowlist=_allowlist(conn, keys[-1]), suppressions=entries,
            stopped_by_self=any(e.source == suppression.STOP_BY_MAIL for e in entries),
            journeys=sorted(found.values(), key=lambda j: j.id, reverse=True),
            inbound=_counts(conn, inbound_messages.c.status, inbound_messages.c.from_address, keys),
            outbound=_counts(conn, outbound_messages.c.state, outbound_messages.c.recipient, keys),
        )


def _allowlist(conn: Connection, key: str) -> list[AllowlistEntry]:
    domain = key.rsplit("@", 1)[1]
    rows = conn.execute(sa.select(allowlist).where(sa.or_(
        sa.and_(allowlist.c.kind == "address", allowlist.c.value == key),
        sa.and_(allowlist.c.kind == "domain", allowlist.c.value == domain))))
    return [AllowlistEntry(r.kind, r.value, r.added_at, r.note) for r in rows]


def _counts(conn: Connection, column: sa.Column, who: sa.Column, keys: list[str]) -> dict[str, int]:
    rows = conn.execute(sa.select(column, sa.func.count()).where(sa.func.lower(who).in_(keys)).group_by(column))
    return {str(value): int(n) for value, n in rows}
