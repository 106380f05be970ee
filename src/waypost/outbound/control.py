"""The pause switches the outbox honours: one for all sending (scope ``*``) and one per stream.

A pause records who set it and why; it lifts only when someone resumes it (an operator, or
later the reputation guard). Paused messages keep their place: nothing is dropped, and on
resume every waiting send job becomes due at once (the rate limiter still paces them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.store.models import jobs, sending_pauses, utcnow

ALL = "*"


@dataclass(frozen=True)
class Pause:
    scope: str
    reason: str
    paused_by: str
    paused_at: datetime


def paused(conn: Connection, stream: str) -> Pause | None:
    """The pause that holds ``stream`` back (the global one first), or None."""
    rows = {row.scope: row for row in conn.execute(
        sa.select(sending_pauses).where(sending_pauses.c.scope.in_((ALL, stream))))}
    row = rows.get(ALL) or rows.get(stream)
    return None if row is None else Pause(row.scope, row.reason, row.paused_by, row.paused_at)


def pauses(conn: Connection) -> list[Pause]:
    return [Pause(r.scope, r.reason, r.paused_by, r.paused_at)
            for r in conn.execute(sa.select(sending_pauses).order_by(sending_pauses.c.scope))]


def pause(conn: Connection, scope: str, reason: str, *, by: str) -> bool:
    """Pause ``scope``; False when it was paused already (the first reason is kept)."""
    if conn.execute(sa.select(sending_pauses.c.scope).where(sending_pauses.c.scope == scope)).first():
        return False
    conn.execute(sending_pauses.insert().values(scope=scope, reason=reason[:2000], paused_by=by[:64],
                                                paused_at=utcnow()))
    return True


def resume(conn: Connection, scope: str, send_job_kind: str = "send") -> bool:
    """Lift the pause on ``scope``; waiting send jobs become due now. False when not paused."""
    if conn.execute(sending_pauses.delete().where(sending_pauses.c.scope == scope)).rowcount == 0:
        return False
    now = utcnow()
    conn.execute(jobs.update().where(jobs.c.kind == send_job_kind, jobs.c.state == "queued", jobs.c.run_after > now)
                 .values(run_after=now, updated_at=now))
    return True
