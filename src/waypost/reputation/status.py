"""One reading of the service's state, shared by `waypost status`, the alarms and the
Prometheus metrics, so the three never disagree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.outbound import control, suppression
from waypost.outbound.ratelimit import Limits, RateLimiter
from waypost.reputation.guard import Assessment, ReputationGuard
from waypost.store.models import (
    feedback_events,
    feedback_unreadable,
    inbound_messages,
    jobs,
    outbound_messages,
    utcnow,
)


@dataclass(frozen=True)
class QueueState:
    counts: dict[tuple[str, str], int]  # (kind, state) → jobs
    due: int  # queued and due now
    oldest_due_seconds: float | None  # how long the longest-waiting due job has waited
    stale: int  # due jobs that have waited longer than the stale threshold

    @property
    def dead(self) -> int:
        return sum(n for (_, state), n in self.counts.items() if state == "dead")


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    queue: QueueState
    outbound: dict[str, int]  # messages by state
    unconfirmed: int
    pauses: tuple[control.Pause, ...]
    limits: Limits
    used_last_second: int
    used_last_day: int
    assessment: Assessment
    suppressions: dict[str, int]  # in force, by reason
    review: int  # feedback waiting for a look (last 7 days)
    unreadable: int  # unreadable feedback kept (last 24 hours)
    feedback_last_day: dict[str, int]  # applied events by kind, last 24 hours
    inbound_last_day: dict[tuple[str, str], int]  # (status, refusal code or "") → messages, last 24 hours


def read_snapshot(engine: Engine, limiter: RateLimiter, guard: ReputationGuard, *,
                  stale_after: timedelta) -> Snapshot:
    now = utcnow()
    with engine.connect() as conn:
        used_second, used_day = limiter.used(conn, now)
        return Snapshot(
            at=now, queue=_queue(conn, now, stale_after), outbound=_outbound(conn),
            unconfirmed=int(conn.execute(sa.select(sa.func.count()).where(outbound_messages.c.unconfirmed))
                            .scalar_one()),
            pauses=tuple(control.pauses(conn)), limits=limiter.limits, used_last_second=used_second,
            used_last_day=used_day, assessment=guard.assess(conn, now), suppressions=suppression.counts(conn),
            review=_count(conn, feedback_events, feedback_events.c.outcome == "review",
                          feedback_events.c.received_at > now - timedelta(days=7)),
            unreadable=_count(conn, feedback_unreadable, feedback_unreadable.c.received_at > now - timedelta(days=1)),
            feedback_last_day=dict(conn.execute(
                sa.select(feedback_events.c.kind, sa.func.count())
                .where(feedback_events.c.received_at > now - timedelta(days=1))
                .group_by(feedback_events.c.kind)).all()),
            inbound_last_day=_inbound(conn, now - timedelta(days=1)),
        )



def _queue(conn: Connection, now: datetime, stale_after: timedelta) -> QueueState:
    counts = {(kind, state): int(n) for kind, state, n in conn.execute(
        sa.select(jobs.c.kind, jobs.c.state, sa.func.count()).where(jobs.c.state != "done")
        .group_by(jobs.c.kind, jobs.c.state))}
    due = (jobs.c.state == "queued", jobs.c.run_after <= now)
    oldest = conn.execute(sa.select(sa.func.min(jobs.c.run_after)).where(*due)).scalar()
    return QueueState(
        counts=counts, due=_count(conn, jobs, *due),
        oldest_due_seconds=(now - oldest).total_seconds() if oldest is not None else None,
        stale=_count(conn, jobs, *due, jobs.c.run_after <= now - stale_after),
    )


def _inbound(conn: Connection, since: datetime) -> dict[tuple[str, str], int]:
    """Inbound mail by outcome; refusals by their reason code (the text before the colon)."""
    counts: dict[tuple[str, str], int] = {}
    rows = conn.execute(sa.select(inbound_messages.c.status, inbound_messages.c.reason, sa.func.count())
                        .where(inbound_messages.c.received_at > since)
                        .group_by(inbound_messages.c.status, inbound_messages.c.reason))
    for status, reason, count in rows:
        code = (reason or "").split(":", 1)[0][:40] if status == "refused" else ""
        counts[(status, code)] = counts.get((status, code), 0) + int(count)
    return counts


def _outbound(conn: Connection) -> dict[str, int]:
    return {state: int(n) for state, n in conn.execute(
        sa.select(outbound_messages.c.state, sa.func.count()).group_by(outbound_messages.c.state))}


def _count(conn: Connection, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())
