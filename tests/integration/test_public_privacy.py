"""What a share link gives away: the public page, JSON, GeoJSON and GPX carry neutral photo names
("Photo 2"), no file names and no camera make or model, and coordinates of 5 decimals at most;
the owner's own reply still names the files. A view is audited with the visitor's network only
(IPv4 /24, IPv6 /48)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.integration.test_journey_links import Site, only_journey, views_audited
from tests.integration.test_pipeline import SHOTS, deliver, drain, photo_mail
from waypost import runtime as wiring
from waypost.apps.journeys.samples import Shot
from waypost.audit import truncated_ip

# fixes as precise as a phone writes them (7 decimals: about a centimetre), three between stops
PRECISE_SHOTS = tuple(Shot(shot.latitude + 0.0000123, shot.longitude - 0.0000456, shot.taken_at, shot.label)
                      for shot in SHOTS)
FILE_NAMES = [f"{shot.label}.jpg" for shot in SHOTS]
CAMERA = ("Demo Camera",)  # make_photo's EXIF model (its make, "Waypost", is our own name too)


@pytest.fixture
def shared(make_settings: Any, database_url: str) -> Iterator[tuple[Site, str]]:
    runtime = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"]))
    runtime.allowlist.add("ann@example.org")
    deliver(runtime, photo_mail(shots=PRECISE_SHOTS))
    drain(runtime)
    yield Site(runtime), only_journey(runtime).token
    runtime.close()


@pytest.mark.parametrize("suffix", ["", ".json", ".geojson", ".gpx"])
def test_public_outputs_carry_neutral_names_no_camera_and_rounded_coordinates(shared: tuple[Site, str],
                                                                               suffix: str) -> None:
    site, token = shared
    response = site.client.get(f"/j/{token}{suffix}")
    assert response.status_code == 200
    body = response.text
    for secret in (*FILE_NAMES, *CAMERA, "Belém"):  # the file stem, too ("Belém" is also no place name)
        assert secret not in body, (suffix, secret)
    assert "Photo 1" in body or suffix == ".geojson"  # GeoJSON names photos by id only
    precise = [n for n in _numbers(response) if len(repr(n).partition(".")[2]) > 5]
    assert not precise, precise[:5]


def _numbers(response: Any) -> list[float]:
    """Every coordinate-like number of a download: JSON numbers (times are strings there), the
    lat/lon attributes of GPX; the page's data island is the JSON download again."""
    kind = response.headers["content-type"]
    if "gpx" in kind:
        return [float(v) for v in re.findall(r'(?:lat|lon)="(-?[0-9.]+)"', response.text)]
    if "json" not in kind:
        return []
    found: list[float] = []

    def walk(value: Any) -> None:
        if isinstance(value, float):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(response.json())
    assert found  # a journey has coordinates: the check above must have something to check
    return found


def test_a_view_is_audited_with_the_visitors_network_only(shared: tuple[Site, str]) -> None:
    site, token = shared
    site.client.get(f"/j/{token}")
    TestClient(site.client.app, client=("2001:db8:1234:5678::9", 50000)).get(f"/j/{token}")
    assert sorted(entry.ip for entry in views_audited(site.runtime)) == ["2001:db8:1234::/48", "203.0.113.0/24"]


@pytest.mark.parametrize(("ip", "kept"), [
    ("203.0.113.9", "203.0.113.0/24"), ("10.1.2.3", "10.1.2.0/24"), ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
    ("::ffff:198.51.100.7", "198.51.100.0/24"), ("not an ip", None), (None, None), ("", None)])
def test_truncated_ip(ip: str | None, kept: str | None) -> None:
    assert truncated_ip(ip) == kept
