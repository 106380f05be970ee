"""``/x/<token>``: a person's export, downloaded through the link mailed to them
(apps/people_export.py). Each download is audited with the downloader's network only; an expired
link answers 410 with a plain page naming the operator, a token that never was one 404."""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from waypost import audit
from waypost.apps.people_export import Download, Downloads
from waypost.runtime import Runtime

EXPORT_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")  # link_tokens.new_token: 24 bytes, URL-safe base64
HEADERS = {"X-Robots-Tag": "noindex, nofollow", "Cache-Control": "private, no-store", "Referrer-Policy": "no-referrer"}


def export_routes(runtime: Runtime) -> list[Route]:
    downloads = Downloads(runtime.engine, runtime.blobs)
    settings = runtime.settings

    def fetch(request: Request) -> Response:
        token = request.path_params["token"]
        found = downloads.find(token) if EXPORT_TOKEN.match(token) else None
        if found is None:
            return PlainTextResponse("Not found.\n", status_code=404, headers=HEADERS)
        if not isinstance(found, Download):
            return PlainTextResponse(
                "This download link has expired, and the export behind it is deleted.\n"
                "Send “export” again for a new one. Questions: "
                f"{settings.operator_name} <{settings.operator_address}>.\n", status_code=410, headers=HEADERS)
        data = runtime.blobs.get(found.blob_key)
        if request.method == "GET":  # a HEAD downloads nothing
            downloads.record(found, audit.truncated_ip(request.client.host if request.client else None))
        return Response(data, media_type="application/zip", headers={
            **HEADERS, "Content-Disposition": f'attachment; filename="{found.filename}"'})

    async def export(request: Request) -> Response:
        return await run_in_threadpool(fetch, request)

    return [Route("/x/{token}", export, methods=["GET", "HEAD"])]
