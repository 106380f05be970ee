"""The suppression list: addresses Waypost must not send to, checked inside the outbox before
every send (invariant 4), whatever code queued the message.

Addresses are compared case-insensitively (``suppression_key``) but exactly otherwise: a
``+tag`` address is its own recipient, as in SES's account-level list. An entry may expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.mail.addresses import normalise_address
from waypost.store.models import suppressions, utcnow


class Reason(StrEnum):
    BOUNCE = "BOUNCE"
    COMPLAINT = "COMPLAINT"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    MANUAL = "MANUAL"


@dataclass(frozen=True)
class Suppression:
    address: str
    reason: Reason
    source: str
    detail: str | None
    created_at: datetime
    expires_at: datetime | None


def suppression_key(address: str) -> str:
    return normalise_address(address).lower()


def lookup(conn: Connection, address: str) -> Suppression | None:
    """The entry in force for ``address``, or None (expired entries do not count)."""
    row = conn.execute(sa.select(suppressions).where(
        suppressions.c.address == suppression_key(address),
        sa.or_(suppressions.c.expires_at.is_(None), suppressions.c.expires_at > utcnow()),
    )).first()
    return None if row is None else _entry(row)


def add(conn: Connection, address: str, reason: Reason, source: str, *, detail: str | None = None,
        expires_at: datetime | None = None) -> bool:
    """Suppress ``address``. An entry in force is kept as it is (its first reason stays, so an
    unsubscribe does not hide an earlier hard bounce); an expired one is replaced. True when
    the address was not suppressed before."""
    key = suppression_key(address)
    if lookup(conn, key) is not None:
        return False
    conn.execute(suppressions.delete().where(suppressions.c.address == key))
    conn.execute(suppressions.insert().values(address=key, reason=Reason(reason).value, source=source[:64],
                                              detail=detail, created_at=utcnow(), expires_at=expires_at))
    return True


def remove(conn: Connection, address: str) -> bool:
    return conn.execute(suppressions.delete().where(suppressions.c.address == suppression_key(address))).rowcount > 0


def entries(conn: Connection, *, limit: int = 1000, after: str | None = None) -> list[Suppression]:
    """Entries in address order, ``limit`` at a time after the address ``after`` (cursor)."""
    query = sa.select(suppressions).order_by(suppressions.c.address).limit(limit)
    if after is not None:
        query = query.where(suppressions.c.address > after)
    return [_entry(row) for row in conn.execute(query)]


def _entry(row: sa.Row) -> Suppression:
    return Suppression(row.address, Reason(row.reason), row.source, row.detail, row.created_at, row.expires_at)
