"""Alarms: conditions an operator must hear about, evaluated from one status snapshot.

Queue thresholds follow AWS's reference design for an SES mail pipeline (dead letters over
50, the oldest message older than 3 minutes, more than 180 messages older than 5 minutes),
all settable in ``[alarms]``. A firing alarm is logged when it starts and when it clears,
shown by `waypost status` and `/metrics`, and mailed to the operator (``operator_email``,
never a user) at most once per ``mail_interval_hours`` while it keeps firing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.config import AlarmSettings
from waypost.reputation.status import Snapshot
from waypost.store.db import conflict_insert, is_postgres
from waypost.store.models import alarm_states, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alarm:
    name: str
    firing: bool
    value: float
    threshold: float
    detail: str
    advice: str


def evaluate(snapshot: Snapshot, settings: AlarmSettings) -> list[Alarm]:
    queue, assessment = snapshot.queue, snapshot.assessment
    oldest = queue.oldest_due_seconds or 0.0
    rates = {what: [f.text for f in assessment.findings if f.text.startswith(what)] for what in ("bounce", "complaint")}
    worst = {what: max((getattr(w, f"{what}_rate") for w in assessment.windows if w.judged), default=0.0)
             for what in ("bounce", "complaint")}
    return [
        Alarm("dead_letters", queue.dead > settings.dead_letters, queue.dead, settings.dead_letters,
              f"{queue.dead} dead-lettered jobs", "see `waypost dead-letters list`; retry or fix their cause"),
        Alarm("oldest_job", oldest > settings.oldest_job_seconds, oldest, settings.oldest_job_seconds,
              f"the oldest due job has waited {oldest:.0f} s", "is a worker running? see `waypost status`"),
        Alarm("stale_jobs", queue.stale > settings.stale_jobs, queue.stale, settings.stale_jobs,
              f"{queue.stale} due jobs have waited over {settings.stale_job_seconds:.0f} s",
              "the workers cannot keep up, or are stuck: start more or look at their logs"),
        Alarm("sending_paused", bool(snapshot.pauses), len(snapshot.pauses), 0,
              "; ".join(f"{p.scope} paused by {p.paused_by}: {p.reason}" for p in snapshot.pauses) or "sending",
              "find the cause, then `waypost resume` (see docs/feedback.md)"),
        Alarm("bounce_rate", bool(rates["bounce"]), worst["bounce"], 0,
              "; ".join(rates["bounce"]) or "bounce rate below the warning threshold",
              "look at `waypost feedback list --kind bounce`: where did these addresses come from?"),
        Alarm("complaint_rate", bool(rates["complaint"]), worst["complaint"], 0,
              "; ".join(rates["complaint"]) or "complaint rate below the warning threshold",
              "people mark our mail as spam: look at `waypost feedback list --kind complaint`"),
        Alarm("unreadable_feedback", snapshot.unreadable > 0, snapshot.unreadable, 0,
              f"{snapshot.unreadable} feedback messages could not be read in 24 hours",
              "see `waypost feedback unreadable`"),
        _sending_setup(snapshot),
        Alarm("operator_mail_bouncing", snapshot.operator_bounces > 0, snapshot.operator_bounces, 0,
              f"{snapshot.operator_bounces} mails to the operator bounced in 7 days: alarms and notices may not "
              "reach anyone", "check operator_email and operator_forward_to; mail to the operator is never "
              "suppressed, so it is tried again every time (see `waypost feedback list --kind bounce`)"),
    ]


def _sending_setup(snapshot: Snapshot) -> Alarm:
    """Bounces that blame our sending (authentication, blocklists, reverse DNS, spam verdicts,
    rate limits) suppress nobody; enough of them in a day mean the setup needs a look, and the
    advice names what to check for each reason seen, most frequent first."""
    seen = sorted(snapshot.setup_last_day.items(), key=lambda item: (-item[1], item[0]))
    total = sum(count for _, count in seen)
    detail = ", ".join(f"{count} {reason}" for reason, count in seen)
    checks = "; ".join(f"{reason}: {snapshot.setup_advice.get(reason, 'read the diagnostic')}"
                       for reason, _ in seen[:4])
    return Alarm("sending_setup", total >= snapshot.setup_alarm_after, total, snapshot.setup_alarm_after,
                 f"{total} bounces in 24 hours blamed our sending ({detail or 'none'})",
                 f"check {checks}; then `waypost feedback list --outcome review`" if checks
                 else "see `waypost feedback list --outcome review`")


# queues the operator mail for one firing alarm, inside the transaction that records it
Notify = Callable[[Connection, Alarm, datetime], None]


class AlarmMonitor:
    def __init__(self, engine: Engine, settings: AlarmSettings, read: Callable[[], Snapshot],
                 notify: Notify | None = None, judge: Callable[[Connection], object] | None = None) -> None:
        """``judge``: the reputation guard's enforce, run first, so a pause the feedback path
        left for later is never more than one check away."""
        self.judge = judge
        self.engine = engine
        self.settings = settings
        self.read = read
        self.notify = notify if settings.mail_operator else None

    def check(self) -> list[Alarm]:
        if self.judge is not None:
            with self.engine.begin() as conn:
                self.judge(conn)
        alarms = evaluate(self.read(), self.settings)
        self.record(alarms)
        return alarms

    def record(self, alarms: list[Alarm]) -> None:
        """Log, store and mail these alarms' states as ``check`` does its own; for alarms
        judged elsewhere (the doctor's drift alarm), which ``check`` then leaves alone."""
        now = utcnow()
        with self.engine.begin() as conn:
            states = self._lock_states(conn, [alarm.name for alarm in alarms], now)
            for alarm in alarms:
                self._record(conn, alarm, states[alarm.name], now)

    @staticmethod
    def _lock_states(conn: Connection, names: list[str], now: datetime) -> dict[str, sa.Row]:
        """Every worker checks the alarms: the rows are created if missing and then locked
        (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises already), so two workers neither
        collide on the first insert nor both mail the operator about the same alarm."""
        insert = conflict_insert(conn, alarm_states)
        conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]),
                     [{"name": name, "firing": False, "since": now} for name in names])
        query = sa.select(alarm_states).where(alarm_states.c.name.in_(names)).order_by(alarm_states.c.name)
        return {row.name: row for row in conn.execute(query.with_for_update() if is_postgres(conn) else query)}

    def _record(self, conn: Connection, alarm: Alarm, before: sa.Row, now: datetime) -> None:
        changed = before.firing != alarm.firing
        if changed and alarm.firing:
            log.error("ALARM %s: %s (%s)", alarm.name, alarm.detail, alarm.advice)
        elif changed:
            log.info("alarm %s cleared", alarm.name)
        since = now if changed else before.since
        mailed = before.mailed_at  # kept across changes: a flapping alarm still mails once per interval
        due = mailed is None or now - mailed >= timedelta(hours=self.settings.mail_interval_hours)
        if alarm.firing and self.notify is not None and due:
            self.notify(conn, alarm, since)
            mailed = now
        values = {"firing": alarm.firing, "since": since, "value": float(alarm.value), "detail": alarm.detail[:2000],
                  "mailed_at": mailed}
        conn.execute(alarm_states.update().where(alarm_states.c.name == alarm.name).values(**values))

