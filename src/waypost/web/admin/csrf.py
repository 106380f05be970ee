"""Cross-site request forgery: what stops another page from making the operator's browser
change something here.

Three checks, each enough on its own for today's browsers, together for the rest:

- the session cookie is ``SameSite=Strict``: a request started by another site carries none;
- every POST must carry the session's own random token in a hidden form field (``csrf_token``),
  compared in constant time; the token lives inside the signed, HttpOnly session cookie, so
  no other page can read or forge it;
- when the browser says where a request comes from (``Origin``, ``Sec-Fetch-Site``), it must
  be this site: ``Origin: null`` (a ``data:`` page, a sandboxed frame) and ``cross-site`` are
  refused before anything else is looked at.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

FIELD = "csrf_token"
SAME_SITE = ("same-origin", "none")  # "none": the user typed the address or used a bookmark


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_matches(expected: str, supplied: str) -> bool:
    """Constant-time comparison; an empty token never matches."""
    return bool(expected and supplied) and hmac.compare_digest(expected.encode(), supplied.encode())


def same_origin(request: Request, base_url: str | None) -> bool:
    """False when the browser reports another origin (or none it will name) for the request."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in SAME_SITE:
        return False
    origin = request.headers.get("origin")
    return origin is None or origin in own_origins(request, base_url)


def own_origins(request: Request, base_url: str | None) -> set[str]:
    """The origin this request was addressed to, and the configured public one."""
    found = {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    if base_url:
        parts = urlsplit(base_url)
        found.add(f"{parts.scheme}://{parts.netloc}")
    return found
