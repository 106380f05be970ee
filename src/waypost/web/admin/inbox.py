"""The operator inbox: mail kept for postmaster@, abuse@ and the operator address on mail_domain,
and the notices the operator's digest carries (complaints, abuse@ reports, removal requests
without a token, new suppressions other than a person's own stop)."""

from __future__ import annotations

from datetime import timedelta

from starlette.responses import Response
from starlette.routing import Route

from waypost.apps.operator_inbox import OperatorInbox
from waypost.reputation.digest import KINDS, recent_notices
from waypost.web.admin.console import Call, Console

PAGE = 100
NOTICE_DAYS = 7


def inbox_routes(console: Console) -> list[Route]:
    inbox = OperatorInbox(console.engine, console.runtime.blobs)

    def show(call: Call) -> Response:
        notices = recent_notices(console.engine, timedelta(days=NOTICE_DAYS))
        return console.render(call, "admin/inbox.html", {
            "items": inbox.list(limit=PAGE), "notices": notices, "kinds": dict(KINDS), "days": NOTICE_DAYS,
            "forward_to": console.settings.operator_forward_to})

    def one(call: Call) -> Response:
        found = inbox.show(call.param("message_id")[:32])
        if found is None:
            return console.problem(call, "There is no such mail in the operator inbox.", 404)
        return console.render(call, "admin/inbox_message.html", {"found": found, "item": found.item})

    return [Route("/inbox", console.page(show), methods=["GET"]),
            Route("/inbox/{message_id}", console.page(one), methods=["GET"])]
