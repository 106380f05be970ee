"""Who sent a request: the direct peer, or the client a trusted reverse proxy names.

``X-Forwarded-For`` is a list anyone can start: a client may send one, and each proxy appends
the address it received the request from. Only the entries appended by proxies we trust are
facts, so the list is read from the right, skipping trusted proxies, and the first address
that is not one is the client (each hop appends, as RFC 7239 §4 describes for the standard
``Forwarded``; uvicorn picks the same entry). From a peer that is not in
``web.trusted_proxies`` the header means nothing: the peer is the client. Such a request is
never *local*, though: whatever relayed it is not the operator at the machine, so a loopback
proxy nobody configured cannot open the console or the operator API to the whole network.

``ClientAddress`` applies this to every request before any route sees it; the login lockout,
the audit log and the loopback checks all read ``request.client`` afterwards.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# set in the scope when a request carries forwarding headers nobody trusted vouches for
UNVOUCHED = "waypost.unvouched_forwarding"
FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})
SCHEMES = {"http": "https", "ws": "wss"}  # what X-Forwarded-Proto may raise a scheme to


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def is_trusted(host: str | None, proxies: Sequence[Network]) -> bool:
    address = _address(host) if host else None
    return address is not None and any(address in network for network in proxies)


def forwarded_client(entries: Sequence[str], proxies: Sequence[Network]) -> str | None:
    """The right-most address in ``entries`` (X-Forwarded-For, oldest first) that is not a
    trusted proxy; the left-most when all are; None when that entry is not an IP address
    (only the part a client wrote can be malformed, so it proves nothing)."""
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:
            return None
        if not any(address in network for network in proxies):
            return str(address)
    return str(_address(entries[0])) if entries else None


def _header_list(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    # several fields of one name are one comma-separated list (RFC 9110 §5.3)
    values = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return [part.strip() for part in ",".join(values).split(",") if part.strip()]


class ClientAddress:
    """ASGI middleware: ``scope["client"]`` becomes the client a trusted proxy names in
    X-Forwarded-For (and ``scope["scheme"]`` follows its X-Forwarded-Proto); from anyone else
    forwarding headers change nothing but mark the request as not local."""

    def __init__(self, app: ASGIApp, proxies: Sequence[Network] = ()) -> None:
        self.app = app
        self.proxies = tuple(proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            self._resolve(scope)
        await self.app(scope, receive, send)

    def _resolve(self, scope: Scope) -> None:
        headers = scope.get("headers") or []
        peer = scope.get("client")
        if not is_trusted(peer[0] if peer else None, self.proxies):
            if any(key.lower() in FORWARDING_HEADERS for key, _ in headers):
                scope[UNVOUCHED] = True
            return
        client = forwarded_client(_header_list(headers, b"x-forwarded-for"), self.proxies)
        if client is not None:
            scope["client"] = (client, 0)
        proto = _header_list(headers, b"x-forwarded-proto")
        if proto and proto[-1].lower() == SCHEMES.get(scope.get("scheme", "")):
            scope["scheme"] = proto[-1].lower()


def is_local(connection: HTTPConnection) -> bool:
    """True for a request from this machine's loopback that nothing unvouched relayed."""
    if connection.scope.get(UNVOUCHED):
        return False
    host = connection.client.host if connection.client else None
    address = _address(host) if host else None
    return address is not None and address.is_loopback
