"""Send rate and quota, shared by every worker process through the database.

The outbox admits a message by writing ``admitted_at`` in the same transaction that checked
the limits, under the send lock; the limits are sliding windows over those times:

- **rate**: at most ``floor(per_second)`` admissions in any window of one second (a rate
  below 1/s admits one per ``1/per_second`` seconds). The window is a little longer than a
  second (``margin``) because a message reaches the provider a few milliseconds after its
  admission and those delays vary; without it two sends admitted exactly a second apart
  could arrive less than a second apart.
- **quota**: at most ``per_day`` admissions in any 24 hours (SES counts recipients; every
  Waypost message has one).

A sliding window over real times never lets a one-second window exceed the limit, which a
token bucket with a burst would; SES tolerates brief excess, mailbox providers and our own
promise in the docs do not need to rely on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.store.models import outbound_messages

DAY = timedelta(hours=24)
DEFAULT_MARGIN = 0.02  # seconds


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
    def __init__(self, limits: Limits, *, margin: float = DEFAULT_MARGIN) -> None:
        self.limits = limits
        if limits.per_second >= 1:
            self.burst = math.floor(limits.per_second)
            self.window = timedelta(seconds=1 + margin)
        else:
            self.burst = 1
            self.window = timedelta(seconds=1 / limits.per_second + margin)

    def wait_before(self, conn: Connection, now: datetime) -> Wait | None:
        """None when a message may be admitted at ``now``; else how long until one may."""
        wait = self._window_wait(conn, now, self.window, self.burst)
        if wait is not None:
            return Wait(wait, f"rate limit {self.limits.per_second:g}/s")
        if self.limits.per_day is not None:
            wait = self._window_wait(conn, now, DAY, self.limits.per_day)
            if wait is not None:
                return Wait(wait, f"daily quota {self.limits.per_day}/24h reached")
        return None

    @staticmethod
    def _window_wait(conn: Connection, now: datetime, window: timedelta, limit: int) -> float | None:
        since = now - window
        in_window = outbound_messages.c.admitted_at > since
        count = conn.execute(sa.select(sa.func.count()).where(in_window)).scalar_one()
        if count < limit:
            return None
        # the window frees a place when its (count - limit + 1)-th oldest admission leaves it
        leaving = conn.execute(
            sa.select(outbound_messages.c.admitted_at).where(in_window)
            .order_by(outbound_messages.c.admitted_at).offset(count - limit).limit(1)
        ).scalar_one()
        return max((leaving + window - now).total_seconds(), 0.001)

    def used(self, conn: Connection, now: datetime) -> tuple[int, int]:
        """Admissions in the last second and the last 24 hours."""
        def count(window: timedelta) -> int:
            return int(conn.execute(sa.select(sa.func.count())
                                    .where(outbound_messages.c.admitted_at > now - window)).scalar_one())
        return count(timedelta(seconds=1)), count(DAY)
