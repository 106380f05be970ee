"""What a doctor run finds: one ``Finding`` per check, gathered in a ``Report``."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


class Status(enum.StrEnum):
    OK = "ok"
    INFO = "info"  # reported for the operator; never changes the exit status
    WARN = "warn"
    FAIL = "fail"


# how bad each status is, for the worst of a report (info weighs like ok)
_WEIGHT = {Status.OK: 0, Status.INFO: 0, Status.WARN: 1, Status.FAIL: 2}


@dataclass(frozen=True)
class Finding:
    """One check's outcome. ``name`` is stable across runs ("spf", "dmarc:example.org"), so
    runs can be compared; ``fix`` is the exact record or setting, None when nothing is to do."""

    name: str
    title: str
    status: Status
    found: str
    why: str
    fix: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(str(data["name"]), str(data["title"]), Status(data["status"]), str(data["found"]),
                   str(data["why"]), data.get("fix"))


@dataclass(frozen=True)
class Report:
    at: datetime
    mode: str  # the outbound transport checked: catcher, smtp or ses
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def worst(self) -> Status:
        return max((f.status for f in self.findings), key=_WEIGHT.__getitem__, default=Status.OK)

    @property
    def exit_code(self) -> int:
        """0 all ok, 1 warnings only, 2 any failure."""
        return _WEIGHT[self.worst]

    def counts(self) -> dict[str, int]:
        return {status.value: sum(1 for f in self.findings if f.status == status) for status in Status}

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "mode": self.mode, "worst": self.worst.value,
                "exit_code": self.exit_code, "counts": self.counts(),
                "checks": [{**asdict(f), "status": f.status.value} for f in self.findings]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(datetime.fromisoformat(data["at"]), str(data["mode"]),
                   tuple(Finding.from_dict(item) for item in data.get("checks", [])))


def statuses(findings: Iterable[Finding]) -> dict[str, Status]:
    return {f.name: f.status for f in findings}
