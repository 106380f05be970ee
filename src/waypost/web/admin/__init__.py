"""The operator console under /admin."""

from __future__ import annotations

from starlette.routing import BaseRoute

from waypost.runtime import Runtime


def admin_routes(runtime: Runtime) -> list[BaseRoute]:
    return []
