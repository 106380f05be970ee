"""The outbox as the operator reads it: the newest messages, one message with its raw bytes,
and counts by state. Reads only; what happens to a message is ``outbox.py``'s."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.store.models import OutboundState as OutboundState  # re-exported for the edges
from waypost.store.models import outbound_messages


@dataclass(frozen=True)
class OutboundSummary:
    """One outbound message without its bytes."""

    id: int
    stream: str
    recipient: str
    subject: str
    state: str
    created_at: datetime
    sent_at: datetime | None
    last_error: str | None
    idempotency_key: str
    unconfirmed: bool


_COLUMNS = tuple(outbound_messages.c[f.name] for f in fields(OutboundSummary))


def _summary(row: sa.Row) -> OutboundSummary:
    return OutboundSummary(**{f.name: row._mapping[f.name] for f in fields(OutboundSummary)})


def newest(conn: Connection, *, limit: int, before: int | None = None,
           state: OutboundState | None = None) -> list[OutboundSummary]:
    """Up to ``limit`` messages, newest first; only those with an id below ``before`` (a
    cursor for the next page) and in ``state``, when given."""
    query = sa.select(*_COLUMNS).order_by(outbound_messages.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(outbound_messages.c.id < before)
    if state is not None:
        query = query.where(outbound_messages.c.state == state)
    return [_summary(row) for row in conn.execute(query)]


def message(conn: Connection, outbound_id: int) -> tuple[OutboundSummary, bytes] | None:
    """One message and the exact bytes it is (or was) sent as; None when there is no such id."""
    row = conn.execute(sa.select(*_COLUMNS, outbound_messages.c.raw)
                       .where(outbound_messages.c.id == outbound_id)).first()
    return (_summary(row), bytes(row.raw)) if row is not None else None


def counts_by_state(conn: Connection) -> dict[str, int]:
    """Messages by state; a state no message is in is absent."""
    rows = conn.execute(sa.select(outbound_messages.c.state, sa.func.count()).group_by(outbound_messages.c.state))
    return {state: int(n) for state, n in rows}


def unconfirmed_count(conn: Connection) -> int:
    """Messages counted as sent although the transport never confirmed taking them."""
    return int(conn.execute(sa.select(sa.func.count()).where(outbound_messages.c.unconfirmed)).scalar_one())
