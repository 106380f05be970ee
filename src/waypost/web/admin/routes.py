"""Every console route, relative to /admin (the gate in ``__init__`` stands in front)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from waypost.runtime import Runtime
from waypost.web.admin.auditlog import audit_routes
from waypost.web.admin.auth import Login
from waypost.web.admin.console import Console
from waypost.web.admin.dashboard import dashboard_routes
from waypost.web.admin.dmarc import dmarc_routes
from waypost.web.admin.drills import drill_routes
from waypost.web.admin.inbox import inbox_routes
from waypost.web.admin.journeys import journey_routes
from waypost.web.admin.lists import allowlist_routes, suppression_routes
from waypost.web.admin.outbox import outbox_routes
from waypost.web.admin.queues import queue_routes
from waypost.web.admin.relay import relay_routes
from waypost.web.admin.reputation import reputation_routes


def console_routes(runtime: Runtime) -> list[BaseRoute]:
    console = Console(runtime)
    login = Login(console)
    return [
        Route("/login", login.form, methods=["GET"]),
        Route("/login", login.submit, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        *dashboard_routes(console),
        *allowlist_routes(console),
        *suppression_routes(console),
        *queue_routes(console),
        *outbox_routes(console),
        *journey_routes(console),
        *reputation_routes(console),
        *dmarc_routes(console),
        *drill_routes(console),
        *inbox_routes(console),
        *relay_routes(console),
        *audit_routes(console),
    ]
