"""The dashboard: one reading of the service (queues, sending, quota, alarms), and the pause
switches."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from waypost.outbound import control
from waypost.outbound.outbox import SEND_JOB
from waypost.reputation.alarms import evaluate
from waypost.reputation.status_text import STATES
from waypost.store.queue import JobState
from waypost.transactions import transaction
from waypost.web.admin.console import Call, Console

JOB_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.DEAD)  # a done job needs no look


def dashboard_routes(console: Console) -> list[Route]:
    runtime = console.runtime
    scopes = (control.ALL, *runtime.streams)

    def show(call: Call) -> Response:
        snapshot = runtime.snapshot()
        alarms = [a for a in evaluate(snapshot, console.settings.alarms) if a.firing]
        kinds = sorted({kind for kind, _ in snapshot.queue.counts})
        return console.render(call, "admin/dashboard.html", {
            "snap": snapshot, "alarms": alarms, "kinds": kinds, "job_states": JOB_STATES,
            "states": STATES, "scopes": scopes, "transport": console.settings.outbound.transport,
            "paused_scopes": {p.scope for p in snapshot.pauses}})

    def pause(call: Call) -> Response:
        scope, reason = call.form.text("scope", 32), call.form.text("reason")
        if scope not in scopes or not reason:
            return console.problem(call, "Choose what to pause and say why (the reason is kept).")
        with transaction(console.engine) as conn:
            changed = control.pause(conn, scope, reason, by=f"console ({call.actor})")
            if changed:
                console.audit(conn, call, "sending.pause", scope, reason)
        return console.redirect("/admin/", "paused" if changed else "already")

    def resume(call: Call) -> Response:
        scope = call.form.text("scope", 32)
        with transaction(console.engine) as conn:
            changed = control.resume(conn, scope, SEND_JOB, by=f"console ({call.actor})")
            if changed:
                console.audit(conn, call, "sending.resume", scope)
        return console.redirect("/admin/", "resumed" if changed else "not-paused")

    return [
        Route("/", console.page(show), methods=["GET"]),
        Route("/sending/pause", console.action(pause), methods=["POST"]),
        Route("/sending/resume", console.action(resume), methods=["POST"]),
    ]
