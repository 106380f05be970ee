"""The operator console under /admin.

Reached only from loopback unless ``web.admin_remote`` is set; anyone else gets the site's
ordinary 404 for every path and method under /admin, as if there were no console. The pages
and what guards them are described in docs/console.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from waypost.runtime import Runtime


def admin_routes(runtime: Runtime) -> list[BaseRoute]:
    # imported here: `waypost admin passwd` loads admin.password without the web stack
    from waypost.web.admin.routes import console_routes

    remote = runtime.settings.web.admin_remote
    inner = Router(routes=console_routes(runtime), redirect_slashes=False)

    return [Route("/admin", _Gate(_redirect_to_slash, remote)),
            Mount("/admin", app=_Gate(inner, remote))]


class _Gate:
    """404 (the app's own page) for clients the console is not open to, before any routing
    that could give its existence away (a 405 or a redirect)."""

    def __init__(self, app: ASGIApp, remote: bool) -> None:
        self.app = app
        self.remote = remote

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.remote and not is_loopback(Request(scope)):
            raise HTTPException(404)
        await self.app(scope, receive, send)


def is_loopback(request: Request) -> bool:
    from waypost.web.operator_api import operator_allowed

    return operator_allowed(request, None)  # without a token, that is the loopback test


async def _redirect_to_slash(scope: Scope, receive: Receive, send: Send) -> None:
    from starlette.responses import RedirectResponse

    await RedirectResponse("/admin/", 307)(scope, receive, send)
