"""Doctor runs kept in the database, the drift they show, and the worker's rerun.

Drift: a check that was ``ok`` in the previous run and fails now. It stays drift in the runs
after while it keeps failing, so the ``doctor_drift`` alarm keeps firing (and is mailed once
per ``alarms.mail_interval_hours``) until the check passes again or is fixed otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.clock import utcnow
from waypost.doctor.results import Report, Status, statuses
from waypost.reputation.alarms import Alarm, AlarmMonitor
from waypost.store.models import doctor_runs

log = logging.getLogger(__name__)

DRIFT_ALARM = "doctor_drift"
RETRY_AFTER = timedelta(minutes=30)  # after a run that raised, before the next try
RECHECK = timedelta(hours=1)  # longest wait between looks at the latest run (another worker's)


@dataclass(frozen=True)
class DoctorRun:
    id: int
    at: datetime
    origin: str
    report: Report
    drift: tuple[str, ...]


def drift(previous: DoctorRun | None, report: Report) -> tuple[str, ...]:
    """Checks failing now that passed in ``previous`` or were already drift there."""
    if previous is None:
        return ()
    before = statuses(previous.report.findings)
    return tuple(f.name for f in report.findings
                 if f.status == Status.FAIL and (before.get(f.name) == Status.OK or f.name in previous.drift))


def record(engine: Engine, report: Report, origin: str) -> DoctorRun:
    """Store ``report`` with its drift against the latest run before it."""
    with engine.begin() as conn:
        previous = _latest(conn)
        found = drift(previous, report)
        result = conn.execute(doctor_runs.insert().values(at=report.at, origin=origin, worst=report.worst.value,
                                                          results=report.to_dict(), drift=list(found)))
        key = result.inserted_primary_key[0] if result.inserted_primary_key else 0
    return DoctorRun(int(key), report.at, origin, report, found)


def latest(engine: Engine) -> DoctorRun | None:
    """The most recent run (for `waypost ses-request`, the console and the worker)."""
    with engine.connect() as conn:
        return _latest(conn)


def _latest(conn: Connection) -> DoctorRun | None:
    row = conn.execute(sa.select(doctor_runs).order_by(doctor_runs.c.at.desc(), doctor_runs.c.id.desc())
                       .limit(1)).first()
    if row is None:
        return None
    return DoctorRun(row.id, row.at, row.origin, Report.from_dict(row.results), tuple(row.drift))


def drift_alarm(run: DoctorRun) -> Alarm:
    failing = {f.name: f for f in run.report.findings}
    detail = "; ".join(f"{name}: {failing[name].found}" for name in run.drift) or "no check drifted"
    return Alarm(DRIFT_ALARM, bool(run.drift), len(run.drift), 0, f"checks that passed now fail: {detail}",
                 "run `waypost doctor` for the fix of each; DNS or the SES account changed since the last run")


class DoctorWatch:
    """Reruns the doctor every ``interval`` (counted from the latest recorded run, whoever made
    it, so several workers and a restart do not run it more often) and records the drift alarm."""

    def __init__(self, engine: Engine, run: Callable[[], Report], interval: timedelta, alarms: AlarmMonitor,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.run = run
        self.interval = interval
        self.alarms = alarms
        self.clock = clock

    def due_in(self) -> timedelta:
        previous = latest(self.engine)
        if previous is None:
            return timedelta(0)
        return max(previous.at + self.interval - self.clock(), timedelta(0))

    def run_once(self) -> DoctorRun:
        run = record(self.engine, self.run(), "worker")
        log.info("doctor: %s (%s)", run.report.worst.value,
                 ", ".join(f"{n} {s}" for s, n in run.report.counts().items() if n))
        self.alarms.record([drift_alarm(run)])
        return run

    def loop(self, stop: threading.Event) -> None:
        """A worker companion: runs until ``stop`` is set."""
        while not stop.is_set():
            wait = self.due_in()
            if wait <= timedelta(0):
                try:
                    self.run_once()
                except Exception:  # a doctor that cannot run must not end the worker's thread
                    log.exception("doctor run failed; next try in %s", RETRY_AFTER)
                    stop.wait(RETRY_AFTER.total_seconds())
                continue
            stop.wait(min(wait, RECHECK).total_seconds())
