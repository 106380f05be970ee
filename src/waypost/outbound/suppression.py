"""The suppression list: addresses Waypost must not send to, checked inside the outbox before
every send (invariant 4), whatever code queued the message.

Addresses are compared case-insensitively (``suppression_key``) but exactly otherwise: a
``+tag`` address is its own recipient, as in SES's account-level list. An entry may expire.
Every change is written to ``suppression_log`` with who made it and why.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import io
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.mail.addresses import AddressError, normalise_address
from waypost.store.driver import DriverInList, DriverStatement
from waypost.store.models import suppression_log, suppressions, utcnow
from waypost.store.queue import enqueue

CSV_FIELDS = ("address", "reason", "source", "detail", "created_at", "expires_at")


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


@dataclass(frozen=True)
class NewEntry:
    address: str
    reason: Reason
    source: str
    detail: str | None = None
    expires_at: datetime | None = None


class SuppressionImportError(ValueError):
    """A CSV file that cannot be imported; ``problems`` names each bad line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(f"{len(problems)} bad line(s), nothing imported:\n" + "\n".join(problems[:50]))
        self.problems = list(problems)


# the source of a person's own ``stop`` by mail: the one suppression they may lift themselves
# (``start``), and the one that lets its own confirmation through (``lets_through``)
STOP_BY_MAIL = "stop-by-mail"
# the idempotency key prefix of that confirmation
STOP_CONFIRMATION = "stop-confirmation-"
# a person's own leaving by the link in our mail: one-click (``/u/…``, web/app.py) or its mailto
# form (apps/unsubscribe.py). Like a stop by mail it is theirs to undo (``start``); an operator's
# removal, a complaint or a bounce is not
ONE_CLICK, MAILTO = "one-click", "mailto"
OWN_LEAVING = frozenset({STOP_BY_MAIL, ONE_CLICK, MAILTO})
LEFT_ALLOWLIST = "; allowlist entry removed"  # ends the detail when leaving took their entry off


def left_by_self(entry: Suppression) -> bool:
    """Whether ``entry`` is the person's own leaving (stop by mail or the unsubscribe link)."""
    return entry.reason == Reason.UNSUBSCRIBE and entry.source in OWN_LEAVING

# SES mode: changes are pushed to SES's account-level list by a job queued in the same
# transaction, so the push runs only after the commit and an SES failure never touches ours
# (feedback/ses_sync.py runs it). SES's list holds only bounces and complaints
# (PutSuppressedDestination takes no other Reason): unsubscribes and manual entries stay ours.
SES_PUSH_JOB = "ses-suppression-push"
SES_PUSH_ATTEMPTS = 20
SES_REASONS = frozenset({Reason.BOUNCE, Reason.COMPLAINT})
SES_SYNC_SOURCE = "ses-sync"  # copied from SES's list: never pushed back
_PUSHING: weakref.WeakSet[Engine] = weakref.WeakSet()


def push_to_ses(engine: Engine, enabled: bool) -> None:
    """Whether changes made through ``engine`` queue a push to SES (the wiring says so in SES mode)."""
    if enabled:
        _PUSHING.add(engine)
    else:
        _PUSHING.discard(engine)


def _queue_push(conn: Connection, keys: Iterable[str]) -> None:
    if conn.engine in _PUSHING:
        for key in keys:
            enqueue(conn, SES_PUSH_JOB, {"address": key}, max_attempts=SES_PUSH_ATTEMPTS)


# An erased person (apps/erasure.py) stays suppressed under a keyed hash of their address alone,
# so the list names nobody and a later stop or complaint is still honoured. The wiring gives
# each engine the installation's secret keys (newest first: the first hashes, every one matches).
HASHED_PREFIX = "hmac-sha256:"
ERASED_SOURCE = "erased"
_HASH_KEYS: weakref.WeakKeyDictionary[Engine, tuple[bytes, ...]] = weakref.WeakKeyDictionary()


def hash_addresses_with(engine: Engine, keys: Sequence[bytes]) -> None:
    """Lookups through ``engine`` also match entries kept as ``hashed_key`` under ``keys``."""
    _HASH_KEYS[engine] = tuple(keys)


def hash_keys(engine: Engine) -> tuple[bytes, ...]:
    """The keys entries are hashed with through ``engine`` (none: erasure is not wired)."""
    return _HASH_KEYS.get(engine, ())


def hashed_key(address: str, key: bytes) -> str:
    """The entry an erased address keeps: an HMAC-SHA256 of its suppression key."""
    return _hashed(suppression_key(address), key)


def _hashed(suppression_key: str, key: bytes) -> str:
    return HASHED_PREFIX + hmac.new(key, suppression_key.encode(), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=16_384)
def _lookup_keys(key: str, secrets: tuple[bytes, ...]) -> tuple[str, ...]:
    """The suppression key and its keyed hashes, worked out once per address and key set (an
    HMAC costs more than the lookup's query on the driver; the outbox asks about the same
    recipients again and again)."""
    return (key, *(_hashed(key, secret) for secret in secrets))


@functools.cache
def _lookup_any(count: int) -> DriverStatement:
    """One statement for the address and its ``count - 1`` keyed hashes: equality on the unique
    index for one key, an IN list of point lookups on it for more (compiled once per dialect)."""
    column = suppressions.c.address
    # typed as the column, as SQLAlchemy's own execution sends them (PostgreSQL gets ``::VARCHAR``)
    names: list[sa.BindParameter[str]] = [sa.bindparam(f"k{i}", type_=column.type) for i in range(count)]
    return DriverStatement(sa.select(*_COLUMNS).where(column == names[0] if count == 1 else column.in_(names)))


def _lookup_row(conn: Connection, address: str) -> Suppression | None:
    """The entry of ``address``, or of its keyed hash (expired or not): one query either way,
    run on the driver inside the caller's transaction (SQLAlchemy's own execution costs three
    times the query's)."""
    keys = _lookup_keys(suppression_key(address), _HASH_KEYS.get(conn.engine, ()))
    params = {f"k{i}": k for i, k in enumerate(keys)}
    if conn.in_transaction():
        rows = _lookup_any(len(keys)).fetch(conn, params)
    else:  # a driver statement runs only in a transaction: let SQLAlchemy begin one, as it would
        rows = [tuple(row) for row in conn.execute(_lookup_any(len(keys)).statement, params)]
    if not rows:
        return None
    row = min(rows, key=lambda values: values[0] != keys[0])  # the address as written first
    return Suppression(row[0], Reason(row[1]), row[2], row[3], row[4], row[5])


def lets_through(entry: Suppression, idempotency_key: str, created_at: datetime) -> bool:
    """Whether ``entry`` lets a message pass anyway: a person's own stop by mail holds every
    message but the one confirming it, queued in the transaction that suppressed them."""
    return (entry.reason == Reason.UNSUBSCRIBE and entry.source == STOP_BY_MAIL
            and idempotency_key.startswith(STOP_CONFIRMATION) and created_at >= entry.created_at)


def suppression_key(address: str) -> str:
    return normalise_address(address).lower()


def _in_force() -> sa.ColumnElement[bool]:
    return sa.or_(suppressions.c.expires_at.is_(None), suppressions.c.expires_at > utcnow())


_LOOKUP = sa.select(suppressions).where(suppressions.c.address == sa.bindparam("key"))
# what ``lookup`` reads, in ``Suppression``'s order
_COLUMNS = (suppressions.c.address, suppressions.c.reason, suppressions.c.source, suppressions.c.detail,
            suppressions.c.created_at, suppressions.c.expires_at)


def lookup(conn: Connection, address: str) -> Suppression | None:
    """The entry in force for ``address``, or None (expired entries do not count)."""
    entry = _lookup_row(conn, address)
    if entry is None or (entry.expires_at is not None and entry.expires_at <= utcnow()):
        return None
    return entry


def add(conn: Connection, address: str, reason: Reason, source: str, *, detail: str | None = None,
        expires_at: datetime | None = None, by: str | None = None) -> bool:
    """Suppress ``address``. An entry in force is kept as it is (its first reason stays, so an
    unsubscribe does not hide an earlier hard bounce); an expired one is replaced. True when
    the address was not suppressed before."""
    return bool(add_many(conn, [NewEntry(address, Reason(reason), source, detail, expires_at)], by=by))


def add_many(conn: Connection, entries: Iterable[NewEntry], *, by: str | None = None) -> set[str]:
    """Suppress many addresses in one go (feedback batches, imports); the same rule as ``add``.
    Returns the keys that were newly suppressed."""
    fresh: dict[str, NewEntry] = {}
    for entry in entries:
        fresh.setdefault(suppression_key(entry.address), entry)
    if not fresh:
        return set()
    now = utcnow()
    in_force, expired = _present(conn, list(fresh), now)
    new = {key: entry for key, entry in fresh.items() if key not in in_force}
    if not new:
        return set()
    _DELETE_AMONG.run(conn, expired)  # replaced below
    _INSERT_ENTRIES.insert_many(conn, [
        {"address": key, "reason": e.reason.value, "source": e.source[:64], "detail": e.detail, "created_at": now,
         "expires_at": e.expires_at} for key, e in new.items()])
    _INSERT_LOG.insert_many(conn, [
        {"at": now, "action": "add", "address": key, "reason": e.reason.value, "by": (by or e.source)[:64],
         "note": e.detail} for key, e in new.items()])
    _queue_push(conn, [key for key, e in new.items() if e.reason in SES_REASONS and e.source != SES_SYNC_SOURCE])
    return set(new)


def remove(conn: Connection, address: str, *, by: str = "operator", note: str | None = None) -> bool:
    key = suppression_key(address)
    row = conn.execute(_LOOKUP, {"key": key}).first()
    if row is None:
        return False
    conn.execute(suppressions.delete().where(suppressions.c.address == key))
    conn.execute(suppression_log.insert().values(at=utcnow(), action="remove", address=key, reason=row.reason,
                                                 by=by[:64], note=note))
    _queue_push(conn, [key])
    return True


def entries(conn: Connection, *, limit: int = 1000, after: str | None = None, contains: str | None = None,
            domain: str | None = None, reason: Reason | None = None) -> list[Suppression]:
    """Entries in address order, ``limit`` at a time after the address ``after`` (a cursor that
    stays correct while entries come and go), filtered by a part of the address, a domain
    (subdomains not included) or a reason."""
    query = sa.select(suppressions).order_by(suppressions.c.address).limit(limit)
    if after is not None:
        query = query.where(suppressions.c.address > after.lower())
    if contains:
        query = query.where(suppressions.c.address.contains(contains.lower(), autoescape=True))
    if domain:
        query = query.where(suppressions.c.address.endswith("@" + domain.lower().strip("@ "), autoescape=True))
    if reason is not None:
        query = query.where(suppressions.c.reason == Reason(reason).value)
    return [_entry(row) for row in conn.execute(query)]


def counts(conn: Connection) -> dict[str, int]:
    """Entries in force by reason."""
    rows = conn.execute(sa.select(suppressions.c.reason, sa.func.count()).where(_in_force())
                        .group_by(suppressions.c.reason))
    return {reason: int(count) for reason, count in rows}


def history(conn: Connection, address: str | None = None, *, limit: int = 50) -> list[sa.Row]:
    """The newest changes (to one address, or all), newest first."""
    query = sa.select(suppression_log).order_by(suppression_log.c.id.desc()).limit(limit)
    if address is not None:
        query = query.where(suppression_log.c.address == suppression_key(address))
    return list(conn.execute(query))


# -- CSV ---------------------------------------------------------------------------------


def write_csv(conn: Connection, out: TextIO, *, page: int = 5000) -> int:
    """Every entry (expired ones too) as CSV with a header line; returns the count."""
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    written, after = 0, None
    while True:
        batch = entries(conn, limit=page, after=after)
        for e in batch:
            writer.writerow([e.address, e.reason.value, e.source, e.detail or "", _iso(e.created_at),
                             _iso(e.expires_at)])
        written += len(batch)
        if len(batch) < page:
            return written
        after = batch[-1].address


def read_csv(text: str | TextIO, *, source: str = "import") -> list[NewEntry]:
    """Parse an export of ours, SES's (``EmailAddress,Reason``) or a plain list of addresses.
    Raises ``SuppressionImportError`` listing every bad line, so a file imports whole or not
    at all."""
    handle = io.StringIO(text) if isinstance(text, str) else text
    rows = list(csv.reader(handle))
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    columns = _columns(header)
    body = rows[1:] if columns else rows
    columns = columns or {"address": 0}
    parsed, problems = [], []
    for number, row in enumerate(body, start=2 if body is not rows else 1):
        if not any(cell.strip() for cell in row):
            continue
        try:
            parsed.append(_import_row(row, columns, source))
        except ValueError as err:
            problems.append(f"line {number}: {err}")
    if problems:
        raise SuppressionImportError(problems)
    return parsed


def _columns(header: list[str]) -> dict[str, int] | None:
    names = {"address": ("address", "emailaddress", "email"), "reason": ("reason",), "source": ("source",),
             "detail": ("detail", "note"), "expires_at": ("expires_at",)}
    found = {field: header.index(alias) for field, aliases in names.items() for alias in aliases if alias in header}
    return found if "address" in found else None


def _import_row(row: list[str], columns: dict[str, int], source: str) -> NewEntry:
    def cell(name: str) -> str:
        index = columns.get(name)
        return row[index].strip() if index is not None and index < len(row) else ""

    try:
        address = normalise_address(cell("address"))
    except AddressError as err:
        raise ValueError(f"{cell('address')!r}: {err}") from None
    reason_text = cell("reason").upper() or Reason.MANUAL.value
    if reason_text not in Reason.__members__:
        raise ValueError(f"reason {reason_text!r} is not one of {', '.join(Reason.__members__)}")
    expires = cell("expires_at")
    try:
        expires_at = datetime.fromisoformat(expires) if expires else None
    except ValueError:
        raise ValueError(f"expires_at {expires!r} is not an ISO 8601 time") from None
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError(f"expires_at {expires!r} has no time zone (add Z or +00:00)")
    return NewEntry(address, Reason(reason_text), cell("source") or source, cell("detail") or None, expires_at)


# compiled once per dialect and IN-list length, run on the driver: feedback batches pass
# hundreds of addresses, which an expanding parameter would render and bind anew every time
_DELETE_AMONG = DriverInList(suppressions.c.address, lambda among: suppressions.delete().where(among))
_PRESENT_AMONG = DriverInList(suppressions.c.address,
                              lambda among: sa.select(suppressions.c.address, suppressions.c.expires_at).where(among))


# a feedback batch adds hundreds of entries: SQLAlchemy's parameter handling per row cost more
# than the driver's insert of them
_INSERT_ENTRIES = DriverStatement(suppressions.insert(),
                                  ("address", "reason", "source", "detail", "created_at", "expires_at"))
_INSERT_LOG = DriverStatement(suppression_log.insert(), ("at", "action", "address", "reason", "by", "note"))


def _present(conn: Connection, keys: list[str], now: datetime) -> tuple[set[str], list[str]]:
    """Which of ``keys`` have an entry in force, and which an expired one (to be replaced):
    one query for both, and no DELETE at all when nothing expired (the usual case)."""
    in_force: set[str] = set()
    expired: list[str] = []
    for address, expires_at in _PRESENT_AMONG.fetch(conn, keys):
        if expires_at is None or expires_at > now:
            in_force.add(address)
        else:
            expired.append(address)
    return in_force, expired


def _iso(moment: datetime | None) -> str:
    return moment.isoformat().replace("+00:00", "Z") if moment else ""


def _entry(row: sa.Row) -> Suppression:
    return Suppression(row.address, Reason(row.reason), row.source, row.detail, row.created_at, row.expires_at)
