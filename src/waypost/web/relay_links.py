"""``/r/<token>``: an attachment a device relayed (apps/relay), downloaded through the link in the
forwarded mail. Always a download, never shown: ``Content-Disposition: attachment`` with the
sanitised name (RFC 6266, ``filename*`` in UTF-8 per RFC 8187), ``X-Content-Type-Options:
nosniff``, and a type a browser will not run. Each download is audited with the downloader's
network only (time, truncated IP, link id, recipient). A revoked, expired or purged link answers
410 with a plain page naming the operator; a token that never was one 404."""

from __future__ import annotations

from urllib.parse import quote

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from waypost import audit
from waypost.apps.relay.links import Links, served_type
from waypost.clock import utcnow
from waypost.runtime import Runtime

HEADERS = {"X-Robots-Tag": "noindex, nofollow", "Cache-Control": "private, no-store", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}
CHUNK = 64 * 1024
GONE = {"revoked": "was withdrawn by the device's owner", "expired": "has expired",
        "purged": "has expired, and the file behind it is deleted"}


def content_disposition(filename: str) -> str:
    """RFC 6266 §4.3: an ASCII fallback name, and the real one as ``filename*`` (RFC 8187)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\%' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def relay_routes(runtime: Runtime) -> list[Route]:
    links = Links(runtime.engine, runtime.blobs)
    settings = runtime.settings

    def fetch(request: Request) -> Response:
        found = links.find(request.path_params["token"])
        if found is None:
            return PlainTextResponse("Not found.\n", status_code=404, headers=HEADERS)
        state = found.state(utcnow())
        if state == "active" and not runtime.blobs.exists(found.blob_key):
            state = "purged"
        if state != "active":
            return PlainTextResponse(
                f"This link {GONE[state]}.\nAsk the person who sent you the mail for the file again. "
                f"Questions: {settings.operator_name} <{settings.operator_address}>.\n", status_code=410,
                headers=HEADERS)
        headers = {**HEADERS, "Content-Disposition": content_disposition(found.filename),
                   "Content-Length": str(found.size)}
        if request.method == "HEAD":  # a HEAD downloads nothing
            return Response(b"", media_type=served_type(found.content_type), headers=headers)
        stream = runtime.blobs.open(found.blob_key)  # streamed: a large scan never sits in memory whole
        links.record_download(found, audit.truncated_ip(request.client.host if request.client else None))
        return StreamingResponse(iter(lambda: stream.read(CHUNK), b""), media_type=served_type(found.content_type),
                                 headers=headers, background=BackgroundTask(stream.close))

    async def download(request: Request) -> Response:
        return await run_in_threadpool(fetch, request)

    return [Route("/r/{token}", download, methods=["GET", "HEAD"])]
