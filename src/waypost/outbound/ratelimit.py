"""Send rate and quota, shared by every worker process through the database.

The outbox admits a message under the send lock, in the transaction that checked the limits.

- **rate**: at most ``floor(per_second)`` messages in any window of one second (a rate below
  1/s means one per ``1/per_second`` seconds). A message counts at its ``window_at``: a time
  taken once its handoff was committed, so known to be no earlier than the moment its bytes
  started to leave; while it is still ``sending`` it holds its place whatever the clock says.
  The next message may only be admitted a full window after that time, so the real sends can
  never be closer together than the window, however long a commit or an fsync took in
  between. (Counting admission times instead let a delayed commit push 15 sends into one
  second at 14/s.) The window is a little longer than a second (``margin``) for the clock
  readings of different processes. What this cannot see is the network: two sends that
  reach the provider with different delays may arrive closer together than they left; the
  margin absorbs up to 20 ms of such difference (SES tolerates brief excess).
- **quota**: at most ``per_day`` messages handed to the transport in any 24 hours (SES counts
  recipients; every Waypost message has one), kept as counts per minute so the check stays
  cheap at a million a day, plus the messages admitted and not yet handed over. A send the
  provider refused (throttling, a temporary error) is taken back off the count. A minute
  counts whole while any of it is inside the 24 hours, which errs on the side of sending later.

A sliding window over real times never lets a one-second window exceed the limit, which a
token bucket with a burst would.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.store.db import conflict_insert
from waypost.store.models import OutboundState, outbound_messages, send_minutes

DAY = timedelta(hours=24)
MINUTE = timedelta(minutes=1)
DEFAULT_MARGIN = 0.02  # seconds
# a message ``sending`` for longer than this (by default the job lease) is taken to have died
# with its worker: it stops holding a place in the rate window (the lease brings it back later)
IN_FLIGHT_LIMIT = timedelta(minutes=5)
# how long to look again when only messages still in flight fill the window
IN_FLIGHT_POLL = 0.1


@dataclass(frozen=True)
class Limits:
    per_second: float
    per_day: int | None  # None: no daily quota
    source: str = "settings"  # where the numbers came from, for `waypost status` and logs

    def describe(self) -> str:
        day = "no daily quota" if self.per_day is None else f"{self.per_day}/24h"
        return f"{self.per_second:g}/s, {day} ({self.source})"


@dataclass(frozen=True)
class Wait:
    seconds: float
    why: str


class RateLimiter:
    """``limits`` may be a function, called on first use: reading them from a provider is a
    network call that commands which never send (``waypost pause``) must not wait for."""

    def __init__(self, limits: Limits | Callable[[], Limits], *, margin: float = DEFAULT_MARGIN,
                 in_flight_limit: timedelta = IN_FLIGHT_LIMIT) -> None:
        self._limits = limits
        self.margin = margin
        self.in_flight_limit = in_flight_limit
        self._lock = threading.Lock()

    @property
    def limits(self) -> Limits:
        if callable(self._limits):
            with self._lock:
                if callable(self._limits):
                    self._limits = self._limits()
        assert isinstance(self._limits, Limits)
        return self._limits

    @property
    def burst(self) -> int:
        return math.floor(self.limits.per_second) if self.limits.per_second >= 1 else 1

    @property
    def window(self) -> timedelta:
        per_second = self.limits.per_second
        return timedelta(seconds=(1 if per_second >= 1 else 1 / per_second) + self.margin)

    def wait_before(self, conn: Connection, now: datetime) -> Wait | None:
        """None when a message may be admitted at ``now``; else how long until one may."""
        wait = self._rate_wait(conn, now)
        if wait is not None:
            return Wait(wait, f"rate limit {self.limits.per_second:g}/s")
        if self.limits.per_day is not None:
            wait = self._quota_wait(conn, now, self.limits.per_day)
            if wait is not None:
                return Wait(wait, f"daily quota {self.limits.per_day}/24h reached")
        return None

    def handed_over(self, conn: Connection, at: datetime) -> None:
        """Count one message handed to the transport, in its minute."""
        minute = at.replace(second=0, microsecond=0)
        bumped = conn.execute(send_minutes.update().where(send_minutes.c.minute == minute)
                              .values(count=send_minutes.c.count + 1)).rowcount
        if not bumped:
            # the minute's first send: handoffs are not serialised like admissions, so another
            # worker's may insert the row first (on PostgreSQL it then waits for our commit)
            conn.execute(send_minutes.delete().where(send_minutes.c.minute < at - DAY - 2 * MINUTE))
            insert = conflict_insert(conn, send_minutes)
            conn.execute(insert.values(minute=minute, count=1).on_conflict_do_update(
                index_elements=[send_minutes.c.minute], set_={"count": send_minutes.c.count + 1}))

    @staticmethod
    def refund(conn: Connection, at: datetime) -> None:
        """Take back a count: the provider refused what was handed over at ``at``."""
        minute = at.replace(second=0, microsecond=0)
        conn.execute(send_minutes.update().where(send_minutes.c.minute == minute, send_minutes.c.count > 0)
                     .values(count=send_minutes.c.count - 1))

    def _in_flight(self, now: datetime) -> sa.ColumnElement[bool]:
        """Admitted and not finished (and not so old that its worker must have died)."""
        return sa.and_(outbound_messages.c.state == OutboundState.SENDING,
                       outbound_messages.c.admitted_at > now - self.in_flight_limit)

    def _recent(self, now: datetime) -> sa.ColumnElement[bool]:
        """Finished sends still inside the rate window."""
        return sa.and_(outbound_messages.c.window_at > now - self.window,
                       outbound_messages.c.state != OutboundState.SENDING)

    def _rate_wait(self, conn: Connection, now: datetime) -> float | None:
        table = outbound_messages
        in_flight = conn.execute(sa.select(sa.func.count()).where(self._in_flight(now))).scalar_one()
        recent = self._recent(now)
        done = conn.execute(sa.select(sa.func.count()).where(recent)).scalar_one()
        must_leave = in_flight + done - self.burst + 1
        if must_leave <= 0:
            return None
        if must_leave > done:  # only sends still in flight can free a place
            return IN_FLIGHT_POLL
        leaving = conn.execute(sa.select(table.c.window_at).where(recent).order_by(table.c.window_at)
                               .offset(must_leave - 1).limit(1)).scalar_one()
        return max((leaving + self.window - now).total_seconds(), 0.001)

    def _quota_wait(self, conn: Connection, now: datetime, per_day: int) -> float | None:
        table = outbound_messages
        # admitted, not yet handed over: each may still use a place
        pending = conn.execute(sa.select(sa.func.count()).where(
            self._in_flight(now), table.c.handoff_at.is_(None))).scalar_one()
        buckets = conn.execute(sa.select(send_minutes.c.minute, send_minutes.c.count)
                               .where(send_minutes.c.minute > now - DAY - MINUTE)
                               .order_by(send_minutes.c.minute)).all()
        total = pending + sum(count for _, count in buckets)
        if total < per_day:
            return None
        for minute, count in buckets:  # oldest first: when enough have left the 24 hours
            total -= count
            if total < per_day:
                return max((minute + MINUTE + DAY - now).total_seconds(), 0.001)
        return DAY.total_seconds()

    def used(self, conn: Connection, now: datetime) -> tuple[int, int]:
        """Messages in the current rate window (sent or in flight), and admissions in 24 hours."""
        window = conn.execute(sa.select(sa.func.count()).where(
            sa.or_(self._in_flight(now), self._recent(now)))).scalar_one()
        day = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(send_minutes.c.count), 0))
                           .where(send_minutes.c.minute > now - DAY - MINUTE)).scalar_one()
        return int(window), int(day)
