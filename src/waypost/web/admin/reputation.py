"""Reputation: sends, bounces and complaints per day over 30 days, the daily rates against the
guard's thresholds, and the guard's own windows as it judges them now."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from waypost.config import GuardSettings
from waypost.outbound import control
from waypost.reputation.status import daily_series
from waypost.transactions import reading
from waypost.web.admin.charts import Chart, bar_chart
from waypost.web.admin.console import Call, Console

DAYS = 30


def reputation_routes(console: Console) -> list[Route]:
    guard = console.settings.guard

    def show(call: Call) -> Response:
        with reading(console.engine) as conn:
            series = daily_series(conn, DAYS)
            assessment = console.runtime.guard.assess(conn)
            resumed = control.last_resumed(conn, (control.ALL,))
        return console.render(call, "admin/reputation.html", {
            "charts": charts(series, guard), "windows": assessment.windows, "findings": assessment.findings,
            "guard": guard, "days": DAYS, "resumed": resumed})

    return [Route("/reputation", console.page(show), methods=["GET"])]


def charts(series: dict[str, list[tuple[str, float]]], guard: GuardSettings) -> list[Chart]:
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

