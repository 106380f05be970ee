"""A device that suddenly sends far more than usual is paused (disabled) and its owner told,
as the outbound compromise guard (reputation/guard.py) does for all sending: more relayed
messages in the last hour than ``factor`` × its hourly mean over the last seven days, and at
least ``min_per_hour`` of them. A stolen device password is the usual cause;
`waypost relay device rotate-password` enables the device again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.apps.relay import devices
from waypost.apps.relay.devices import Device
from waypost.store.models import relay_links, utcnow

WEEK_HOURS = 7 * 24


@dataclass(frozen=True)
class SpikeRule:
    factor: float
    min_per_hour: int

    def check(self, conn: Connection, device: Device) -> str | None:
        """Disable ``device`` when its last hour is a spike (in the caller's transaction); the
        reason, or None. The message being handled counts (its links are written first)."""
        now = utcnow()
        hour = self._messages(conn, device.name, now - timedelta(hours=1))
        week = self._messages(conn, device.name, now - timedelta(hours=WEEK_HOURS))
        usual = max((week - hour) / (WEEK_HOURS - 1), 1.0)
        if hour < self.min_per_hour or hour <= self.factor * usual:
            return None
        reason = f"spike: {hour} messages in the last hour, usually {usual:.1f}; paused"
        devices.disable(conn, device.name, reason)
        return reason

    @staticmethod
    def _messages(conn: Connection, device: str, since: object) -> int:
        c = relay_links.c
        query = sa.select(sa.func.count(sa.distinct(c.message_id))).where(c.device == device, c.created_at > since)
        return int(conn.execute(query).scalar_one())
