"""The job queue and its dead letters: what waits, what gave up and why; retry or discard.

A retry is ``pipeline.deadletters``' own (the job and the row its work belongs to are reset
together), run here inside the transaction that also writes the audit entry. A discard
closes a dead job for good: state ``done``, ``last_error`` "discarded by <actor>"; the
reason it died is kept in the audit entry."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from starlette.responses import Response
from starlette.routing import Route

from waypost.outbound.outbox import SEND_JOB
from waypost.pipeline.deadletters import RESET, AlreadySent
from waypost.pipeline.inbox import INBOUND_JOB
from waypost.store.models import inbound_messages, jobs, outbound_messages, utcnow
from waypost.store.queue import DEAD, DONE
from waypost.web.admin.console import Call, Console

PAGE = 50
STATES = ("dead", "queued", "running", "done")
_LIST_COLUMNS = (jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.state, jobs.c.attempts, jobs.c.max_attempts,
                 jobs.c.run_after, jobs.c.last_error, jobs.c.updated_at)


def retry_dead(conn: Connection, queue: Any, job_id: int) -> bool:
    """Queue a dead job again and reset its message row; False when no dead job has that id.
    Raises ``AlreadySent`` for a send that may have gone out already."""
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.state == DEAD)).first()
    if row is None or not queue.retry_dead(job_id, conn):
        return False
    RESET.get(row.kind, lambda *_: None)(conn, row.payload)
    return True


def discard_dead(conn: Connection, job_id: int, actor: str) -> str | None:
    """Close a dead job for good; returns the error it died of, or None when not dead."""
    row = conn.execute(sa.select(jobs.c.last_error).where(jobs.c.id == job_id, jobs.c.state == DEAD)).first()
    if row is None:
        return None
    conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.state == DEAD).values(
        state=DONE, locked_until=None, last_error=f"discarded by {actor}", updated_at=utcnow()))
    return row.last_error or ""


def queue_routes(console: Console) -> list[Route]:
    engine, queue = console.engine, console.runtime.queue

    def show(call: Call) -> Response:
        state = call.query.get("state", "dead")
        state = state if state in STATES else "dead"
        kind = call.query.get("kind", "")
        query = sa.select(*_LIST_COLUMNS).where(jobs.c.state == state).order_by(jobs.c.id.desc()).limit(PAGE + 1)
        if kind:
            query = query.where(jobs.c.kind == kind)
        if call.query.get("before", "").isdigit():
            query = query.where(jobs.c.id < int(call.query["before"]))
        with engine.connect() as conn:
            rows = list(conn.execute(query))
            counts = _counts(conn)
        return console.render(call, "admin/queues.html", {
            "jobs": [_summary(r) for r in rows[:PAGE]], "next": rows[PAGE - 1].id if len(rows) > PAGE else None,
            "state": state, "kind": kind, "states": STATES, "counts": counts,
            "kinds": sorted({k for k, _ in counts}), "count_states": STATES[:3]})

    def inspect(call: Call) -> Response:
        job_id = _job_id(call)
        with engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first() if job_id else None
            subject = _subject(conn, row) if row is not None else None
        if row is None:
            return console.problem(call, "There is no such job.", 404)
        return console.render(call, "admin/job.html", {
            "job": row, "payload": json.dumps(row.payload, indent=2, sort_keys=True, default=str), "subject": subject})

    def retry(call: Call) -> Response:
        job_id = _job_id(call)
        try:
            with engine.begin() as conn:
                done = bool(job_id) and retry_dead(conn, queue, job_id)
                if done:
                    console.audit(conn, call, "deadletter.retry", f"job {job_id}")
        except AlreadySent as err:
            return console.problem(call, str(err), 409)
        return console.redirect(f"/admin/jobs/{job_id}", "retried" if done else "not-found")

    def discard(call: Call) -> Response:
        job_id = _job_id(call)
        with engine.begin() as conn:
            reason = discard_dead(conn, job_id, call.actor) if job_id else None
            if reason is not None:
                console.audit(conn, call, "deadletter.discard", f"job {job_id}", f"it had died of: {reason}")
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


def _counts(conn: Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute(sa.select(jobs.c.kind, jobs.c.state, sa.func.count()).where(jobs.c.state != DONE)
                        .group_by(jobs.c.kind, jobs.c.state))
    return {(kind, state): int(n) for kind, state, n in rows}


def _summary(row: sa.Row) -> dict[str, Any]:
    payload = row.payload or {}
    about = (f"message {payload['message_id']}" if "message_id" in payload
             else f"outbound {payload['outbound_id']}" if "outbound_id" in payload else "")
    return {"id": row.id, "kind": row.kind, "state": row.state, "attempts": row.attempts,
            "max_attempts": row.max_attempts, "run_after": row.run_after, "error": row.last_error or "",
            "updated_at": row.updated_at, "about": about}


def _subject(conn: Connection, job: sa.Row) -> dict[str, Any] | None:
    """The row the job's work belongs to: the inbound message or the outbound one."""
    payload = job.payload or {}
    if job.kind == INBOUND_JOB and "message_id" in payload:
        row = conn.execute(sa.select(
            inbound_messages.c.id, inbound_messages.c.status, inbound_messages.c.reason,
            inbound_messages.c.from_address, inbound_messages.c.subject, inbound_messages.c.received_at,
            inbound_messages.c.size, inbound_messages.c.blob_key).where(
            inbound_messages.c.id == str(payload["message_id"]))).first()
        return {"kind": "inbound", "row": row} if row is not None else None
    if job.kind == SEND_JOB and "outbound_id" in payload:
        row = conn.execute(sa.select(
            outbound_messages.c.id, outbound_messages.c.state, outbound_messages.c.recipient,
            outbound_messages.c.subject, outbound_messages.c.last_error, outbound_messages.c.created_at,
            outbound_messages.c.stream).where(outbound_messages.c.id == int(payload["outbound_id"]))).first()
        return {"kind": "outbound", "row": row} if row is not None else None
    return None
