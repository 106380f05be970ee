"""The drill history: each `waypost drill` run with what was sent to which test address, what
came back and the verdict (the command records them; the console only reads)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from waypost.drill.history import history
from waypost.web.admin.console import Call, Console

SHOWN = 30


def drill_routes(console: Console) -> list[Route]:
    def show(call: Call) -> Response:
        return console.render(call, "admin/drills.html", {
            "runs": history(console.engine, SHOWN), "mode": console.settings.outbound.transport})

    return [Route("/drills", console.page(show), methods=["GET"])]
