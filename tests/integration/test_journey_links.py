"""Share links: revoke, rotate, expiry and the console's list, in the repository and over HTTP;
the page's view audit, its link preview, gzip and static caching. SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image
from starlette.testclient import TestClient

from tests.integration.test_pipeline import SHOTS, caught, deliver, drain, photo_mail
from waypost import audit
from waypost import runtime as wiring
from waypost.apps.journeys import repository
from waypost.store.models import audit_log, journeys, utcnow
from waypost.web.app import create_app

BASE = "https://waypost.example"


class Site:
    """A runtime and a web client from a public address; the runtime's parts read through."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.client = TestClient(create_app(runtime), client=("203.0.113.9", 50000))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)


@pytest.fixture
def site(make_settings: Any, database_url: str) -> Iterator[Site]:
    """A runtime holding one journey (Ann's day in Lisbon), links valid for 30 days."""
    runtime = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                         base_url=BASE, journeys={"link_days": 30}))
    runtime.allowlist.add("ann@example.org")
    deliver(runtime, photo_mail())
    drain(runtime)
    yield Site(runtime)
    runtime.close()


def only_journey(runtime: Any) -> sa.Row:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(journeys)).one()


def journey_paths(client: TestClient, token: str) -> list[str]:
    """Every route a share link opens, the first photo's images included."""
    photo = client.get(f"/j/{token}.json").json()["photos"][0]
    return [f"/j/{token}", f"/j/{token}.json", f"/j/{token}.geojson", f"/j/{token}.gpx",
            f"/j/{token}/preview.png", photo["thumbnail_url"], photo["display_url"]]


def statuses(client: TestClient, paths: list[str]) -> list[int]:
    return [client.get(path).status_code for path in paths]


def views_audited(runtime: Any) -> list[audit.AuditEntry]:
    with runtime.engine.connect() as conn:
        return audit.entries(conn, action="journey.view")


# --- the repository ---------------------------------------------------------------------------


def test_new_journeys_expire_link_days_after_they_start(site: Any) -> None:
    row = only_journey(site)
    assert row.expires_at - row.created_at == timedelta(days=30)
    assert row.revoked_at is None


def test_without_link_days_a_link_never_expires(make_settings: Any, database_url: str) -> None:
    runtime = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"]))
    try:
        runtime.allowlist.add("ann@example.org")
        deliver(runtime, photo_mail())
        drain(runtime)
        assert only_journey(runtime).expires_at is None
    finally:
        runtime.close()


def test_revoke_rotate_and_expiry_decide_what_the_reader_sees(site: Any) -> None:
    row = only_journey(site)
    photo = site.journeys.view(row.token).photos[0].public_id
    assert site.journeys.photo_blob_key(row.token, photo, "thumb") is not None

    with site.engine.begin() as conn:
        repository.revoke(conn, row.id)
        repository.revoke(conn, row.id)  # twice is fine: the first time stands
    revoked_at = only_journey(site).revoked_at
    assert revoked_at is not None
    assert site.journeys.view(row.token) is None and site.journeys.shared(row.token) is None
    assert site.journeys.photo_blob_key(row.token, photo, "thumb") is None
    with site.engine.connect() as conn:  # the owner's own mail still finds it
        assert repository.load_view(conn, row.token) is not None

    with site.engine.begin() as conn:
        token = repository.rotate(conn, row.id)
    assert token != row.token and len(token) >= 32
    assert site.journeys.view(row.token) is None, "the old token stops working at once"
    assert site.journeys.view(token) is not None, "rotating gives a working link again"
    assert site.journeys.photo_blob_key(token, photo, "display") is not None

    with site.engine.begin() as conn:
        repository.set_expiry(conn, row.id, utcnow() - timedelta(seconds=1))
    assert site.journeys.view(token) is None and site.journeys.photo_blob_key(token, photo, "thumb") is None
    with site.engine.begin() as conn:
        repository.set_expiry(conn, row.id, utcnow() + timedelta(hours=1))
    assert site.journeys.shared(token).expires_at > utcnow()
    with site.engine.begin() as conn:
        repository.set_expiry(conn, row.id, None)
    assert site.journeys.view(token) is not None and only_journey(site).expires_at is None


def test_unknown_journeys_and_naive_times_are_refused(site: Any) -> None:
    row = only_journey(site)
    with site.engine.begin() as conn:
        for change in (repository.revoke, repository.rotate, lambda c, i: repository.set_expiry(c, i, None)):
            with pytest.raises(repository.JourneyNotFound):
                change(conn, row.id + 1000)
        with pytest.raises(ValueError, match="aware"):
            repository.set_expiry(conn, row.id, utcnow().replace(tzinfo=None))
    assert only_journey(site).token == row.token


def test_list_journeys_pages_newest_first_and_filters_by_owner(site: Any) -> None:
    site.allowlist.add("bob@example.org")
    deliver(site, photo_mail(sender="bob@example.org", subject="Bob one", shots=SHOTS[:1]))
    deliver(site, photo_mail(sender="Bob@Example.org", subject="Bob two", shots=SHOTS[:2]))
    drain(site)
    with site.engine.begin() as conn:
        everything = repository.list_journeys(conn, limit=10, after_id=None)
        repository.revoke(conn, everything[0].id)
        repository.set_expiry(conn, everything[1].id, utcnow() - timedelta(minutes=1))
        first = repository.list_journeys(conn, limit=2, after_id=None)
        rest = repository.list_journeys(conn, limit=2, after_id=first[-1].id)
        bobs = repository.list_journeys(conn, limit=10, after_id=None, owner="BOB@example.org")

    assert [j.title for j in everything] == ["Bob two", "Bob one", "Lisbon"]
    assert [j.photos for j in everything] == [2, 1, 3]
    assert [j.id for j in first + rest] == [j.id for j in everything]
    assert [j.title for j in bobs] == ["Bob two", "Bob one"]
    assert [j.state() for j in first + rest] == ["revoked", "expired", "live"]
    lisbon = rest[0]
    assert lisbon.owner == "ann@example.org" and lisbon.token == only_journey_token(site, lisbon.id)
    assert lisbon.created <= utcnow() and lisbon.expires_at is not None and lisbon.revoked_at is None


def only_journey_token(runtime: Any, journey_id: int) -> str:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(journeys.c.token).where(journeys.c.id == journey_id)).scalar_one()


# --- over HTTP --------------------------------------------------------------------------------


def test_every_route_of_a_revoked_or_expired_link_is_404(site: Any) -> None:
    row, client = only_journey(site), site.client
    paths = journey_paths(client, row.token)
    assert statuses(client, paths) == [200] * len(paths)

    with site.engine.begin() as conn:
        repository.revoke(conn, row.id)
    assert statuses(client, paths) == [404] * len(paths)
    page = client.get(paths[0])
    assert "noindex" in page.headers["x-robots-tag"] and row.title not in page.text
    assert client.get(paths[1]).json() == {"error": "not found"}

    with site.engine.begin() as conn:
        token = repository.rotate(conn, row.id)
    assert statuses(client, paths) == [404] * len(paths), "the old link stays dead"
    fresh = [path.replace(row.token, token) for path in paths]
    assert statuses(client, fresh) == [200] * len(fresh)

    with site.engine.begin() as conn:
        repository.set_expiry(conn, row.id, utcnow() - timedelta(seconds=1))
    assert statuses(client, fresh) == [404] * len(fresh)


def test_a_page_view_is_audited_but_photos_and_downloads_are_not(site: Any) -> None:
    row, client = only_journey(site), site.client
    for path in journey_paths(client, row.token)[1:]:
        assert client.get(path).status_code == 200
    assert client.head(f"/j/{row.token}").status_code == 200
    assert views_audited(site) == []

    assert client.get(f"/j/{row.token}").status_code == 200
    (entry,) = views_audited(site)
    assert (entry.actor, entry.target, entry.ip) == ("visitor", str(row.id), "203.0.113.0/24")  # truncated

    with site.engine.begin() as conn:
        repository.revoke(conn, row.id)
    assert client.get(f"/j/{row.token}").status_code == 404
    assert len(views_audited(site)) == 1, "a refused view is not a view"
    with site.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar() == 1


def test_the_page_offers_a_link_preview(site: Any) -> None:
    row, client = only_journey(site), site.client
    page = client.get(f"/j/{row.token}").text
    meta = dict(re.findall(r'<meta (?:property|name)="([^"]+)" content="([^"]*)"', page))
    assert meta["og:type"] == "website" and meta["twitter:card"] == "summary_large_image"
    assert meta["og:title"] == "Lisbon" and meta["robots"] == "noindex, nofollow"
    assert meta["og:image"] == f"{BASE}/j/{row.token}/preview.png"
    assert meta["og:description"].startswith("3 photos · 31 km · 1 day · ")
    assert "Sintra" in meta["og:description"]

    preview = client.get(f"/j/{row.token}/preview.png")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert preview.headers["cache-control"].startswith("private")
    assert preview.headers["referrer-policy"] == "no-referrer"
    image = Image.open(io.BytesIO(preview.content))
    assert image.format == "PNG" and image.size == (1200, 630)
    assert not image.getexif() and "exif" not in image.info
    # the route is drawn: the route's colour covers a stretch of the picture
    colours = image.convert("RGB").getcolors(1200 * 630)
    assert sum(count for count, colour in colours if colour == (31, 111, 120)) > 1000


def test_preview_of_a_journey_without_locations(site: Any) -> None:
    from waypost.apps.journeys.samples import Shot

    deliver(site, photo_mail(subject="Nowhere " + "very long words " * 12,
                             shots=(Shot(None, None, None, "blank"),)))
    drain(site)
    with site.engine.connect() as conn:
        token = conn.execute(sa.select(journeys.c.token).where(journeys.c.title.startswith("Nowhere"))).scalar_one()
    preview = site.client.get(f"/j/{token}/preview.png")
    assert preview.status_code == 200 and Image.open(io.BytesIO(preview.content)).size == (1200, 630)
    page = site.client.get(f"/j/{token}").text
    assert "no route to draw" in page and "Time unknown" in page


def test_pages_and_scripts_are_gzipped_and_static_files_cached_when_versioned(site: Any) -> None:
    row, client = only_journey(site), site.client
    page = client.get(f"/j/{row.token}", headers={"Accept-Encoding": "gzip"})
    assert page.headers["content-encoding"] == "gzip"
    assets = re.findall(r'(?:href|src)="(/static/[^"?]+\?v=[0-9a-f]{12})"', page.text)
    assert {a.split("?")[0] for a in assets} == {"/static/waypost.css", "/static/leaflet/leaflet.css",
                                               "/static/leaflet/leaflet.js", "/static/journey.js"}
    for asset in assets:
        response = client.get(asset, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200 and response.headers["content-encoding"] == "gzip", asset
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        raw = client.get(asset, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in raw.headers and raw.content == response.content
    unversioned = client.get("/static/journey.js")
    assert unversioned.headers["cache-control"] == "no-cache" and unversioned.headers.get("etag")
    stale = client.get("/static/journey.js?v=000000000000")
    assert stale.headers["cache-control"] == "no-cache"
    image = client.get(client.get(f"/j/{row.token}.json").json()["photos"][0]["display_url"],
                       headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in image.headers, "JPEGs are sent as they are"
    # the HTML is small once compressed: the body the client saw was decompressed from the wire
    assert len(gzip.compress(page.content)) < 20_000



def test_a_reply_to_a_journey_whose_link_was_revoked_carries_no_link(site: Any) -> None:
    journey = only_journey(site.runtime)
    with site.engine.begin() as conn:
        repository.revoke(conn, journey.id)
    (first_reply,) = caught(site.runtime)
    more = photo_mail(subject="More of Lisbon", shots=SHOTS[:1])
    more["In-Reply-To"] = first_reply["Message-ID"]
    deliver(site.runtime, more)
    drain(site.runtime)

    (reply,) = [m for m in caught(site.runtime) if m["Message-ID"] != first_reply["Message-ID"]]
    text = reply.get_body(("plain",)).get_content()
    assert f"/j/{journey.token}" not in reply.as_string()
    assert "has been turned off" in " ".join(text.split())
    assert f"/j/{journey.token}" in first_reply.get_body(("plain",)).get_content()
