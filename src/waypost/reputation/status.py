"""One reading of the service's state, shared by `waypost status`, the alarms and the
Prometheus metrics, so the three never disagree."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.outbound import control, listing, suppression
from waypost.outbound.ratelimit import Limits, RateLimiter
from waypost.reputation.guard import Assessment, ReputationGuard
from waypost.store.models import (
    InboundStatus,
    JobState,
    OutboundState,
    feedback_events,
    feedback_unreadable,
    inbound_messages,
    jobs,
    outbound_messages,
    utcnow,
)
from waypost.store.queue import job_counts


@dataclass(frozen=True)
class QueueState:
    counts: dict[tuple[str, str], int]  # (kind, state) → jobs
    due: int  # queued and due now
    oldest_due_seconds: float | None  # how long the longest-waiting due job has waited
    stale: int  # due jobs that have waited longer than the stale threshold

    @property
    def dead(self) -> int:
        return sum(n for (_, state), n in self.counts.items() if state == JobState.DEAD)


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
    # bounces about our own sending (feedback.reasons' "setup" family), by reason, last 24 hours,
    # and how many raise the sending_setup alarm (feedback.setup_alarm_count)
    setup_last_day: dict[str, int] = field(default_factory=dict)
    setup_advice: dict[str, str] = field(default_factory=dict)  # reason → what to check
    setup_alarm_after: int = 3
    # bounces of mail to the operator (stream "operator"), last 7 days: the operator cannot be reached
    operator_bounces: int = 0


def read_snapshot(engine: Engine, limiter: RateLimiter, guard: ReputationGuard, *,
                  stale_after: timedelta, setup_alarm_after: int = 3) -> Snapshot:
    now = utcnow()
    with engine.connect() as conn:
        used_second, used_day = limiter.used(conn, now)
        return Snapshot(
            at=now, queue=_queue(conn, now, stale_after), outbound=listing.counts_by_state(conn),
            unconfirmed=listing.unconfirmed_count(conn),
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
            **_setup_reasons(conn, now - timedelta(days=1)), setup_alarm_after=setup_alarm_after,
            operator_bounces=_count(conn, feedback_events, feedback_events.c.kind == "bounce",
                                    feedback_events.c.stream == control.OPERATOR_STREAM,
                                    feedback_events.c.received_at > now - timedelta(days=7)),
        )


def _setup_reasons(conn: Connection, since: datetime) -> dict[str, Any]:
    """Bounces the policy counted as "setup" (about our sending), by reason, with what to check:
    the policy's note reads "<reason>: about our sending ...; check <advice>"."""
    rows = conn.execute(sa.select(feedback_events.c.note).where(
        feedback_events.c.counts_as == "setup", feedback_events.c.received_at > since).limit(10_000))
    counts: Counter[str] = Counter()
    advice: dict[str, str] = {}
    for (note,) in rows:
        reason = (note or "undefined").split(":", 1)[0]
        counts[reason] += 1
        advice.setdefault(reason, (note or "").partition("; check ")[2] or "read the diagnostic")
    return {"setup_last_day": dict(counts), "setup_advice": advice}


def _queue(conn: Connection, now: datetime, stale_after: timedelta) -> QueueState:
    counts = job_counts(conn)
    due = (jobs.c.state == JobState.QUEUED, jobs.c.run_after <= now)
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
        code = (reason or "").split(":", 1)[0][:40] if status == InboundStatus.REFUSED else ""
        counts[(status, code)] = counts.get((status, code), 0) + int(count)
    return counts


def _count(conn: Connection, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


# -- day by day, for the console's charts ------------------------------------------------------


def daily_series(conn: Connection, days: int) -> dict[str, list[tuple[str, float]]]:
    """Per UTC day of the last ``days`` (today included), oldest first, as ('YYYY-MM-DD', n):
    ``sends`` as the guard counts them (sent, by rate-window time), and ``bounces`` and
    ``complaints`` that count toward the rates (by when they arrived). Days without any are 0."""
    now = utcnow()
    start = now.date() - timedelta(days=days - 1)
    labels = [(start + timedelta(days=i)).isoformat() for i in range(days)]
    since = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    sends = _sends_by_day(conn, since)
    counted = _counted_feedback_by_day(conn, since)
    return {
        "sends": [(d, float(sends.get(d, 0))) for d in labels],
        "bounces": [(d, float(counted.get((d, "bounce"), 0))) for d in labels],
        "complaints": [(d, float(counted.get((d, "complaint"), 0))) for d in labels],
    }


def _sends_by_day(conn: Connection, since: datetime) -> dict[str, int]:
    day = _utc_day(conn, outbound_messages.c.window_at)
    rows = conn.execute(sa.select(day, sa.func.count()).where(
        outbound_messages.c.state == OutboundState.SENT, outbound_messages.c.window_at >= since).group_by(day))
    return {str(d): int(n) for d, n in rows}


def _counted_feedback_by_day(conn: Connection, since: datetime) -> dict[tuple[str, str], int]:
    day = _utc_day(conn, feedback_events.c.received_at)
    rows = conn.execute(sa.select(day, feedback_events.c.counts_as, sa.func.count()).where(
        feedback_events.c.counts_as.is_not(None), feedback_events.c.received_at >= since)
        .group_by(day, feedback_events.c.counts_as))
    return {(str(d), kind): int(n) for d, kind, n in rows}


def _utc_day(conn: Connection, column: Any) -> Any:
    """The UTC day of a timestamp column as 'YYYY-MM-DD' (SQLite stores UTC without a zone)."""
    if conn.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", column)
