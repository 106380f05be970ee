"""Privacy zones: photos inside a person's zone are left out of every public output of their
journeys (page, JSON, GeoJSON, GPX, link preview, images) and the route is cut there. Zones come
from the operator (`waypost person zone`) or from the person (`hide home …` in a journey's
thread, over SMTP); the owner's answer says what was hidden. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from tests.integration.test_mail_commands import answer_to, command, first_journey, journey_rows, send, text_of
from tests.integration.test_pipeline import photo_mail
from waypost.apps.journeys import privacy_zones
from waypost.apps.journeys.build import ESTIMATED, UNPLACED, PhotoPoint, build_view
from waypost.apps.journeys.geo import great_circle_km
from waypost.cli import cli
from waypost.web.app import create_app

ANN = "ann@example.org"
CASTELO = (38.7139, -9.1334)  # the second of Ann's Lisbon photos (tests/integration/test_pipeline.py)
BELEM = (38.6916, -9.2160)


@pytest.fixture
def ann(make_settings: Callable[..., Any], database_url: str, allowing_runtime: Callable[..., Any]) -> Any:
    return allowing_runtime(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"]))


def _zone(latitude: float, longitude: float, radius_m: float = 500.0) -> privacy_zones.Zone:
    return privacy_zones.Zone(1, ANN, latitude, longitude, radius_m, "home", "operator", datetime.now(UTC))


def _point(name: str, minute: int, position: tuple[float, float] | None) -> PhotoPoint:
    taken_at = datetime(2024, 7, 13, 10, tzinfo=UTC) + timedelta(minutes=minute)
    return PhotoPoint(public_id=name, filename=None, mail_position=minute, taken_at=taken_at,
                      utc_offset_minutes=0, time_source="exif",
                      latitude=position[0] if position else None, longitude=position[1] if position else None,
                      problem=None, sequence=minute)


def test_the_public_view_leaves_the_zone_out_and_cuts_the_route_there() -> None:
    points = [_point("a", 0, (38.700, -9.300)), _point("b", 10, (38.710, -9.250)), _point("home", 20, CASTELO),
              _point("between", 25, None), _point("c", 30, (38.720, -9.100)), _point("d", 40, (38.730, -9.050))]
    whole = build_view("Lisbon", "t" * 22, datetime.now(UTC), points)
    assert next(p for p in whole.photos if p.public_id == "between").placement == ESTIMATED

    public = privacy_zones.public_view(whole, points, [_zone(*CASTELO)])

    assert "home" not in {p.public_id for p in public.photos}
    for photo in public.photos:
        assert photo.position is None or great_circle_km(*photo.position, *CASTELO) > 0.5
    assert [(leg.start.public_id, leg.end.public_id) for leg in public.legs] == [("a", "b"), ("c", "d")]
    between = next(p for p in public.photos if p.public_id == "between")
    assert between.placement == UNPLACED and between.position is None, "its estimate lay on the cut"
    assert public.totals.distance_km == pytest.approx(sum(leg.distance_km for leg in public.legs))
    assert privacy_zones.public_view(whole, points, []) is whole
    far = privacy_zones.public_view(whole, points, [_zone(10.0, 10.0)])
    assert len(far.legs) == len(whole.legs)


def _public(runtime: Any, token: str) -> dict[str, Any]:
    with TestClient(create_app(runtime), client=("203.0.113.9", 50000)) as client:
        found = {suffix: client.get(f"/j/{token}{suffix}")
                 for suffix in ("", ".json", ".geojson", ".gpx", "/preview.png")}
        assert all(response.status_code == 200 for response in found.values())
        data = found[".json"].json()
        images = {p["id"]: client.get(p["thumbnail_url"]).status_code for p in _photos(data) if p.get("thumbnail_url")}
    return {"page": found[""].text, "json": data, "geojson": found[".geojson"].json(), "gpx": found[".gpx"].text,
            "preview": found["/preview.png"].content, "images": images}


def _photos(data: dict[str, Any]) -> list[dict[str, Any]]:
    return list(data["photos"])


def _coordinates(shown: dict[str, Any]) -> list[tuple[float, float]]:
    """Every coordinate pair the public outputs carry (latitude, longitude)."""
    pairs = [(lat, lon) for lat, lon in shown["json"]["route"]]
    pairs += [(p["position"][0], p["position"][1]) for p in _photos(shown["json"]) if p.get("position")]
    pairs += [(p["latitude"], p["longitude"]) for p in _photos(shown["json"]) if p.get("latitude") is not None]
    for feature in shown["geojson"]["features"]:
        geometry = feature["geometry"]
        flat = [geometry["coordinates"]] if geometry["type"] == "Point" else (
            geometry["coordinates"] if geometry["type"] == "LineString"
            else [c for line in geometry["coordinates"] for c in line])
        pairs += [(c[1], c[0]) for c in flat]
    pairs += [(float(lat), float(lon)) for lat, lon in re.findall(r'lat="([-\d.]+)" lon="([-\d.]+)"', shown["gpx"])]
    return pairs


def _zone_cli(runtime: Any, *args: str) -> str:
    result = CliRunner().invoke(cli, ["person", "zone", *args, "--data-dir", str(runtime.settings.data_dir)],
                                env={"WAYPOST_DATABASE__URL": runtime.settings.database_url})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_owners_reply_says_what_the_page_leaves_out(ann: Any) -> None:
    assert "inside your privacy zones" not in text_of(first_journey(ann))
    _zone_cli(ann, "add", ANN, str(CASTELO[0]), str(CASTELO[1]))

    again = photo_mail(subject="Lisbon again")  # a new journey of the same photos, one inside the zone
    send(ann, again)

    assert ("1 photo of this journey is inside your privacy zones: the map page leaves it out, with no line drawn "
            "there.") in text_of(answer_to(ann, again))


def test_an_operator_zone_hides_its_photos_from_every_public_output(ann: Any) -> None:
    first_journey(ann)
    token = journey_rows(ann)[0].token
    before = _public(ann, token)
    assert any(great_circle_km(*pair, *CASTELO) < 0.5 for pair in _coordinates(before))
    assert len(_photos(before["json"])) == 3 and len(before["json"]["legs"]) == 2

    assert "radius 500 m" in _zone_cli(ann, "add", "Ann+trips@example.org", str(CASTELO[0]), str(CASTELO[1]))
    assert f"{CASTELO[0]:.5f} {CASTELO[1]:.5f}  radius 500 m" in _zone_cli(ann, "list", ANN)
    after = _public(ann, token)

    assert all(great_circle_km(*pair, *CASTELO) > 0.5 for pair in _coordinates(after))
    assert len(_photos(after["json"])) == 2
    assert after["json"]["legs"] == [], "no line into, out of or across the zone"
    assert not [f for f in after["geojson"]["features"] if f["properties"]["kind"] == "leg"]
    assert after["gpx"].count("<trkseg>") == 2, "the track is cut into two segments"
    assert before["json"]["route_breaks"] == []
    assert after["json"]["route_breaks"] == [1], "the route's two remaining points are not one line"
    assert after["preview"] != before["preview"]
    hidden = {p["id"] for p in _photos(before["json"])} - {p["id"] for p in _photos(after["json"])}
    assert len(hidden) == 1 and not any(ident in after["page"] for ident in hidden)
    with TestClient(create_app(ann)) as client:
        (castle,) = [p for p in _photos(before["json"]) if p["id"] in hidden]
        assert client.get(castle["thumbnail_url"]).status_code == 404
    assert set(after["images"].values()) == {200}

    assert "removed 1 zone" in _zone_cli(ann, "remove", ANN, str(CASTELO[0]), str(CASTELO[1]))
    assert len(_photos(_public(ann, token)["json"])) == 3


def test_a_zone_that_cannot_be_is_refused_with_a_clear_error(ann: Any) -> None:
    arguments = ["person", "zone", "add", ANN, "91", "-9.2", "--data-dir", str(ann.settings.data_dir)]
    result = CliRunner().invoke(cli, arguments, env={"WAYPOST_DATABASE__URL": ann.settings.database_url})
    assert result.exit_code != 0 and "latitude 91.0" in result.output
    assert "no privacy zones" in _zone_cli(ann, "list", ANN)


def test_hide_home_with_a_photo_number_in_the_thread_hides_it_and_says_so(ann: Any) -> None:
    reply = first_journey(ann)
    token = journey_rows(ann)[0].token
    hide = command("Hide home photo 2", answering=reply)
    send(ann, hide)

    answer = answer_to(ann, hide)
    assert "Hidden from your share links" in text_of(answer)
    assert "Left out of this journey: photo 2." in text_of(answer)
    (zone,) = privacy_zones.PrivacyZones(ann.engine).list(ANN)
    assert (zone.radius_m, zone.source, zone.label) == (500.0, "mail", "home")
    assert great_circle_km(zone.latitude, zone.longitude, *CASTELO) < 0.05
    assert all(great_circle_km(*pair, *CASTELO) > 0.5 for pair in _coordinates(_public(ann, token)))


def test_hide_home_with_a_place_name_and_an_unknown_one(ann: Any) -> None:
    reply = first_journey(ann)
    token = journey_rows(ann)[0].token
    unknown = command("hide home Atlantis", answering=reply)
    send(ann, unknown)
    asked = answer_to(ann, unknown)
    assert "Which place?" in text_of(asked) and "nothing was hidden" in text_of(asked)
    assert privacy_zones.PrivacyZones(ann.engine).list(ANN) == []
    assert "Places in this journey: Lisbon, Sintra." in text_of(asked)

    hide = command("Hide home: BELEM", answering=reply)  # the photo's file name, accents and case aside
    send(ann, hide)

    hidden = answer_to(ann, hide)
    assert "Hidden from your share links" in text_of(hidden) and "photo 1." in text_of(hidden)
    shown = _public(ann, token)
    assert all(great_circle_km(*pair, *BELEM) > 0.5 for pair in _coordinates(shown))
    assert len(_photos(shown["json"])) == 2 and "Belém" not in json.dumps(shown["json"], ensure_ascii=False)

    sintra = command("hide home sintra", answering=reply)  # a place name of the journey
    send(ann, sintra)
    assert "Hidden from your share links" in text_of(answer_to(ann, sintra))
    assert len(_photos(_public(ann, token)["json"])) == 1
