"""Reputation: sends, bounces and complaints per day over 30 days, the daily rates against the
guard's thresholds, and the guard's own windows as it judges them now."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.responses import Response
from starlette.routing import Route

from waypost.outbound import control
from waypost.store.models import feedback_events, outbound_messages, utcnow
from waypost.web.admin.charts import Chart, bar_chart
from waypost.web.admin.console import Call, Console

DAYS = 30


def reputation_routes(console: Console) -> list[Route]:
    guard = console.settings.guard

    def show(call: Call) -> Response:
        with console.engine.connect() as conn:
            series = daily_series(conn, DAYS)
            assessment = console.runtime.guard.assess(conn)
            resumed = control.last_resumed(conn, (control.ALL,))
        return console.render(call, "admin/reputation.html", {
            "charts": charts(series, guard), "windows": assessment.windows, "findings": assessment.findings,
            "guard": guard, "days": DAYS, "resumed": resumed})

    return [Route("/reputation", console.page(show), methods=["GET"])]


def daily_series(conn: Connection, days: int) -> dict[str, list[tuple[str, float]]]:
    """Per UTC day, oldest first: sends (as the guard counts them: sent, by rate-window time),
    and bounces and complaints that count toward the rates (by when they arrived)."""
    today = utcnow().date()
    start = today - timedelta(days=days - 1)
    labels = [(start + timedelta(days=i)).isoformat() for i in range(days)]
    since = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    sent_day = _day(conn, outbound_messages.c.window_at)
    sends = dict(conn.execute(sa.select(sent_day, sa.func.count()).where(
        outbound_messages.c.state == "sent", outbound_messages.c.window_at >= since).group_by(sent_day)).all())
    feedback_day = _day(conn, feedback_events.c.received_at)
    rows = conn.execute(sa.select(feedback_day, feedback_events.c.counts_as, sa.func.count()).where(
        feedback_events.c.counts_as.is_not(None), feedback_events.c.received_at >= since)
        .group_by(feedback_day, feedback_events.c.counts_as))
    counted: dict[tuple[str, str], int] = {(str(day), kind): int(n) for day, kind, n in rows}
    return {
        "sends": [(d, float(sends.get(d, 0))) for d in labels],
        "bounces": [(d, float(counted.get((d, "bounce"), 0))) for d in labels],
        "complaints": [(d, float(counted.get((d, "complaint"), 0))) for d in labels],
    }


def charts(series: dict[str, list[tuple[str, float]]], guard: Any) -> list[Chart]:
    sends = dict(series["sends"])

    def rate(name: str) -> list[tuple[str, float]]:
        return [(d, n / sends[d] if sends[d] else 0.0) for d, n in series[name]]

    return [
        bar_chart("Sends per day", series["sends"]),
        bar_chart("Bounces per day (counted toward the rate)", series["bounces"]),
        bar_chart("Complaints per day", series["complaints"]),
        bar_chart("Bounce rate per day", rate("bounces"), percent=True,
                  thresholds=(("warn", guard.bounce_warn, "warn"), ("pause", guard.bounce_pause, "pause"))),
        bar_chart("Complaint rate per day", rate("complaints"), percent=True,
                  thresholds=(("warn", guard.complaint_warn, "warn"), ("pause", guard.complaint_pause, "pause"))),
    ]


def _day(conn: Connection, column: Any) -> Any:
    """The UTC day of a timestamp column as 'YYYY-MM-DD' (SQLite stores UTC without a zone)."""
    if conn.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", column)

