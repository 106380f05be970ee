"""The console's frame: every page and action handler runs inside it.

``page`` handlers (GET) need a session, else the browser is sent to the login form.
``action`` handlers (POST) need, in this order: a same-site request (``csrf.same_origin``),
a session, a readable form no larger than its cap, and the session's CSRF token; anything
missing is refused with 403 before the handler runs, so nothing changes. Handlers are plain
functions run in the thread pool (they talk to the database); they get a ``Call``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from waypost import audit
from waypost.keys import signing_keys
from waypost.runtime import Runtime
from waypost.transactions import Transaction
from waypost.web.admin import csrf
from waypost.web.admin.auth import Session, Sessions, client_ip
from waypost.web.admin.forms import EMPTY, MAX_FORM, Form, read_form

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'"),
    # same-origin, not no-referrer: a browser then sends the real Origin on our own form posts
    # (with no-referrer it would send "Origin: null", which the CSRF check refuses)
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Cache-Control": "private, no-store",
}

# the fixed texts a redirect may ask a page to show (never text taken from the URL)
NOTICES = {
    "added": "Added.", "removed": "Removed.", "not-found": "There was no such entry.",
    "already": "It was there already.", "paused": "Sending is paused.", "resumed": "Sending is resumed.",
    "not-paused": "That was not paused.", "retried": "The job is queued again.", "discarded": "The job was discarded.",
    "revoked": "The share link is revoked.", "rotated": "The journey has a new share link; the old one is dead.",
    "expiry": "The link's expiry is saved.", "imported": "The file was imported.",
}


@dataclass(frozen=True)
class Call:
    """One request to a handler: who is asking, and what they sent."""

    request: Request
    session: Session
    form: Form
    ip: str

    @property
    def query(self) -> QueryParams:
        return self.request.query_params

    @property
    def actor(self) -> str:
        return self.session.actor

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])


Handler = Callable[[Call], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


class Console:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.engine = runtime.engine
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.sessions = Sessions(runtime.settings, signing_keys(runtime.settings), runtime.engine)
        self.headers = dict(HEADERS)

    # -- the frame -----------------------------------------------------------------------

    def page(self, handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            session = self.sessions.read(request)
            if session is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/admin/login?" + urlencode({"next": target}), 303, headers=self.headers)
            return await run_in_threadpool(handler, Call(request, session, EMPTY, client_ip(request)))

        return endpoint

    def action(self, handler: Handler, *, limit: int = 64 * 1024) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if not csrf.same_origin(request, self.settings.base_url):
                return self.refuse(request, "Refused: this request did not come from the console's own pages.")
            session = self.sessions.read(request)
            if session is None:
                return self.refuse(request, "Refused: log in first.")
            form = await read_form(request, limit)
            if form is None:
                return self.refuse(request, f"Refused: the form is larger than {limit} bytes.", 413)
            if not csrf.token_matches(session.csrf, form.get(csrf.FIELD)):
                return self.refuse(request, "Refused: the form's CSRF token is missing or wrong. Reload the page.")
            return await run_in_threadpool(handler, Call(request, session, form, client_ip(request)))

        return endpoint

    def upload(self, handler: Handler) -> Endpoint:
        return self.action(handler, limit=MAX_FORM)

    # -- answers ---------------------------------------------------------------------------

    def render(self, call: Call, name: str, context: dict[str, Any] | None = None, status: int = 200) -> Response:
        notice = NOTICES.get(call.query.get("done", ""))
        base = {"session": call.session, "csrf_token": call.session.csrf, "notice": notice,
                "nav": call.request.url.path}
        return self.render_bare(call.request, name, {**base, **(context or {})}, status)

    def render_bare(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        base = {"operator_name": self.settings.operator_name, "session": None, "csrf_token": ""}
        return self.templates.TemplateResponse(request, name, {**base, **context}, status_code=status,
                                               headers=self.headers)

    def refuse(self, request: Request, message: str, status: int = 403) -> Response:
        return self.render_bare(request, "admin/refused.html", {"message": message}, status)

    def problem(self, call: Call, message: str, status: int = 400) -> Response:
        return self.render(call, "admin/refused.html", {"message": message}, status)

    def redirect(self, path: str, done: str | None = None, **query: str) -> Response:
        params = {k: v for k, v in {**query, "done": done or ""}.items() if v}
        return RedirectResponse(path + ("?" + urlencode(params) if params else ""), 303, headers=self.headers)

    def download(self, body: str | bytes, media_type: str, filename: str) -> Response:
        return Response(body, media_type=media_type,
                        headers={**self.headers, "Content-Disposition": f'attachment; filename="{filename}"'})

    @staticmethod
    def audit(tx: Transaction, call: Call, action: str, target: str | None = None,
              detail: str | None = None) -> None:
        """Record an action inside the caller's transaction, with who did it and from where."""
        audit.record(tx, action, actor=call.actor, target=target, detail=detail, ip=call.ip)
