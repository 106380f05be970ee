"""What the records show, read once for the request: the latest doctor and drill runs, the
suppression list, sends and counted feedback over the last 30 days, the allowlist."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from waypost.clock import utcnow
from waypost.doctor.history import DoctorRun
from waypost.doctor.history import latest as latest_doctor
from waypost.drill.history import PASS, DrillRun
from waypost.drill.history import latest as latest_drill
from waypost.store.models import OutboundState, allowlist, feedback_events, outbound_messages, suppressions

WINDOW = timedelta(days=30)  # how far back evidence counts as current
NOT_PEOPLE = ("drill",)  # streams whose mail reaches no person: left out of the sending figures


@dataclass(frozen=True)
class Evidence:
    now: datetime
    doctor: DoctorRun | None
    drill: DrillRun | None  # the latest passing run
    last_drill: DrillRun | None  # the latest run, whatever its verdict
    suppressed: dict[str, int] = field(default_factory=dict)  # by reason
    sent: int = 0  # messages sent to people in the window
    first_sent: datetime | None = None  # the first message ever sent to a person
    counted: dict[str, int] = field(default_factory=dict)  # bounce / complaint counted in the window
    allowlisted: int = 0

    def current(self, at: datetime | None) -> bool:
        return at is not None and self.now - at <= WINDOW


def gather(engine: Engine, now: datetime | None = None) -> Evidence:
    now = now or utcnow()
    since = now - WINDOW
    people = sa.and_(outbound_messages.c.state == OutboundState.SENT, outbound_messages.c.stream.not_in(NOT_PEOPLE))
    with engine.connect() as conn:
        suppressed = {str(r): int(n) for r, n in conn.execute(
            sa.select(suppressions.c.reason, sa.func.count()).group_by(suppressions.c.reason))}
        sent = conn.execute(sa.select(sa.func.count()).where(people, outbound_messages.c.sent_at >= since)).scalar()
        first = conn.execute(sa.select(sa.func.min(outbound_messages.c.sent_at)).where(people)).scalar()
        counted = {str(k): int(n) for k, n in conn.execute(
            sa.select(feedback_events.c.counts_as, sa.func.count())
            .where(feedback_events.c.counts_as.is_not(None), feedback_events.c.received_at >= since)
            .group_by(feedback_events.c.counts_as))}
        listed = conn.execute(sa.select(sa.func.count()).select_from(allowlist)).scalar()
    return Evidence(now, latest_doctor(engine), latest_drill(engine, verdict=PASS), latest_drill(engine),
                    suppressed, int(sent or 0), first, counted, int(listed or 0))
