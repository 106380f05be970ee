"""The reputation guard: Waypost pauses itself before SES would.

Rates are hard bounces and complaints (as the feedback policy counts them) over sends, in
three windows (the last N sends, 24 hours, 7 days), for all mail and for each stream. A
window with fewer than ``min_sends`` sends is shown but never acted on: two bounces out of
ten sends say little. Crossing a warn threshold raises an alarm; crossing a pause threshold
pauses sending (all of it, or the stream whose own rate crossed) with the reason recorded.
Only an operator lifts such a pause, and from that resume on the guard judges only sends
and feedback that came after it, so it does not pause again on the evidence already seen.

Compromise signals are checked for each message at admission, under the send lock:

- a stream that only answers people who wrote in (``known_recipients_only``) sending to an
  address never seen inbound: something else is sending through us; the stream is paused;
- a volume spike: sends in the last hour over ``spike_factor`` × the hourly mean of the last
  7 days and over ``spike_min_per_hour``: all sending is paused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.config import GuardSettings
from waypost.outbound import control
from waypost.store.models import (
    InboundStatus,
    OutboundState,
    feedback_events,
    inbound_messages,
    outbound_messages,
    utcnow,
)

log = logging.getLogger(__name__)

GUARD = "reputation-guard"
OK, WARN, PAUSE = "ok", "warn", "pause"
SPIKE_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class Window:
    name: str  # "last 1000 sends", "24 hours", "7 days"
    stream: str | None  # None: all mail
    sends: int
    bounces: int
    complaints: int
    judged: bool  # enough sends to act on

    @property
    def bounce_rate(self) -> float:
        return self.bounces / self.sends if self.sends else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sends if self.sends else 0.0

    @property
    def scope(self) -> str:
        return self.stream or control.ALL


@dataclass(frozen=True)
class Finding:
    level: str  # warn | pause
    scope: str
    text: str


@dataclass(frozen=True)
class Assessment:
    windows: tuple[Window, ...]
    findings: tuple[Finding, ...]

    @property
    def level(self) -> str:
        levels = {f.level for f in self.findings}
        return PAUSE if PAUSE in levels else WARN if WARN in levels else OK


class ReputationGuard:
    def __init__(self, settings: GuardSettings, streams: Callable[[], tuple[str, ...]]) -> None:
        self.settings = settings
        self.streams = streams
        self._spike_checked = 0.0
        self._spike: str | None = None
        self._judged = float("-inf")
        self._lock = threading.Lock()

    # -- rates -----------------------------------------------------------------------------

    def assess(self, conn: Connection, now: datetime | None = None) -> Assessment:
        now = now or utcnow()
        windows = []
        for stream in (None, *self.streams()):
            since = control.last_resumed(conn, (control.ALL,) if stream is None else (control.ALL, stream))
            windows.extend(self._windows(conn, now, stream, since))
        findings = tuple(f for w in windows if w.judged for f in self._judge(w))
        return Assessment(tuple(windows), findings)

    def enforce_if_due(self, conn: Connection) -> Assessment | None:
        """``enforce`` unless this process judged less than ``check_seconds`` ago: counting the
        windows after every batch of a busy feedback queue would cost more than the batch. What
        is skipped is judged at the next batch or the next alarm check, within a minute."""
        with self._lock:
            if time.monotonic() - self._judged < self.settings.check_seconds:
                return None
            self._judged = time.monotonic()
        return self.enforce(conn)

    def enforce(self, conn: Connection) -> Assessment:
        """Assess and pause what crossed a pause threshold (inside the caller's transaction)."""
        assessment = self.assess(conn)
        pauses = [f for f in assessment.findings if f.level == PAUSE]
        if any(f.scope == control.ALL for f in pauses):  # one pause, one resume: not one per stream too
            pauses = [next(f for f in pauses if f.scope == control.ALL)]
        for finding in pauses:
            if control.pause(conn, finding.scope, finding.text, by=GUARD):
                log.error("reputation guard paused %s: %s", _scope_name(finding.scope), finding.text)
        for finding in assessment.findings:
            if finding.level == WARN:
                log.warning("reputation: %s", finding.text)
        return assessment

    def _windows(self, conn: Connection, now: datetime, stream: str | None, since: datetime | None) -> list[Window]:
        starts = {"24 hours": now - timedelta(hours=24), "7 days": now - timedelta(days=7)}
        nth = self._nth_last_send(conn, stream)
        if nth is not None:
            starts[f"last {self.settings.last_sends} sends"] = nth
        windows = []
        for name, start in starts.items():
            start = max(start, since) if since else start
            sends = self._count_sends(conn, stream, start)
            bounces, complaints = self._count_feedback(conn, stream, start)
            windows.append(Window(name, stream, sends, bounces, complaints, sends >= self.settings.min_sends))
        return windows

    def _judge(self, w: Window) -> list[Finding]:
        s = self.settings
        where = f"{w.name}{'' if w.stream is None else ' of stream ' + w.stream}"
        out = []
        for what, rate, warn, pause in (("bounce", w.bounce_rate, s.bounce_warn, s.bounce_pause),
                                        ("complaint", w.complaint_rate, s.complaint_warn, s.complaint_pause)):
            count = w.bounces if what == "bounce" else w.complaints
            text = f"{what} rate {rate:.2%} over the {where} ({count} of {w.sends} sends)"
            if rate >= pause:
                out.append(Finding(PAUSE, w.scope, f"{text} reached the pause threshold {pause:.2%}"))
            elif rate >= warn:
                out.append(Finding(WARN, w.scope, f"{text} reached the warning threshold {warn:.2%}"))
        return out

    def _sent(self, stream: str | None) -> list[sa.ColumnElement[bool]]:
        conditions = [outbound_messages.c.state == OutboundState.SENT, outbound_messages.c.window_at.is_not(None)]
        if stream is not None:
            conditions.append(outbound_messages.c.stream == stream)
        return conditions

    def _nth_last_send(self, conn: Connection, stream: str | None) -> datetime | None:
        return conn.execute(sa.select(outbound_messages.c.window_at).where(*self._sent(stream))
                            .order_by(outbound_messages.c.window_at.desc())
                            .offset(self.settings.last_sends - 1).limit(1)).scalar()

    def _count_sends(self, conn: Connection, stream: str | None, start: datetime) -> int:
        return int(conn.execute(sa.select(sa.func.count()).where(
            *self._sent(stream), outbound_messages.c.window_at >= start)).scalar_one())

    def _count_feedback(self, conn: Connection, stream: str | None, start: datetime) -> tuple[int, int]:
        query = (sa.select(feedback_events.c.counts_as, sa.func.count())
                 .where(feedback_events.c.counts_as.is_not(None), feedback_events.c.received_at >= start)
                 .group_by(feedback_events.c.counts_as))
        if stream is not None:
            query = query.where(feedback_events.c.stream == stream)
        counts: dict[str, int] = {kind: count for kind, count in conn.execute(query).all()}
        return int(counts.get("bounce", 0)), int(counts.get("complaint", 0))

    # -- compromise signals ----------------------------------------------------------------

    def check_send(self, conn: Connection, stream: str, recipient: str) -> tuple[str, str] | None:
        """(scope, reason) to pause for before sending this message, or None."""
        if not self.settings.compromise_checks:
            return None
        if stream in self.settings.known_recipients_only and not _seen_inbound(conn, recipient):
            return stream, (f"compromise signal: stream {stream} was about to mail {recipient}, who never wrote "
                            "to us; it only ever answers people who did")
        spike = self._volume_spike(conn)
        return (control.ALL, spike) if spike else None

    def _volume_spike(self, conn: Connection) -> str | None:
        with self._lock:
            if time.monotonic() - self._spike_checked < SPIKE_CACHE_SECONDS:
                return self._spike
            self._spike_checked = time.monotonic()
        now = utcnow()
        last_hour = self._count_sends(conn, None, now - timedelta(hours=1))
        week = self._count_sends(conn, None, now - timedelta(days=7))
        mean = week / (7 * 24)
        limit = max(self.settings.spike_min_per_hour, self.settings.spike_factor * mean)
        spike = None
        if last_hour > limit:
            spike = (f"compromise signal: {last_hour} sends in the last hour, over {limit:.0f} "
                     f"({self.settings.spike_factor:g} × the hourly mean of 7 days, {mean:.1f})")
        with self._lock:
            self._spike = spike
        return spike


def _seen_inbound(conn: Connection, address: str) -> bool:
    """Has ``address`` written to us in mail we processed? (Refused mail proves nothing: its
    From could be anyone's.)"""
    forms = {address, address.lower()}
    return conn.execute(sa.select(inbound_messages.c.id).where(
        inbound_messages.c.from_address.in_(forms), inbound_messages.c.status == InboundStatus.PROCESSED)
        .limit(1)).first() is not None


def _scope_name(scope: str) -> str:
    return "all sending" if scope == control.ALL else f"stream {scope}"
