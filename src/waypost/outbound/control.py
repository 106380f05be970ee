"""The pause switches the outbox honours: one for all sending (scope ``*``) and one per stream.

A pause records who set it and why; it lifts only when an operator resumes it (the
reputation guard and the provider pause, never resume). Paused messages keep their place:
nothing is dropped, and on resume every waiting send job becomes due at once (the rate
limiter still paces them). Every pause and resume is kept in ``pause_log``.

The operator stream (alarm mail to the operator) is held only by its own scope, not by the
global one: an alarm saying "sending is paused" must not wait for the resume it asks for.
It still passes the rate and the quota, but never the suppression list: that list is the
people's, and one click or one bounce must not silence the operator's alarms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.store.models import JobState, jobs, pause_log, sending_pauses, utcnow

ALL = "*"
OPERATOR_STREAM = "operator"


@dataclass(frozen=True)
class Pause:
    scope: str
    reason: str
    paused_by: str
    paused_at: datetime


def paused(conn: Connection, stream: str) -> Pause | None:
    """The pause that holds ``stream`` back (the global one first), or None."""
    scopes = (stream,) if stream == OPERATOR_STREAM else (ALL, stream)
    rows = {row.scope: row for row in conn.execute(
        sa.select(sending_pauses).where(sending_pauses.c.scope.in_(scopes)))}
    row = rows.get(ALL) or rows.get(stream)
    return None if row is None else Pause(row.scope, row.reason, row.paused_by, row.paused_at)


def pauses(conn: Connection) -> list[Pause]:
    return [Pause(r.scope, r.reason, r.paused_by, r.paused_at)
            for r in conn.execute(sa.select(sending_pauses).order_by(sending_pauses.c.scope))]


def pause(conn: Connection, scope: str, reason: str, *, by: str) -> bool:
    """Pause ``scope``; False when it was paused already (the first reason is kept)."""
    if conn.execute(sa.select(sending_pauses.c.scope).where(sending_pauses.c.scope == scope)).first():
        return False
    now = utcnow()
    conn.execute(sending_pauses.insert().values(scope=scope, reason=reason[:2000], paused_by=by[:64], paused_at=now))
    conn.execute(pause_log.insert().values(at=now, scope=scope, action="pause", by=by[:64], reason=reason[:2000]))
    return True


def resume(conn: Connection, scope: str, send_job_kind: str = "send", *, by: str = "operator") -> bool:
    """Lift the pause on ``scope``; waiting send jobs become due now. False when not paused."""
    if conn.execute(sending_pauses.delete().where(sending_pauses.c.scope == scope)).rowcount == 0:
        return False
    now = utcnow()
    conn.execute(pause_log.insert().values(at=now, scope=scope, action="resume", by=by[:64]))
    waiting = (jobs.c.kind == send_job_kind, jobs.c.state == JobState.QUEUED, jobs.c.run_after > now)
    conn.execute(jobs.update().where(*waiting).values(run_after=now, updated_at=now))
    return True


def last_resumed(conn: Connection, scopes: tuple[str, ...]) -> datetime | None:
    """When any of ``scopes`` was last resumed (the reputation guard judges only what came after)."""
    return conn.execute(sa.select(sa.func.max(pause_log.c.at)).where(
        pause_log.c.action == "resume", pause_log.c.scope.in_(scopes))).scalar()


def history(conn: Connection, *, limit: int = 20) -> list[sa.Row]:
    return list(conn.execute(sa.select(pause_log).order_by(pause_log.c.id.desc()).limit(limit)))
