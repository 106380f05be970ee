"""Drill runs kept in the database (table ``drill_runs``): one row per run, written when the
run starts (verdict ``running``) and completed when it ends, so a run that died shows too."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from waypost.clock import utcnow
from waypost.store.models import drill_runs

RUNNING, PASS, FAIL = "running", "pass", "fail"


@dataclass(frozen=True)
class Outcome:
    """One drill address: what was sent, what came back, and the verdict on it."""

    scenario: str
    address: str
    expected: str
    verdict: str  # pass | fail | waiting
    why: str
    outbound_id: int | None = None
    state: str | None = None  # the outbound row's state
    provider_id: str | None = None
    observed: tuple[str, ...] = ()  # the feedback events, described

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "address": self.address, "expected": self.expected,
                "verdict": self.verdict, "why": self.why, "outbound_id": self.outbound_id, "state": self.state,
                "provider_id": self.provider_id, "observed": list(self.observed)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(data["scenario"], data["address"], data["expected"], data["verdict"], data["why"],
                   data.get("outbound_id"), data.get("state"), data.get("provider_id"),
                   tuple(data.get("observed") or ()))


@dataclass(frozen=True)
class DrillRun:
    id: int
    started_at: datetime
    finished_at: datetime | None
    mode: str
    verdict: str
    detail: str
    outcomes: tuple[Outcome, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None, "mode": self.mode,
                "verdict": self.verdict, "detail": self.detail, "scenarios": [o.to_dict() for o in self.outcomes]}


def start(engine: Engine, mode: str) -> DrillRun:
    at = utcnow()
    with engine.begin() as conn:
        result = conn.execute(drill_runs.insert().values(started_at=at, mode=mode, verdict=RUNNING, scenarios=[],
                                                         detail="running"))
        key = result.inserted_primary_key[0] if result.inserted_primary_key else 0
    return DrillRun(int(key), at, None, mode, RUNNING, "running")


def finish(engine: Engine, run: DrillRun, verdict: str, detail: str, outcomes: tuple[Outcome, ...]) -> DrillRun:
    at = utcnow()
    with engine.begin() as conn:
        conn.execute(drill_runs.update().where(drill_runs.c.id == run.id).values(
            finished_at=at, verdict=verdict, detail=detail[:2000], scenarios=[o.to_dict() for o in outcomes]))
    return DrillRun(run.id, run.started_at, at, run.mode, verdict, detail, outcomes)


def history(engine: Engine, limit: int = 20) -> list[DrillRun]:
    """The most recent runs, newest first."""
    query = sa.select(drill_runs).order_by(drill_runs.c.started_at.desc(), drill_runs.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [_run(row) for row in conn.execute(query)]


def latest(engine: Engine, *, verdict: str | None = None) -> DrillRun | None:
    """The most recent run (with that verdict, when given), for `waypost ses-request`."""
    query = sa.select(drill_runs).order_by(drill_runs.c.started_at.desc(), drill_runs.c.id.desc()).limit(1)
    if verdict is not None:
        query = query.where(drill_runs.c.verdict == verdict)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _run(row) if row is not None else None


def _run(row: sa.Row) -> DrillRun:
    outcomes = tuple(Outcome.from_dict(item) for item in row.scenarios or [])
    return DrillRun(row.id, row.started_at, row.finished_at, row.mode, row.verdict, row.detail, outcomes)
