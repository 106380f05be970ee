"""The operator's HTTP interfaces: the suppression list as JSON (and CSV), and Prometheus
metrics. Open to loopback clients, or to anyone presenting ``web.admin_token`` as a Bearer
token. Changes need a JSON (or CSV) body: a page on another site cannot send one without a
CORS preflight, which this server never grants, so a browser on the operator's machine
cannot be made to change the list."""

from __future__ import annotations

import hmac
import io
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from waypost.clock import utcnow
from waypost.mail.addresses import AddressError, normalise_address
from waypost.outbound import suppression
from waypost.reputation.metrics import registry_for
from waypost.runtime import Runtime
from waypost.transactions import reading, transaction
from waypost.web.proxies import is_local

Endpoint = Callable[[Request], Awaitable[Response]]

MAX_BODY = 8 * 1024 * 1024  # a CSV import of some 100,000 addresses
PRIVATE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def operator_allowed(request: Request, admin_token: str | None) -> bool:
    supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if admin_token and supplied and hmac.compare_digest(supplied.encode(), admin_token.encode()):
        return True
    return is_local(request)  # loopback, and not relayed by a proxy nobody configured


def operator_routes(runtime: Runtime) -> list[Route]:
    token = runtime.settings.web.admin_token
    admin_token = token.get_secret_value() if token is not None else None
    registry = registry_for(runtime.snapshot, runtime.settings.alarms)

    def guarded(handler: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if not operator_allowed(request, admin_token):
                return _error(403, "forbidden: loopback only, or Authorization: Bearer <web.admin_token>")
            return await handler(request)

        return endpoint

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=PRIVATE)

    async def list_entries(request: Request) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "100"))
            reason = suppression.Reason(q["reason"].upper()) if q.get("reason") else None
        except ValueError:
            return _error(400, f"limit must be a number from 1 to 1000; reason one of {', '.join(suppression.Reason)}")
        if not 1 <= limit <= 1000:
            return _error(400, "limit must be a number from 1 to 1000")

        def read() -> list[suppression.Suppression]:
            with reading(runtime.engine) as conn:
                return suppression.entries(conn, limit=limit, after=q.get("after"), contains=q.get("search"),
                                           domain=q.get("domain"), reason=reason)

        found = await run_in_threadpool(read)
        return _json({"entries": [_entry(e) for e in found],
                      "next": found[-1].address if len(found) == limit else None})

    async def add_entry(request: Request) -> Response:
        data = await _json_body(request)
        if isinstance(data, Response):
            return data
        try:
            address = normalise_address(str(data.get("address", "")))
            reason = suppression.Reason(str(data.get("reason", "MANUAL")).upper())
            days = float(data["days"]) if data.get("days") is not None else None
        except (AddressError, ValueError) as err:
            return _error(400, f"bad request: {err}")
        if days is not None and days <= 0:
            return _error(400, "days must be positive")
        note = str(data["note"])[:2000] if data.get("note") else None

        def write() -> bool:
            with transaction(runtime.engine) as conn:
                return suppression.add(conn, address, reason, "api", detail=note, by="operator (api)",
                                       expires_at=utcnow() + timedelta(days=days) if days else None)

        added = await run_in_threadpool(write)
        return _json({"address": suppression.suppression_key(address), "added": added}, 201 if added else 200)

    async def one_entry(request: Request) -> Response:
        address = request.path_params["address"]

        def read() -> tuple[suppression.Suppression | None, list[Any]]:
            with reading(runtime.engine) as conn:
                return suppression.lookup(conn, address), suppression.history(conn, address)

        try:
            entry, changes = await run_in_threadpool(read)
        except AddressError as err:
            return _error(400, str(err))
        history = [{"at": row.at.isoformat(), "action": row.action, "reason": row.reason, "by": row.by,
                    "note": row.note} for row in changes]
        if entry is None:
            return _json({"address": address, "suppressed": False, "history": history}, 404)
        return _json({**_entry(entry), "suppressed": True, "history": history})

    async def remove_entry(request: Request) -> Response:
        data = await _json_body(request)
        if isinstance(data, Response):
            return data
        why = str(data.get("reason") or "").strip()
        if not why:
            return _error(400, 'say why in the body: {"reason": "..."} (kept in the audit log)')
        address = request.path_params["address"]

        def write() -> bool:
            with transaction(runtime.engine) as conn:
                return suppression.remove(conn, address, by="operator (api)", note=why[:2000])

        try:
            removed = await run_in_threadpool(write)
        except AddressError as err:
            return _error(400, str(err))
        return _json({"address": address, "removed": removed}, 200 if removed else 404)

    async def export_csv(request: Request) -> Response:
        def write() -> str:
            out = io.StringIO()
            with reading(runtime.engine) as conn:
                suppression.write_csv(conn, out)
            return out.getvalue()

        body = await run_in_threadpool(write)
        return Response(body, media_type="text/csv; charset=utf-8",
                        headers={**PRIVATE, "Content-Disposition": 'attachment; filename="suppressions.csv"'})

    async def import_csv(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "text/csv":
            return _error(415, "send the file as Content-Type: text/csv")
        body = await read_limited(request)
        if body is None:
            return _error(413, f"larger than {MAX_BODY} bytes: split the file")
        try:
            rows = suppression.read_csv(body.decode("utf-8-sig"), source="api-import")
        except UnicodeDecodeError:
            return _error(400, "the file is not UTF-8")
        except suppression.SuppressionImportError as err:
            return _json({"error": "nothing imported", "problems": err.problems[:200]}, 400)

        def write() -> set[str]:
            with transaction(runtime.engine) as conn:
                return suppression.add_many(conn, rows, by="operator (api import)")

        added = await run_in_threadpool(write)
        return _json({"imported": len(rows), "new": len(added)})

    return [
        Route("/metrics", guarded(metrics)),
        Route("/api/suppressions", guarded(list_entries), methods=["GET"]),
        Route("/api/suppressions", guarded(add_entry), methods=["POST"]),
        Route("/api/suppressions.csv", guarded(export_csv), methods=["GET"]),
        Route("/api/suppressions.csv", guarded(import_csv), methods=["POST"]),
        Route("/api/suppressions/{address}", guarded(one_entry), methods=["GET"]),
        Route("/api/suppressions/{address}", guarded(remove_entry), methods=["DELETE"]),
    ]


async def read_limited(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _json_body(request: Request) -> dict[str, Any] | Response:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return _error(415, "send a JSON body with Content-Type: application/json")
    body = await read_limited(request)
    try:
        data = json.loads(body or b"")
    except ValueError:
        return _error(400, "the body is not JSON")
    if not isinstance(data, dict):
        return _error(400, "the body must be a JSON object")
    return data


def _entry(e: suppression.Suppression) -> dict[str, Any]:
    return {"address": e.address, "reason": e.reason.value, "source": e.source, "detail": e.detail,
            "created_at": e.created_at.isoformat(), "expires_at": e.expires_at.isoformat() if e.expires_at else None}


def _json(data: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse(data, status_code=status, headers=PRIVATE)


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status) if status != 403 else PlainTextResponse(message, 403, headers=PRIVATE)
