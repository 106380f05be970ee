"""Delivery feedback as the operator reads it: the events applied (and what the policy did
with each), and the feedback that could not be read. Reads only; what is applied, and how,
is ``feedback.policy``'s."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.store.models import feedback_events, feedback_unreadable


@dataclass(frozen=True)
class FeedbackRecord:
    """One applied piece of feedback about one recipient."""

    id: int
    received_at: datetime
    source: str
    kind: str
    recipient: str | None
    bounce_type: str | None
    bounce_subtype: str | None
    feedback_type: str | None
    status: str | None
    outcome: str
    note: str | None
    diagnostic: str | None
    reason: str | None = None  # ``reasons`` vocabulary; None for events recorded before it was kept


@dataclass(frozen=True)
class UnreadableFeedback:
    """Feedback kept whole because it could not be read."""

    id: int
    received_at: datetime
    source: str
    reason: str


def recent(conn: Connection, *, limit: int, kind: str | None = None, outcome: str | None = None,
           address: str | None = None) -> list[FeedbackRecord]:
    """Up to ``limit`` events, newest first; only of ``kind``, with ``outcome`` and about
    ``address`` (case-insensitive), when given."""
    table = feedback_events
    query = (sa.select(*(table.c[f.name] for f in fields(FeedbackRecord)))
             .order_by(table.c.id.desc()).limit(limit))
    if kind:
        query = query.where(table.c.kind == kind)
    if outcome:
        query = query.where(table.c.outcome == outcome)
    if address:
        query = query.where(sa.func.lower(table.c.recipient) == address.lower())
    return [FeedbackRecord(**row._mapping) for row in conn.execute(query)]


def recent_unreadable(conn: Connection, *, limit: int) -> list[UnreadableFeedback]:
    """Up to ``limit`` unreadable pieces of feedback, newest first."""
    table = feedback_unreadable
    query = (sa.select(*(table.c[f.name] for f in fields(UnreadableFeedback)))
             .order_by(table.c.id.desc()).limit(limit))
    return [UnreadableFeedback(**row._mapping) for row in conn.execute(query)]


def unreadable_body(conn: Connection, unreadable_id: int) -> str | None:
    """The whole body of unreadable feedback ``unreadable_id``; None when there is no such entry."""
    return conn.execute(sa.select(feedback_unreadable.c.body)
                        .where(feedback_unreadable.c.id == unreadable_id)).scalar_one_or_none()
