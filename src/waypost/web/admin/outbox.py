"""The outbox: messages the outbox holds (``outbound_messages``) and the files the catcher
wrote (``<data_dir>/outbox/*.eml``), each shown as headers, text and rendered HTML.

Caught HTML is untrusted (it echoes what people sent), so it is never put in a console page.
It is served at its own URL with ``Content-Security-Policy: sandbox`` (a unique origin, no
scripts, no forms, no plugins; nothing loads from anywhere) and shown in an
``<iframe sandbox>``: either one alone keeps its scripts from running."""

from __future__ import annotations

import email.policy
import re
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from waypost.outbound import listing
from waypost.outbound.listing import OutboundSummary
from waypost.transactions import reading
from waypost.web.admin.console import Call, Console, Handler

PAGE = 50
MAX_FILES = 100
FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.eml$")
SANDBOX = {
    "Content-Security-Policy": ("sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                "frame-ancestors 'self'"),
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
    "X-Robots-Tag": "noindex, nofollow",
}

Reader = Callable[[Call], tuple[bytes | None, OutboundSummary | None]]


def outbox_routes(console: Console) -> list[Route]:
    engine, directory = console.engine, console.settings.outbox_dir

    def show(call: Call) -> Response:
        before = call.query.get("before", "")
        with reading(engine) as conn:
            rows = listing.newest(conn, limit=PAGE + 1, before=int(before) if before.isdigit() else None)
        return console.render(call, "admin/outbox.html", {
            "rows": rows[:PAGE], "next": rows[PAGE - 1].id if len(rows) > PAGE else None,
            "files": caught_files(directory)})

    def row_raw(call: Call) -> tuple[bytes | None, OutboundSummary | None]:
        with reading(engine) as conn:
            found = listing.message(conn, int(call.request.path_params["msg_id"]))
        return (found[1], found[0]) if found is not None else (None, None)

    def file_raw(call: Call) -> tuple[bytes | None, OutboundSummary | None]:
        path = caught_path(directory, call.param("name"))
        return (path.read_bytes(), None) if path is not None else (None, None)

    def viewer(read: Reader, base: Callable[[Call], str]) -> tuple[Handler, Handler]:
        def view(call: Call) -> Response:
            raw, row = read(call)
            if raw is None:
                return console.problem(call, "There is no such message.", 404)
            return console.render(call, "admin/message.html", {
                **describe(raw), "row": row, "html_url": base(call) + "/html", "name": call.request.url.path})

        def html(call: Call) -> Response:
            raw, _ = read(call)
            body = html_part(raw) if raw is not None else None
            if body is None:
                return Response("no HTML part", 404, media_type="text/plain", headers=SANDBOX)
            return Response(body, media_type="text/html; charset=utf-8", headers=SANDBOX)

        return view, html

    row_view, row_html = viewer(row_raw, lambda call: f"/admin/outbox/{call.request.path_params['msg_id']}")
    file_view, file_html = viewer(file_raw, lambda call: f"/admin/outbox/file/{call.param('name')}")
    return [
        Route("/outbox", console.page(show), methods=["GET"]),
        Route("/outbox/{msg_id:int}", console.page(row_view), methods=["GET"]),
        Route("/outbox/{msg_id:int}/html", console.page(row_html), methods=["GET"]),
        Route("/outbox/file/{name}", console.page(file_view), methods=["GET"]),
        Route("/outbox/file/{name}/html", console.page(file_html), methods=["GET"]),
    ]


def caught_path(directory: Path, name: str) -> Path | None:
    if not FILE_NAME.match(name):
        return None
    path = directory / name
    return path if path.is_file() else None


def caught_files(directory: Path) -> list[dict[str, str]]:
    if not directory.is_dir():
        return []
    paths = sorted(directory.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_FILES]
    found = []
    for path in paths:
        if FILE_NAME.match(path.name):
            with path.open("rb") as handle:
                headers = BytesHeaderParser(policy=email.policy.default).parse(handle)
            found.append({"name": path.name, "to": _header(headers, "To"), "subject": _header(headers, "Subject"),
                          "date": _header(headers, "Date")})
    return found


def describe(raw: bytes) -> dict[str, Any]:
    """Headers in order, the plain-text body and whether there is an HTML body."""
    message = _parse(raw)
    headers = [(name, _decoded(message, name, value)) for name, value in message.raw_items()]
    text = _body(message, "plain")
    return {"headers": headers, "text": text, "has_html": _body(message, "html") is not None,
            "subject": _header(message, "Subject"), "size": len(raw)}


def html_part(raw: bytes) -> str | None:
    return _body(_parse(raw), "html")


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _body(message: EmailMessage, subtype: str) -> str | None:
    try:
        part = message.get_body(preferencelist=(subtype,))
        return part.get_content() if part is not None else None
    except (LookupError, ValueError, KeyError):
        return None


def _header(message: Any, name: str) -> str:
    try:
        return str(message.get(name, ""))
    except (ValueError, TypeError, IndexError):
        return "(could not decode)"


def _decoded(message: EmailMessage, name: str, value: str) -> str:
    """A header's decoded value; the raw text when it cannot be decoded."""
    try:
        return str(message.policy.header_fetch_parse(name, value))
    except (ValueError, TypeError, IndexError):
        return value
