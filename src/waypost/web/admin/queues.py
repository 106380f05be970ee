"""The job queue and its dead letters: what waits, what gave up and why; retry or discard.

Both are ``pipeline.deadletters``' own operations (``DeadLetters.retry`` resets the job and the
row its work belongs to together; ``DeadLetters.discard`` closes a dead job for good), run here
inside the transaction that also writes the audit entry; the reason a discarded job died is
kept in that entry."""

from __future__ import annotations

import json

from starlette.responses import Response
from starlette.routing import Route

from waypost.pipeline.deadletters import LISTED_STATES, CannotRetry, DeadLetters
from waypost.store.queue import JobState
from waypost.transactions import transaction
from waypost.web.admin.console import Call, Console

PAGE = 50


def queue_routes(console: Console) -> list[Route]:
    dead_letters = DeadLetters(console.runtime.queue)

    def show(call: Call) -> Response:
        wanted = call.query.get("state", JobState.DEAD)
        state = JobState(wanted) if wanted in LISTED_STATES else JobState.DEAD
        kind = call.query.get("kind", "")
        before = call.query.get("before", "")
        found = dead_letters.jobs(state, kind=kind or None, before=int(before) if before.isdigit() else None,
                                  limit=PAGE + 1)
        counts = dead_letters.counts()
        return console.render(call, "admin/queues.html", {
            "jobs": found[:PAGE], "next": found[PAGE - 1].id if len(found) > PAGE else None,
            "state": state, "kind": kind, "states": LISTED_STATES, "counts": counts,
            "kinds": sorted({k for k, _ in counts}), "count_states": LISTED_STATES[:3]})

    def inspect(call: Call) -> Response:
        job_id = _job_id(call)
        found = dead_letters.inspect(job_id) if job_id else None
        if found is None:
            return console.problem(call, "There is no such job.", 404)
        job, subject = found
        return console.render(call, "admin/job.html", {
            "job": job, "payload": json.dumps(job.payload, indent=2, sort_keys=True, default=str), "subject": subject})

    def retry(call: Call) -> Response:
        job_id = _job_id(call)
        try:
            with transaction(console.engine) as tx:
                done = bool(job_id) and dead_letters.retry(job_id, tx)
                if done:
                    console.audit(tx, call, "deadletter.retry", f"job {job_id}")
        except CannotRetry as err:
            return console.problem(call, str(err), 409)
        return console.redirect(f"/admin/jobs/{job_id}", "retried" if done else "not-found")

    def discard(call: Call) -> Response:
        job_id = _job_id(call)
        with transaction(console.engine) as tx:
            reason = dead_letters.discard(job_id, call.actor, tx) if job_id else None
            if reason is not None:
                console.audit(tx, call, "deadletter.discard", f"job {job_id}", f"it had died of: {reason}")
        return console.redirect(f"/admin/jobs/{job_id}", "discarded" if reason is not None else "not-found")

    return [
        Route("/queues", console.page(show), methods=["GET"]),
        Route("/jobs/{job_id}", console.page(inspect), methods=["GET"]),
        Route("/jobs/{job_id}/retry", console.action(retry), methods=["POST"]),
        Route("/jobs/{job_id}/discard", console.action(discard), methods=["POST"]),
    ]


def _job_id(call: Call) -> int:
    text = call.param("job_id")
    return int(text) if text.isdigit() and len(text) < 16 else 0
