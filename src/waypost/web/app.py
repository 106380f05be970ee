"""The web face: journey pages, the catcher's outbox, health. Only this package knows HTTP."""

from __future__ import annotations

import email.policy
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import timedelta
from email.parser import BytesHeaderParser, BytesParser
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import xstatic.pkg.leaflet as xleaflet
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from waypost import audit
from waypost.apps.journeys.build import JourneyView, describe_moment
from waypost.apps.journeys.preview import preview_png
from waypost.feedback.sns import CertificateFetcher, SnsEndpoint, SnsOutcome, SnsResult, SnsVerifier
from waypost.outbound.unsubscribe import InvalidToken
from waypost.runtime import Runtime
from waypost.store.db import ping
from waypost.transactions import transaction
from waypost.web.admin import admin_routes
from waypost.web.exports import export_routes
from waypost.web.legal import legal_routes
from waypost.web.operator_api import operator_allowed, operator_routes, read_limited
from waypost.web.proxies import ClientAddress
from waypost.web.relay_links import relay_routes
from waypost.web.views import (
    download_name,
    journey_geojson,
    journey_gpx,
    journey_json,
    page_context,
    page_data,
)

HERE = Path(__file__).parent
TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
OUTBOX_NAME = re.compile(r"^[A-Za-z0-9._-]+\.eml$")


def _security_headers(tile_url: str, photo_origin: str = "") -> dict[str, str]:
    """``photo_origin``: where presigned photo URLs lead (blobs.photo_urls = "presigned")."""
    tiles = urlsplit(tile_url.replace("{s}", "*"))  # Leaflet's subdomain placeholder
    tile_origin = f"{tiles.scheme}://{tiles.netloc}" if tiles.netloc else ""
    return {
        "Content-Security-Policy": (
            f"default-src 'self'; img-src 'self' data: {tile_origin}{' ' + photo_origin if photo_origin else ''}; "
            "script-src 'self'; "
            "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
        ),
        # the share token is in the URL: never hand it to a tile server or any other site
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


def create_app(runtime: Runtime) -> Starlette:
    settings = runtime.settings
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["moment"] = describe_moment
    templates.env.globals["asset"] = asset_url
    headers = _security_headers(settings.web.tile_url, runtime.photo_origin())
    private = {**headers, "X-Robots-Tag": "noindex, nofollow", "Cache-Control": "private, no-store"}

    def page(request: Request, name: str, context: dict, *, status: int = 200, extra: dict | None = None) -> Response:
        base = {"operator_name": settings.operator_name, "operator_email": settings.operator_address,
                "journeys_address": settings.journeys_address}
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status,
                                          headers={**headers, **(extra or {})})

    def not_found(request: Request) -> Response:
        return page(request, "not_found.html", {}, status=404, extra=private)

    async def healthz(request: Request) -> Response:
        ping(runtime.engine)
        return JSONResponse({"status": "ok"})

    # The journey routes are plain functions: Starlette runs them in its thread pool, so their
    # database reads and the preview drawing never hold up the event loop.
    def journey_page(request: Request) -> Response:
        shared = runtime.journeys.shared(token) if TOKEN.match(token := request.path_params["token"]) else None
        if shared is None:
            if TOKEN.match(token) and runtime.journeys.was_deleted(token):  # its owner deleted it
                return page(request, "gone.html", {}, status=410, extra=private)
            return not_found(request)
        view = shared.view
        data = json.dumps(page_data(view, shared.extras, {"url": settings.web.tile_url,
                                                            "attribution": settings.web.tile_attribution}))
        page_url = f"{settings.public_base_url.rstrip('/')}/j/{view.token}"
        context = {"journey": view, **page_context(view, shared.extras), "data": _script_safe(data),
                   "extras": shared.extras, "expires_at": shared.expires_at, "page_url": page_url}
        response = page(request, "journey.html", context, extra=private)
        if request.method == "GET":  # a HEAD shows nobody anything
            # the visitor's network only (IPv4 /24, IPv6 /48): nobody needs to know who viewed it
            audit.record_alone(runtime.engine, "journey.view", actor="visitor", target=str(shared.id),
                               ip=audit.truncated_ip(request.client.host if request.client else None))
        return response

    def journey_preview(request: Request) -> Response:
        view = _journey(request)
        if view is None:
            return PlainTextResponse("gone", status_code=410, headers=private) if _deleted(request) \
                else not_found(request)
        # private: a shared cache must not keep what only the link's holders may see
        return Response(preview_png(view), media_type="image/png",
                        headers={**private, "Cache-Control": "private, max-age=3600"})

    def journey_data(request: Request) -> Response:
        view = _journey(request)
        if view is None:
            return _missing_json(request)
        return JSONResponse(journey_json(view), headers=private)

    def journey_geo(request: Request) -> Response:
        view = _journey(request)
        if view is None:
            return _missing_json(request)
        disposition = f'attachment; filename="{download_name(view.title, "geojson")}"'
        return JSONResponse(journey_geojson(view), media_type="application/geo+json",
                            headers={**private, "Content-Disposition": disposition})

    def journey_track(request: Request) -> Response:
        view = _journey(request)
        if view is None:
            gone = _deleted(request)
            return PlainTextResponse("gone" if gone else "not found", status_code=410 if gone else 404, headers=private)
        disposition = f'attachment; filename="{download_name(view.title, "gpx")}"'
        return Response(journey_gpx(view), media_type="application/gpx+xml",
                        headers={**private, "Content-Disposition": disposition})

    def photo(request: Request) -> Response:
        token, public_id, size = (request.path_params[k] for k in ("token", "photo", "size"))
        if not TOKEN.match(token) or size not in ("thumb", "display"):
            return not_found(request)
        key = runtime.journeys.photo_blob_key(token, public_id, size)
        if key is None:
            return page(request, "gone.html", {}, status=410, extra=private) if _deleted(request) \
                else not_found(request)
        presigned = runtime.presigned_photo(key)
        if presigned is not None:  # the browser reads the JPEG from S3 itself
            return RedirectResponse(presigned, status_code=307, headers=private)
        try:
            body = runtime.blobs.get(key)
        except KeyError:
            return not_found(request)
        return Response(body, media_type="image/jpeg", headers={**private, "Cache-Control": "private, max-age=86400"})

    def _deleted(request: Request) -> bool:
        """Whether the link's journey was deleted by its owner: its page, data, images and preview
        answer 410 Gone, while a token that never was a journey answers 404."""
        token = request.path_params["token"]
        return bool(TOKEN.match(token)) and runtime.journeys.was_deleted(token)

    def _missing_json(request: Request) -> Response:
        if _deleted(request):
            return JSONResponse({"error": "gone"}, status_code=410, headers=private)
        return JSONResponse({"error": "not found"}, status_code=404, headers=private)

    def _journey(request: Request) -> JourneyView | None:
        token = request.path_params["token"]
        return runtime.journeys.view(token) if TOKEN.match(token) else None

    def operator_only(request: Request) -> bool:
        admin = settings.web.admin_token
        return operator_allowed(request, admin.get_secret_value() if admin is not None else None)

    async def outbox_list(request: Request) -> Response:
        if not operator_only(request):
            return PlainTextResponse("forbidden", status_code=403, headers=private)
        return page(request, "outbox.html", {"messages": _outbox_entries(settings.outbox_dir)}, extra=private)

    async def outbox_message(request: Request) -> Response:
        if not operator_only(request):
            return PlainTextResponse("forbidden", status_code=403, headers=private)
        name = request.path_params["name"]
        path = settings.outbox_dir / name
        if not OUTBOX_NAME.match(name) or not path.is_file():
            return not_found(request)
        return Response(path.read_bytes(), media_type="text/plain; charset=utf-8", headers=private)

    async def unsubscribe_page(request: Request) -> Response:
        """GET never unsubscribes (RFC 8058 §1: scanners and previews fetch links): it asks."""
        try:
            subscription = runtime.unsubscriber.tokens.read(request.path_params["token"])
        except InvalidToken:
            return page(request, "unsubscribe.html", {"state": "invalid"}, status=400, extra=private)
        return page(request, "unsubscribe.html", {"state": "confirm", "address": subscription.address},
                    extra=private)

    async def unsubscribe_now(request: Request) -> Response:
        """RFC 8058 one-click: the body ``List-Unsubscribe=One-Click`` unsubscribes at once, with
        no cookie, no login and no redirect (a redirected POST often turns into a GET)."""
        try:
            subscription = runtime.unsubscriber.tokens.read(request.path_params["token"])
        except InvalidToken:
            return page(request, "unsubscribe.html", {"state": "invalid"}, status=400, extra=private)
        body = await read_limited(request, ONE_CLICK_BODY_LIMIT)
        if body is None or not _is_one_click(body, request.headers.get("content-type", "")):
            return page(request, "unsubscribe.html", {"state": "bad-request", "address": subscription.address},
                        status=400, extra=private)
        with transaction(runtime.engine) as conn:
            runtime.unsubscriber.apply(conn, subscription, source="one-click")
        return page(request, "unsubscribe.html", {"state": "done", "address": subscription.address},
                    extra=private)

    feedback = settings.feedback
    fetcher = CertificateFetcher(feedback.sns_cert_ca_path, host_pattern=feedback.sns_cert_host_pattern)
    max_age = timedelta(minutes=feedback.sns_max_age_minutes) or None  # 0 minutes: no age check
    sns = SnsEndpoint(SnsVerifier(fetcher, feedback.sns_topic_arns, max_age=max_age), fetcher,
                      lambda message, _envelope: runtime.intake.apply_ses_message(message, "sns"))

    async def sns_hook(request: Request) -> Response:
        """SES feedback delivered by SNS over HTTPS: signature, certificate host and topic are
        checked (403 otherwise); 503 when our own fetch of the certificate failed and 500 when the
        feedback could not be applied, so that SNS retries."""
        body = await read_limited(request, SNS_BODY_LIMIT)
        if body is None:
            return PlainTextResponse("too large", status_code=413)
        outcome = await run_in_threadpool(sns.handle, dict(request.headers), body)
        return sns_response(outcome)

    routes = [
        *legal_routes(runtime, page),
        *export_routes(runtime),
        *relay_routes(runtime),
        *admin_routes(runtime),
        Route("/healthz", healthz),
        Route("/j/{token}.json", journey_data),
        Route("/j/{token}.geojson", journey_geo),
        Route("/j/{token}.gpx", journey_track),
        Route("/j/{token}/photos/{photo}/{size}.jpg", photo),
        Route("/j/{token}/preview.png", journey_preview),
        Route("/j/{token}", journey_page),
        Route("/u/{token}", unsubscribe_page, methods=["GET", "HEAD"]),
        Route("/u/{token}", unsubscribe_now, methods=["POST"]),
        Route("/outbox", outbox_list),
        Route("/outbox/{name}", outbox_message),
        Route("/hooks/sns", sns_hook, methods=["POST"]),
        *operator_routes(runtime),
        Mount("/static/leaflet", VersionedStatic(directory=LEAFLET_DIR), name="leaflet"),
        Mount("/static", VersionedStatic(directory=STATIC_DIR), name="static"),
    ]
    async def missing(request: Request, _exc: Exception) -> Response:
        return not_found(request)

    # Leaflet alone is 147 KB; gzipped, the whole journey page stays well inside 150 KB.
    # JPEG and PNG are left as they are (GZipMiddleware skips them).
    # ClientAddress first: every route, the console's lockout and audit log included, sees the
    # client a trusted proxy names, never one a request merely claims
    return Starlette(routes=routes, exception_handlers={404: missing},
                     middleware=[Middleware(ClientAddress, proxies=settings.web.trusted_proxies),
                                 Middleware(GZipMiddleware, minimum_size=500)])


STATIC_DIR = HERE / "static"
LEAFLET_DIR = Path(xleaflet.BASE_DIR)
IMMUTABLE = "public, max-age=31536000, immutable"


@cache
def _fingerprint(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _static_file(name: str) -> Path:
    return LEAFLET_DIR / name.removeprefix("leaflet/") if name.startswith("leaflet/") else STATIC_DIR / name


def asset_url(name: str) -> str:
    """``/static/<name>?v=<hash of its content>``: a URL that changes whenever the file does,
    so browsers may keep it for a year (see VersionedStatic)."""
    path = _static_file(name)
    return f"/static/{name}?v={_fingerprint(path, path.stat().st_mtime_ns)}"


class VersionedStatic(StaticFiles):
    """Static files that may be cached for a year when asked for by ``asset_url`` (the ``v``
    matches the content); under any other URL the browser revalidates (ETag) every time."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            versions = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("v", [])
            file = Path(str(self.directory), path)  # found: super() answered 200 or 304
            fresh = bool(versions) and versions[0] == _fingerprint(file, file.stat().st_mtime_ns)
            response.headers["Cache-Control"] = IMMUTABLE if fresh else "no-cache"
        return response


ONE_CLICK_BODY_LIMIT = 16 * 1024
SNS_BODY_LIMIT = 512 * 1024  # SNS messages are at most 256 KB, more once escaped in the envelope
# RETRY_LATER is our fetch failing, not their message: a 5xx makes SNS deliver it again
SNS_STATUS: Mapping[SnsResult, int] = {
    SnsResult.APPLIED: 200,
    SnsResult.SUBSCRIBED: 200,
    SnsResult.NOTED: 200,
    SnsResult.REFUSED: 403,
    SnsResult.RETRY_LATER: 503,
}
# a refusal answers with its reason word; these are the words when there is none
SNS_TEXT: Mapping[SnsResult, str] = {SnsResult.APPLIED: "ok", SnsResult.SUBSCRIBED: "subscribed",
                                     SnsResult.NOTED: "noted", SnsResult.REFUSED: "forbidden",
                                     SnsResult.RETRY_LATER: "unavailable"}


def sns_response(outcome: SnsOutcome) -> PlainTextResponse:
    """An SNS outcome as HTTP: a refusal answers with its reason word, anything else with a fixed word."""
    text = outcome.reason if outcome.reason is not None else SNS_TEXT[outcome.result]
    return PlainTextResponse(text, status_code=SNS_STATUS[outcome.result])


def _is_one_click(body: bytes, content_type: str) -> bool:
    """True when the form holds ``List-Unsubscribe=One-Click``, sent as
    application/x-www-form-urlencoded or multipart/form-data (RFC 8058 §3.2 allows both)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        message = BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace") + body)
        for part in message.iter_parts() if message.is_multipart() else ():
            if part.get_param("name", header="content-disposition") == "List-Unsubscribe":
                value = part.get_payload(decode=True)  # bytes, or None for a multipart part
                return isinstance(value, bytes) and value.strip() == b"One-Click"
        return False
    fields = parse_qs(body.decode("latin-1"), keep_blank_values=True)
    return fields.get("List-Unsubscribe") == ["One-Click"]


def _script_safe(data: str) -> str:
    """JSON placed inside <script type="application/json">: no '</script>' can close it."""
    return data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _outbox_entries(directory: Path) -> list[dict[str, str]]:
    if not directory.is_dir():
        return []
    entries = []
    for path in sorted(directory.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True):
        with path.open("rb") as handle:
            headers = BytesHeaderParser(policy=email.policy.default).parse(handle)
        entries.append({"name": path.name, "to": str(headers.get("To", "")),
                        "subject": str(headers.get("Subject", "")), "date": str(headers.get("Date", ""))})
    return entries
