"""The public pages an SES reviewer looks for: what the service does (/), the privacy notice
(/privacy) and the terms (/terms)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from waypost.runtime import Runtime

Render = Callable[..., Response]  # page(request, template, context, status=..., extra=...)


def legal_routes(runtime: Runtime, page: Render) -> list[Route]:
    async def landing(request: Request) -> Response:
        return page(request, "landing.html", {})

    async def privacy(request: Request) -> Response:
        return page(request, "privacy.html", {})

    async def terms(request: Request) -> Response:
        return page(request, "terms.html", {})

    return [Route("/", landing), Route("/privacy", privacy), Route("/terms", terms)]
