"""Who may use the service: exact addresses (``+tag`` tolerant) and whole domains."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from waypost.mail.addresses import address_key, normalise_domain
from waypost.outbound.suppression import suppression_key
from waypost.store.db import in_chunks
from waypost.store.models import allowlist, suppressions, utcnow


@dataclass(frozen=True)
class AllowlistEntry:
    kind: str  # address | domain
    value: str
    added_at: datetime
    note: str | None


def parse_entry(text: str) -> tuple[str, str]:
    """``ann@example.org`` is an address; ``example.org`` or ``@example.org`` a whole domain."""
    text = text.strip()
    if "@" in text.lstrip("@"):
        return "address", address_key(text)
    return "domain", normalise_domain(text.lstrip("@"))


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Forget:
    """Removes address entries inside the caller's transaction (the journeys stream's leave
    hook: an unsubscribe, a complaint); a domain entry stays, the gate refuses those who left."""

    def __call__(self, conn: Connection, address: str) -> bool:
        """Remove the entry for ``address``; True when there was one."""
        return self.many(conn, (address,)) > 0

    @staticmethod
    def many(conn: Connection, addresses: Iterable[str]) -> int:
        """Remove the entries for all of ``addresses`` (a feedback batch's complaints) with a
        statement per 500 rather than one each; how many there were."""
        keys = sorted({address_key(address) for address in addresses})
        return sum(conn.execute(_FORGET_AMONG, {"keys": chunk}).rowcount for chunk in in_chunks(keys))


_FORGET_AMONG = allowlist.delete().where(allowlist.c.kind == "address",
                                         allowlist.c.value.in_(sa.bindparam("keys", expanding=True)))


class Allowlist:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, text: str, note: str | None = None, *, conn: Connection | None = None) -> bool:
        """Add an entry; False when it was already there. Allowing an address again also
        lifts its unsubscribe: adding someone back is how they return after leaving. With
        ``conn`` it runs in the caller's transaction (the console audits in the same one)."""
        if conn is None:
            with self.engine.begin() as own:
                return self.add(text, note, conn=own)
        kind, value = parse_entry(text)
        if kind == "address":
            local, domain = value.rsplit("@", 1)
            conn.execute(suppressions.delete().where(
                suppressions.c.reason == "UNSUBSCRIBE",
                sa.or_(suppressions.c.address == suppression_key(text), suppressions.c.address == value,
                       suppressions.c.address.like(f"{_like(local)}+%@{_like(domain)}", escape="\\"))))
        if conn.execute(sa.select(allowlist.c.id).where(allowlist.c.value == value)).first() is not None:
            return False
        try:
            with conn.begin_nested():  # a concurrent add of the same entry must not undo the caller's work
                conn.execute(allowlist.insert().values(kind=kind, value=value, added_at=utcnow(), note=note))
        except IntegrityError:
            return False
        return True

    forget = _Forget()  # the journeys stream's leave hook: Allowlist.forget(conn, address)

    def remove(self, text: str, *, conn: Connection | None = None) -> bool:
        _, value = parse_entry(text)
        if conn is None:
            with self.engine.begin() as own:
                return self.remove(text, conn=own)
        return conn.execute(allowlist.delete().where(allowlist.c.value == value)).rowcount > 0

    def entries(self) -> list[AllowlistEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(allowlist).order_by(allowlist.c.kind, allowlist.c.value))
            return [AllowlistEntry(r.kind, r.value, r.added_at, r.note) for r in rows]

    def allows(self, address: str) -> bool:
        key = address_key(address)
        domain = key.rsplit("@", 1)[1]
        with self.engine.connect() as conn:
            hit = conn.execute(
                sa.select(allowlist.c.id).where(
                    sa.or_(
                        sa.and_(allowlist.c.kind == "address", allowlist.c.value == key),
                        sa.and_(allowlist.c.kind == "domain", allowlist.c.value == domain),
                    )
                )
            ).first()
        return hit is not None
