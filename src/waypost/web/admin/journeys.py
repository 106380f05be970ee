"""Journeys and their share links: list, revoke, rotate (a new link, the old one dies), and
set or clear when a link expires."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from starlette.responses import Response
from starlette.routing import Route

from waypost.apps.journeys import repository
from waypost.transactions import Transaction, reading, transaction
from waypost.web.admin.console import Call, Console, Handler

PAGE = 50

# one change to one journey; returns the detail for the audit entry
Change = Callable[[Transaction, int, Call], str | None]


def journey_routes(console: Console) -> list[Route]:
    engine = console.engine

    def show(call: Call) -> Response:
        after = call.query.get("after", "")
        owner = call.query.get("owner", "").strip()
        with reading(engine) as conn:
            found = repository.list_journeys(conn, limit=PAGE + 1, after_id=int(after) if after.isdigit() else None,
                                             owner=owner or None)
        return console.render(call, "admin/journeys.html", {
            "journeys": found[:PAGE], "next": found[PAGE - 1].id if len(found) > PAGE else None, "owner": owner,
            "base_url": console.settings.public_base_url.rstrip("/")})

    def change(action: str, apply: Change, done: str) -> Handler:
        """A handler that applies one change to a journey and audits it in the same transaction."""
        def handler(call: Call) -> Response:
            journey_id = int(call.request.path_params["journey_id"])
            try:
                with transaction(engine) as tx:
                    detail = apply(tx, journey_id, call)
                    console.audit(tx, call, action, f"journey {journey_id}", detail)
            except repository.JourneyNotFound:
                return console.problem(call, "There is no such journey.", 404)
            except ValueError as err:
                return console.problem(call, f"Not saved: {err}")
            return console.redirect("/admin/journeys", done)

        return handler

    def revoke(tx: Transaction, journey_id: int, call: Call) -> None:
        repository.revoke(tx, journey_id)

    def rotate(tx: Transaction, journey_id: int, call: Call) -> str:
        repository.rotate(tx, journey_id)
        return "a new share link; the old one no longer works"

    def expiry(tx: Transaction, journey_id: int, call: Call) -> str:
        expires_at = None if call.form.get("clear") else end_of_day(call.form.text("expires", 32))
        repository.set_expiry(tx, journey_id, expires_at)
        return f"expires {expires_at.isoformat()}" if expires_at else "never expires"

    return [
        Route("/journeys", console.page(show), methods=["GET"]),
        Route("/journeys/{journey_id:int}/revoke",
              console.action(change("journey.revoke", revoke, "revoked")), methods=["POST"]),
        Route("/journeys/{journey_id:int}/rotate",
              console.action(change("journey.rotate", rotate, "rotated")), methods=["POST"]),
        Route("/journeys/{journey_id:int}/expiry",
              console.action(change("journey.expiry", expiry, "expiry")), methods=["POST"]),
    ]


def end_of_day(text: str) -> datetime:
    """``YYYY-MM-DD``: the link works to the end of that day (UTC). Raises ValueError."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)
