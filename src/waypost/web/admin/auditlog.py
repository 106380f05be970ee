"""The audit log page: newest first, filtered by the start of the action, paged by id."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from waypost import audit
from waypost.transactions import reading
from waypost.web.admin.console import Call, Console

PAGE = 100
PREFIXES = ("login", "logout", "allowlist", "suppression", "sending", "deadletter", "journey")


def audit_routes(console: Console) -> list[Route]:
    def show(call: Call) -> Response:
        action = call.query.get("action", "").strip()[:48]
        before = call.query.get("before", "")
        with reading(console.engine) as conn:
            found = audit.entries(conn, limit=PAGE + 1, before=int(before) if before.isdigit() else None,
                                  action=action or None)
        return console.render(call, "admin/audit.html", {
            "entries": found[:PAGE], "next": found[PAGE - 1].id if len(found) > PAGE else None, "action": action,
            "prefixes": PREFIXES})

    return [Route("/audit", console.page(show), methods=["GET"])]
