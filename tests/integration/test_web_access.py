"""Who may see what on the web side: the catcher's outbox is for the operator only."""

from __future__ import annotations

from typing import Any

import gpxpy
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.integration.test_pipeline import deliver, drain, photo_mail
from waypost import audit
from waypost import runtime as wiring
from waypost.store.models import journeys
from waypost.web.app import create_app


@pytest.fixture
def client_for(make_settings: Any, database_url: str):  # type: ignore[no-untyped-def]
    built: list[Any] = []

    def make(host: str, **overrides: Any) -> TestClient:
        runtime = wiring.build(make_settings(database={"url": database_url}, **overrides))
        built.append(runtime)
        return TestClient(create_app(runtime), client=(host, 50000))

    yield make
    for runtime in built:
        runtime.close()


@pytest.mark.parametrize("host, token, expected", [
    ("127.0.0.1", None, 200),
    ("::1", None, 200),
    ("203.0.113.9", None, 403),
    ("203.0.113.9", "wrong-token", 403),
    ("203.0.113.9", "the-admin-token-0123456789", 200),
])
def test_outbox_is_loopback_or_admin_token_only(client_for: Any, host: str, token: str | None,
                                                expected: int) -> None:
    client = client_for(host, web={"admin_token": "the-admin-token-0123456789"})
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    assert client.get("/outbox", headers=headers).status_code == expected
    assert client.get("/outbox/anything.eml", headers=headers).status_code == (404 if expected == 200 else 403)


def test_without_an_admin_token_only_loopback_sees_the_outbox(client_for: Any) -> None:
    remote = client_for("198.51.100.7")
    assert remote.get("/outbox", headers={"Authorization": "Bearer "}).status_code == 403


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
def test_a_request_relayed_by_a_proxy_nobody_configured_is_not_local(client_for: Any, header: str) -> None:
    """A loopback reverse proxy left out of web.trusted_proxies relays the whole network: what it
    relays must not pass for the operator at the machine."""
    client = client_for("127.0.0.1")
    relayed = {header: "for=203.0.113.9" if header == "Forwarded" else "203.0.113.9"}
    assert client.get("/outbox", headers=relayed).status_code == 403
    assert client.get("/admin/login", headers=relayed).status_code == 404
    assert client.get("/outbox").status_code == 200  # the same client, not relayed


@pytest.mark.parametrize(("forwarded_for", "seen_as"), [
    ("203.0.113.9", "203.0.113.9"),
    ("198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the left part is whatever the client sent
    ("203.0.113.9, 10.0.0.3", "203.0.113.9"),  # a second trusted proxy in the chain is skipped
    ("127.0.0.1, 203.0.113.9", "203.0.113.9"),  # claiming loopback opens nothing
    ("garbage, 203.0.113.9", "203.0.113.9"),
])
def test_a_trusted_proxy_names_the_client(client_for: Any, forwarded_for: str, seen_as: str) -> None:
    proxy = client_for("10.0.0.2", web={"trusted_proxies": ["10.0.0.0/24"]})
    assert proxy.get("/outbox", headers={"X-Forwarded-For": forwarded_for}).status_code == 403
    assert proxy.get("/admin/login", headers={"X-Forwarded-For": forwarded_for}).status_code == 404
    local = proxy.get("/outbox", headers={"X-Forwarded-For": "127.0.0.1"})  # the operator at the proxy's host
    assert local.status_code == 200


def test_journey_views_are_audited_with_the_address_a_trusted_proxy_names(make_settings: Any,
                                                                          database_url: str) -> None:
    runtime = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                         web={"trusted_proxies": ["127.0.0.1"]}))
    try:
        runtime.allowlist.add("ann@example.org")
        deliver(runtime, photo_mail())
        drain(runtime)
        with runtime.engine.connect() as conn:
            token = conn.execute(sa.select(journeys.c.token)).scalar_one()
        client = TestClient(create_app(runtime), client=("127.0.0.1", 50000))
        assert client.get(f"/j/{token}", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}).status_code == 200
        with runtime.engine.connect() as conn:
            (entry,) = [e for e in audit.entries(conn, limit=10) if e.action == "journey.view"]
        assert entry.ip == "203.0.113.0/24"  # the proxy's client, cut to its /24
    finally:
        runtime.close()


@pytest.mark.parametrize("path", ["/j/short", "/j/" + "x" * 40, "/j/" + "x" * 40 + ".json",
                                  "/j/" + "x" * 40 + ".geojson", "/j/" + "x" * 40 + ".gpx",
                                  "/j/../../etc/passwd", "/j/" + "x" * 40 + "/photos/abc/thumb.jpg",
                                  "/outbox/../waypost.toml"])
def test_unknown_or_malformed_journey_paths_are_404(client_for: Any, path: str) -> None:
    response = client_for("127.0.0.1").get(path)
    assert response.status_code == 404
    assert "noindex" in response.headers.get("x-robots-tag", "") or "noindex" in response.text


@pytest.mark.parametrize("path", ["/", "/privacy", "/terms"])
def test_public_pages_name_the_operator(client_for: Any, path: str) -> None:
    client = client_for("203.0.113.9", operator_name="Harbour Lights Ltd", operator_email="hello@harbour.example")
    page = client.get(path)
    assert page.status_code == 200
    assert "Harbour Lights Ltd" in page.text and "hello@harbour.example" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_journey_downloads(make_settings: Any, database_url: str) -> None:
    runtime = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"]))
    try:
        runtime.allowlist.add("ann@example.org")
        deliver(runtime, photo_mail(subject="Lisbon <b>& friends</b>"))
        drain(runtime)
        with runtime.engine.connect() as conn:
            token = conn.execute(sa.select(journeys.c.token)).scalar_one()
        client = TestClient(create_app(runtime), client=("203.0.113.9", 50000))

        geojson = client.get(f"/j/{token}.geojson")
        gpx = client.get(f"/j/{token}.gpx")
        page = client.get(f"/j/{token}")
    finally:
        runtime.close()

    assert geojson.status_code == 200 and geojson.headers["content-type"] == "application/geo+json"
    assert geojson.headers["content-disposition"] == 'attachment; filename="lisbon-b-friends-b.geojson"'
    assert geojson.json()["type"] == "FeatureCollection" and geojson.json()["name"] == "Lisbon <b>& friends</b>"
    assert gpx.status_code == 200 and gpx.headers["content-type"].startswith("application/gpx+xml")
    assert len(gpxpy.parse(gpx.text).tracks[0].segments[0].points) == 3
    for response in (geojson, gpx):
        assert response.headers["x-robots-tag"] == "noindex, nofollow"
        assert response.headers["cache-control"] == "private, no-store"
    assert f"/j/{token}.gpx" in page.text and f"/j/{token}.geojson" in page.text
    assert "Lisbon &lt;b&gt;&amp; friends&lt;/b&gt;" in page.text and "<b>& friends" not in page.text
