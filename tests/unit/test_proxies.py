"""The client address behind reverse proxies (web/proxies.py): which X-Forwarded-For entry is
believed, and what the middleware does to the ASGI scope."""

from __future__ import annotations

import asyncio
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from waypost.web.proxies import UNVOUCHED, ClientAddress, forwarded_client, is_trusted

PROXIES = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(("entries", "client"), [
    (["203.0.113.9"], "203.0.113.9"),
    (["198.51.100.1", "203.0.113.9"], "203.0.113.9"),  # only the right-most was written by our proxy
    (["203.0.113.9", "10.0.0.3"], "203.0.113.9"),  # a second trusted proxy is skipped
    (["2001:db8::7", "fd00::1"], "2001:db8::7"),
    (["10.0.0.4", "10.0.0.3"], "10.0.0.4"),  # all trusted: the oldest hop
    (["garbage", "10.0.0.3"], None),  # what only a client could have written proves nothing
    ([], None),
])
def test_the_right_most_address_that_is_not_a_trusted_proxy_is_the_client(entries: list[str],
                                                                           client: str | None) -> None:
    assert forwarded_client(entries, PROXIES) == client


def test_only_listed_addresses_are_trusted() -> None:
    assert is_trusted("10.0.0.200", PROXIES) and is_trusted("fd00::5", PROXIES)
    assert not is_trusted("127.0.0.1", PROXIES) and not is_trusted("testclient", PROXIES)
    assert not is_trusted(None, PROXIES) and not is_trusted("10.0.0.1", ())


def through(peer: str, headers: dict[str, str], scheme: str = "http") -> dict[str, Any]:
    """The scope an app behind ClientAddress(PROXIES) sees for a request from ``peer``."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {"type": "http", "scheme": scheme, "client": (peer, 4711),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    # a thread of its own: the browser tests' Playwright (sync API) keeps an event loop running in
    # the main thread for the rest of the session, where asyncio.run would refuse to start
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, ClientAddress(app, PROXIES)(scope, None, None)).result(timeout=30)
    return seen


def test_a_trusted_proxy_sets_the_client_and_may_raise_the_scheme_to_https() -> None:
    scope = through("10.0.0.2", {"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "https"})
    assert scope["client"] == ("203.0.113.9", 0) and scope["scheme"] == "https" and UNVOUCHED not in scope
    assert through("10.0.0.2", {"X-Forwarded-Proto": "http"}, scheme="https")["scheme"] == "https"  # never lowered


def test_anyone_else_changes_nothing_but_is_marked_as_relayed() -> None:
    scope = through("127.0.0.1", {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert scope["client"] == ("127.0.0.1", 4711) and scope["scheme"] == "http" and scope[UNVOUCHED]
    assert UNVOUCHED not in through("127.0.0.1", {"Host": "waypost.test"})
