"""The journey engine (build.py, geo.py, timeline zones) and the shapes the web hands out
(views.py): route, outliers, estimates, flights, stops, JSON Schema, GeoJSON, GPX."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import gpxpy
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypost.apps.journeys import geo
from waypost.apps.journeys.build import (
    ESTIMATED,
    GPS,
    OUTLIER,
    UNPLACED,
    JourneyView,
    PhotoPoint,
    RouteRules,
    build_view,
)
from waypost.apps.journeys.exif import PhotoMetadata
from waypost.apps.journeys.timeline import (
    GPS_TIME,
    LOCATION_ZONE,
    MAIL_DATE_ZONE,
    NO_TIME,
    OFFSET_TAG,
    resolve_time,
)
from waypost.web.views import journey_geojson, journey_gpx, journey_json, journey_schema, journey_validator

T0 = datetime(2024, 7, 13, 8, 0, tzinfo=UTC)
LISBON = (38.7139, -9.1394)
BELEM = (38.6916, -9.2160)  # about 7 km west of the centre
LONDON_HEATHROW = (51.4700, -0.4543)
NEW_YORK_JFK = (40.6413, -73.7781)


def photo(name: str, minutes: float | None, where: tuple[float, float] | None = None, *, offset: int = 60,
          sequence: int = 0, position: int | None = None, problem: str | None = None) -> PhotoPoint:
    return PhotoPoint(
        public_id=name, filename=f"{name}.jpg", mail_position=sequence if position is None else position,
        taken_at=None if minutes is None else T0 + timedelta(minutes=minutes),
        utc_offset_minutes=None if minutes is None else offset,
        time_source=OFFSET_TAG if minutes is not None else "none",
        latitude=where[0] if where else None, longitude=where[1] if where else None,
        problem=problem, sequence=sequence,
    )


def build(photos: list[PhotoPoint], **kwargs: Any) -> JourneyView:
    return build_view("Trip", "token-abcdefghijklmnop", T0, photos, **kwargs)


def near(base: tuple[float, float], north_m: float = 0.0, east_m: float = 0.0) -> tuple[float, float]:
    return base[0] + north_m / 111_195, base[1] + east_m / 86_900  # metres at Lisbon's latitude


def by_id(view: JourneyView) -> dict[str, Any]:
    return {p.public_id: p for p in view.photos}


# --- outliers ---------------------------------------------------------------------------------


def test_a_wild_fix_between_two_good_ones_is_left_off_the_route() -> None:
    view = build([photo("a", 0, LISBON, sequence=1), photo("wild", 10, (10.0, 10.0), sequence=2),
                  photo("b", 20, near(LISBON, 500), sequence=3)])

    photos = by_id(view)
    assert photos["wild"].placement == OUTLIER
    assert [p.public_id for p in view.route] == ["a", "b"]
    assert view.totals.distance_km == pytest.approx(0.5, abs=0.01)
    assert "too far" in photos["wild"].issue
    assert photos["wild"] in view.needs_attention


def test_a_wild_first_fix_is_left_off_but_two_disagreeing_fixes_are_both_kept() -> None:
    wild_first = build([photo("wild", 0, (-33.9, 151.2), sequence=1), photo("a", 10, LISBON, sequence=2),
                        photo("b", 20, near(LISBON, 300), sequence=3)])
    assert by_id(wild_first)["wild"].placement == OUTLIER

    # two points only: nothing says which one is wrong, so neither is dropped
    pair = build([photo("a", 0, LISBON, sequence=1), photo("b", 10, (-33.9, 151.2), sequence=2)])
    assert [p.placement for p in pair.photos] == [GPS, GPS]


def test_gps_jitter_within_the_noise_floor_is_never_an_outlier() -> None:
    # 600 m in the same second is GPS noise, not a 2,000 km/h dash
    view = build([photo("a", 0, LISBON, sequence=1), photo("b", 0, near(LISBON, 600), sequence=2),
                  photo("c", 0.01, LISBON, sequence=3)])
    assert {p.placement for p in view.photos} == {GPS}


# --- estimates -------------------------------------------------------------------------------


def test_a_photo_without_gps_is_placed_by_time_between_close_neighbours() -> None:
    east = near(LISBON, east_m=2000)
    view = build([photo("a", 0, LISBON, sequence=1), photo("mid", 5, sequence=2), photo("b", 20, east, sequence=3)])

    mid = by_id(view)["mid"]
    assert mid.placement == ESTIMATED
    assert mid.estimate_gap == timedelta(minutes=20)
    assert geo.great_circle_km(*LISBON, *mid.position) == pytest.approx(0.5, abs=0.01)  # a quarter of 2 km
    assert [p.public_id for p in view.route] == ["a", "b"]  # estimates are never part of the line
    assert "placed between" in mid.issue


@pytest.mark.parametrize(
    ("photos", "why"),
    [
        ([photo("a", 0, LISBON, sequence=1), photo("x", 45, sequence=2), photo("b", 90, BELEM, sequence=3)],
         "neighbours 90 minutes apart"),
        ([photo("a", 0, LISBON, sequence=1), photo("x", 5, sequence=2)], "no later placed photo"),
        ([photo("x", 0, sequence=1), photo("a", 5, LISBON, sequence=2)], "no earlier placed photo"),
        ([photo("a", 0, LISBON, sequence=1), photo("x", None, sequence=2), photo("b", 5, BELEM, sequence=3)],
         "no time"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_photo_without_gps_stays_unplaced_without_close_neighbours(photos: list[PhotoPoint], why: str) -> None:
    view = build(photos)

    assert by_id(view)["x"].placement == UNPLACED, why
    assert by_id(view)["x"].position is None
    assert by_id(view)["x"] in view.unplaced


def test_estimate_window_is_a_rule() -> None:
    photos = [photo("a", 0, LISBON, sequence=1), photo("x", 45, sequence=2), photo("b", 90, BELEM, sequence=3)]

    view = build(photos, rules=RouteRules(estimate_max_gap=timedelta(hours=2)))

    assert by_id(view)["x"].placement == ESTIMATED


# --- flights -----------------------------------------------------------------------------------


def test_london_to_new_york_is_a_flight_drawn_as_an_arc() -> None:
    # left Heathrow 10:00 BST, landed at JFK 13:10 EDT: 8 h 10 min later
    heathrow = photo("lhr", 9 * 60, LONDON_HEATHROW, offset=60, sequence=1)
    jfk = photo("jfk", 17 * 60 + 10, NEW_YORK_JFK, offset=-240, sequence=2)
    manhattan = photo("nyc", 18 * 60 + 30, (40.7580, -73.9855), offset=-240, sequence=3)

    view = build([jfk, manhattan, heathrow])

    assert [p.public_id for p in view.route] == ["lhr", "jfk", "nyc"]
    flight, taxi = view.legs
    assert (flight.flight, taxi.flight) == (True, False)
    assert flight.distance_km == pytest.approx(5540, rel=0.01)
    assert flight.duration == timedelta(hours=8, minutes=10)
    assert view.totals.flown_km == flight.distance_km
    data = journey_json(view)
    arc, straight = data["legs"][0]["path"], data["legs"][1]["path"]
    assert data["legs"][0]["mode"] == "flight" and len(arc) > 10 and len(straight) == 2
    # the great circle bows north of both ends (over Ireland and Newfoundland)
    assert max(lat for lat, _ in arc) > 52.0


@pytest.mark.parametrize(
    ("km", "hours", "flight"),
    [
        (300, 1.0, True),  # 300 km/h
        (300, 2.0, False),  # a fast train
        (120, 0.25, False),  # too short to bother flying
        (1500, 12.0, True),  # 125 km/h over half a day: nobody drives that
        (1500, 24.0, False),  # a long day on the road is possible
    ],
)
def test_flight_rule(km: float, hours: float, flight: bool) -> None:
    east = geo.intermediate((0.0, 0.0), (0.0, 90.0), km / geo.great_circle_km(0, 0, 0, 90))
    view = build([photo("a", 0, (0.0, 0.0), sequence=1), photo("b", hours * 60, east, sequence=2)])

    assert view.legs[0].flight is flight


# --- stops -------------------------------------------------------------------------------------


def test_stops_group_consecutive_nearby_photos_and_never_overlap() -> None:
    photos = [
        photo("l1", 0, LISBON, sequence=1),
        photo("l2", 20, near(LISBON, 100, 50), sequence=2),
        photo("l3", 50, near(LISBON, -80), sequence=3),
        photo("b1", 120, BELEM, sequence=4),
        photo("b2", 140, near(BELEM, 120), sequence=5),
        photo("l4", 240, LISBON, sequence=6),  # back in the centre: a new stop, not the first one again
        photo("l5", 240 + 4 * 60, LISBON, sequence=7),  # four hours later at the same spot: another stop
    ]

    view = build(photos)

    assert [[p.public_id for p in s.photos] for s in view.stops] == [["l1", "l2", "l3"], ["b1", "b2"], ["l4"], ["l5"]]
    first = view.stops[0]
    assert first.arrival == (T0 + timedelta(minutes=0)).astimezone(first.arrival.tzinfo)
    assert first.duration == timedelta(minutes=50)
    assert geo.great_circle_km(*first.position, *LISBON) < 0.1
    assert by_id(view)["b2"].stop == 2
    for earlier, later in zip(view.stops, view.stops[1:], strict=False):
        assert earlier.departure <= later.arrival


def test_stop_radius_is_a_rule() -> None:
    photos = [photo("l", 0, LISBON, sequence=1), photo("b", 30, BELEM, sequence=2)]

    assert len(build(photos).stops) == 2
    assert len(build(photos, rules=RouteRules(stop_radius_km=10)).stops) == 1


@dataclass(frozen=True)
class FakePlace:
    name: str
    region: str | None
    country_code: str
    country: str
    city: str | None = None
    offset: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}, {self.country}"


def test_stops_get_place_names_and_totals_count_places_and_countries() -> None:
    names = {round(LISBON[1]): FakePlace("Lisbon", "Lisbon", "PT", "Portugal"),
             round(NEW_YORK_JFK[1]): FakePlace("New York City", "New York", "US", "United States")}
    photos = [photo("a", 0, LISBON, sequence=1), photo("b", 600, NEW_YORK_JFK, offset=-240, sequence=2),
              photo("c", 700, LISBON, sequence=3)]

    view = build(photos, locate=lambda lat, lon: names.get(round(lon)))

    assert [s.label for s in view.stops] == ["Lisbon, Portugal", "New York City, United States", "Lisbon, Portugal"]
    assert view.totals.places == ("Lisbon, Portugal", "New York City, United States")
    assert view.totals.countries == ("Portugal", "United States")


def test_the_json_download_names_the_city_part_and_the_way_from_a_centre() -> None:
    places = {round(LISBON[1]): FakePlace("Alges", "Lisbon", "PT", "Portugal", city="Lisbon"),
              round(NEW_YORK_JFK[1]): FakePlace("Jamaica", "New York", "US", "United States", offset="4 km S")}
    photos = [photo("a", 0, LISBON, sequence=1), photo("b", 600, NEW_YORK_JFK, offset=-240, sequence=2)]

    data = json.loads(json.dumps(journey_json(build(photos, locate=lambda lat, lon: places.get(round(lon)))),
                                 default=str))

    jsonschema.validate(data, journey_schema())
    assert [(s["place"]["name"], s["place"]["city"], s["place"]["offset"]) for s in data["stops"]] == [
        ("Alges", "Lisbon", None), ("Jamaica", None, "4 km S")]


def test_visits_take_consecutive_stops_in_the_same_place_together() -> None:
    lisbon = FakePlace("Lisbon", "Lisbon", "PT", "Portugal")
    photos = [photo("a", 0, LISBON, sequence=1), photo("b", 60, near(LISBON, 2000), sequence=2),
              photo("c", 120, BELEM, sequence=3), photo("d", 180, LISBON, sequence=4)]
    places = {"a": lisbon, "b": lisbon, "c": FakePlace("Alges", "Lisbon", "PT", "Portugal"), "d": lisbon}
    first_photo_at = {round(p.latitude, 3): p.public_id for p in photos}

    view = build(photos, locate=lambda lat, lon: places[first_photo_at.get(round(lat, 3), "a")])

    assert len(view.stops) == 4
    assert [(v.label, len(v.stops), v.photo_count) for v in view.visits] == [
        ("Lisbon, Portugal", 2, 2), ("Alges, Portugal", 1, 1), ("Lisbon, Portugal", 1, 1)]
    assert view.visits[0].departure - view.visits[0].arrival == timedelta(minutes=60)
    # without names, nearby stops are never merged
    assert len(build(photos).visits) == 4


def test_estimated_photo_taken_during_a_stop_joins_it() -> None:
    view = build([photo("a", 0, LISBON, sequence=1), photo("x", 10, sequence=2),
                  photo("b", 20, near(LISBON, 50), sequence=3)])

    assert by_id(view)["x"].stop == 1
    assert len(view.stops[0].photos) == 3


# --- the date line and zones ------------------------------------------------------------------


def test_route_across_the_date_line() -> None:
    # Fiji (UTC+12) to Samoa (UTC+13): east across 180 degrees, same evening by the clock
    fiji = photo("fiji", 0, (-17.7134, 178.0650), offset=12 * 60, sequence=1)
    samoa = photo("samoa", 150, (-13.8333, -171.7500), offset=13 * 60, sequence=2)
    view = build([samoa, fiji])

    assert [p.public_id for p in view.route] == ["fiji", "samoa"]
    assert view.legs[0].distance_km == pytest.approx(1150, rel=0.02)  # not the 27,000 km the long way round
    route = journey_json(view)["route"]
    assert route[1][1] > 180  # unwrapped so the map draws 1,150 km, not a line round the world
    geojson = journey_geojson(view)
    leg = next(f for f in geojson["features"] if f["properties"]["kind"] == "leg")
    assert leg["geometry"]["type"] == "MultiLineString"
    for piece in leg["geometry"]["coordinates"]:
        assert all(-180 <= lon <= 180 for lon, _ in piece)
    assert view.totals.days == 1


def test_photos_days_are_counted_in_local_time() -> None:
    # 23:30 and 00:30 local on consecutive days, only an hour apart
    view = build([photo("late", 14 * 60 + 30, LISBON, sequence=1), photo("early", 15 * 60 + 30, LISBON, sequence=2)])

    assert view.totals.days == 2


LISBON_ZONE = ZoneInfo("Europe/Lisbon")


@pytest.mark.parametrize(
    ("local", "zone", "expected_utc", "offset"),
    [
        # a summer afternoon in Lisbon: WEST, UTC+1
        (datetime(2024, 7, 13, 15, 0), LISBON_ZONE, datetime(2024, 7, 13, 14, 0, tzinfo=UTC), 60),
        # a winter one: WET, UTC+0
        (datetime(2024, 1, 13, 15, 0), LISBON_ZONE, datetime(2024, 1, 13, 15, 0, tzinfo=UTC), 0),
        # 01:30 on 31 March 2024 never happened in Lisbon (01:00 -> 02:00): a camera not yet
        # set forward, read with the old offset; the local time shown stays the camera's 01:30
        (datetime(2024, 3, 31, 1, 30), LISBON_ZONE, datetime(2024, 3, 31, 1, 30, tzinfo=UTC), 0),
        # 01:30 on 27 October 2024 happened twice: the first one (WEST) is chosen
        (datetime(2024, 10, 27, 1, 30), LISBON_ZONE, datetime(2024, 10, 27, 0, 30, tzinfo=UTC), 60),
        # Kiritimati, UTC+14: the first place on Earth to see the new year
        (datetime(2025, 1, 1, 0, 5), ZoneInfo("Pacific/Kiritimati"), datetime(2024, 12, 31, 10, 5, tzinfo=UTC), 840),
    ],
)
def test_location_zone_resolves_local_times_with_dst(local: datetime, zone: ZoneInfo, expected_utc: datetime,
                                                     offset: int) -> None:
    meta = PhotoMetadata(taken_local=local, latitude=1.0, longitude=2.0)

    when = resolve_time(meta, datetime(2024, 7, 14, 8, tzinfo=UTC), zone_at=lambda lat, lon: zone)

    assert (when.utc, when.offset_minutes, when.source) == (expected_utc, offset, LOCATION_ZONE)


def test_location_zone_comes_after_offset_tag_and_gps_time_but_before_the_mail_zone() -> None:
    local = datetime(2024, 7, 13, 15, 0)
    at = {"latitude": 38.7, "longitude": -9.1}
    zone_at = lambda lat, lon: LISBON_ZONE  # noqa: E731
    mail = datetime(2024, 7, 14, 8, tzinfo=ZoneInfo("Asia/Tokyo"))

    tagged = resolve_time(PhotoMetadata(taken_local=local, utc_offset_minutes=120, **at), mail, zone_at)
    gps = resolve_time(PhotoMetadata(taken_local=local, gps_time_utc=datetime(2024, 7, 13, 13, 59, tzinfo=UTC),
                                     **at), mail, zone_at)
    no_place = resolve_time(PhotoMetadata(taken_local=local), mail, zone_at)

    assert (tagged.source, tagged.offset_minutes) == (OFFSET_TAG, 120)
    # GPS time is the instant; the place's zone gives the offset even if the camera clock is off
    assert (gps.source, gps.utc, gps.offset_minutes) == (GPS_TIME, datetime(2024, 7, 13, 13, 59, tzinfo=UTC), 60)
    assert (no_place.source, no_place.offset_minutes) == (MAIL_DATE_ZONE, 540)


@pytest.mark.parametrize(
    "meta",
    [
        PhotoMetadata(taken_local=datetime(1, 1, 1, 0, 30), utc_offset_minutes=60),
        PhotoMetadata(taken_local=datetime(9999, 12, 31, 23, 0), utc_offset_minutes=-300),
        PhotoMetadata(gps_time_utc=datetime(9999, 12, 31, 23, 0, tzinfo=UTC), latitude=35.7, longitude=139.7),
        PhotoMetadata(taken_local=datetime(1, 1, 1), latitude=38.7, longitude=-9.1),
        PhotoMetadata(taken_local=datetime(1, 1, 1)),
    ],
)
def test_times_at_the_calendar_edge_count_as_no_time(meta: PhotoMetadata) -> None:
    # a hostile photo must not fail the whole mail with an OverflowError
    when = resolve_time(meta, datetime(2024, 7, 14, 8, tzinfo=ZoneInfo("Asia/Tokyo")),
                        zone_at=lambda lat, lon: ZoneInfo("Asia/Tokyo"))

    assert when.source in (NO_TIME, GPS_TIME, OFFSET_TAG, LOCATION_ZONE, MAIL_DATE_ZONE)
    if when.utc is not None:
        assert when.local is not None  # and showing it works too


def test_a_stored_time_at_the_calendar_edge_still_builds() -> None:
    edge = PhotoPoint("edge", "e.jpg", 0, datetime(9999, 12, 31, 23, 0, tzinfo=UTC), 120, OFFSET_TAG, 1.0, 2.0,
                      None, sequence=1)

    view = build([edge])

    assert view.start == edge.taken_at  # shown in UTC rather than failing


# --- geometry ---------------------------------------------------------------------------------


def test_intermediate_and_centre() -> None:
    assert geo.intermediate((0.0, 0.0), (0.0, 90.0), 0.5) == pytest.approx((0.0, 45.0))
    assert geo.intermediate((10.0, 20.0), (10.0, 20.0), 0.3) == (10.0, 20.0)
    assert geo.centre([(0.0, 179.0), (0.0, -179.0)])[1] == pytest.approx(180.0, abs=1e-6) or \
        geo.centre([(0.0, 179.0), (0.0, -179.0)])[1] == pytest.approx(-180.0, abs=1e-6)
    with pytest.raises(ValueError):
        geo.centre([])


def test_split_at_antimeridian_both_ways() -> None:
    east = geo.split_at_antimeridian([(0.0, 179.0), (2.0, 181.0)])
    west = geo.split_at_antimeridian([(0.0, -179.0), (2.0, -181.0)])

    assert east == [[(0.0, 179.0), (1.0, 180.0)], [(1.0, -180.0), (2.0, -179.0)]]
    assert west == [[(0.0, -179.0), (1.0, -180.0)], [(1.0, 180.0), (2.0, 179.0)]]
    assert geo.split_at_antimeridian([(0.0, 1.0), (1.0, 2.0)]) == [[(0.0, 1.0), (1.0, 2.0)]]


# --- outputs ----------------------------------------------------------------------------------


def sample_view() -> JourneyView:
    return build([
        photo("lhr", 0, LONDON_HEATHROW, sequence=1),
        photo("jfk", 8 * 60, NEW_YORK_JFK, offset=-240, sequence=2),
        photo("lost", 8 * 60 + 5, sequence=3, problem="no location: the camera did not record one"),
        photo("nyc", 8 * 60 + 15, (40.7580, -73.9855), offset=-240, sequence=4),
        photo("untimed", None, sequence=5, problem="no location: x; no time: y"),
        photo("wild", 9 * 60, (-33.9, 151.2), offset=-240, sequence=6),
        photo("park", 9 * 60 + 30, (40.7829, -73.9654), offset=-240, sequence=7),
    ])


def test_journey_json_follows_its_schema() -> None:
    data = journey_json(sample_view())

    jsonschema.Draft202012Validator.check_schema(journey_schema())
    jsonschema.validate(json.loads(json.dumps(data)), journey_schema())
    assert data["schema_version"] == "1"
    assert {p["id"]: p["placement"] for p in data["photos"]} == {
        "lhr": GPS, "jfk": GPS, "lost": ESTIMATED, "nyc": GPS, "untimed": UNPLACED, "wild": OUTLIER, "park": GPS}


def test_schema_rejects_what_it_should() -> None:
    data = journey_json(sample_view())
    broken = json.loads(json.dumps(data))
    broken["photos"][0]["placement"] = "teleported"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, journey_schema())
    unplaced_with_position = json.loads(json.dumps(data))
    target = next(p for p in unplaced_with_position["photos"] if p["placement"] == UNPLACED)
    target["position"] = [1.0, 2.0]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(unplaced_with_position, journey_schema())


def test_geojson_is_rfc7946_shaped() -> None:
    data = journey_geojson(sample_view())

    assert data["type"] == "FeatureCollection"
    kinds = [f["properties"]["kind"] for f in data["features"]]
    assert kinds.count("leg") == 3 and kinds.count("photo") == 6 and kinds.count("stop") >= 3
    lhr = next(f for f in data["features"] if f["properties"].get("id") == "lhr")
    assert lhr["geometry"]["coordinates"][:2] == [round(LONDON_HEATHROW[1], 6), round(LONDON_HEATHROW[0], 6)]
    for feature in data["features"]:
        geometry = feature["geometry"]
        points = ([geometry["coordinates"]] if geometry["type"] == "Point"
                  else geometry["coordinates"] if geometry["type"] == "LineString"
                  else [c for piece in geometry["coordinates"] for c in piece])
        assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat, *_ in points)


def test_gpx_is_valid_1_1_and_round_trips() -> None:
    view = sample_view()
    text = journey_gpx(view)

    root = ET.fromstring(text)
    assert root.tag == "{http://www.topografix.com/GPX/1/1}gpx" and root.attrib["version"] == "1.1"
    parsed = gpxpy.parse(text)
    points = parsed.tracks[0].segments[0].points
    assert [(round(p.latitude, 4), round(p.longitude, 4)) for p in points] == [
        (round(p.latitude, 4), round(p.longitude, 4)) for p in view.route]
    assert points[0].time == view.route[0].taken_at
    assert len(parsed.waypoints) == len(view.stops)


def test_gpx_escapes_hostile_titles_and_names() -> None:
    hostile = "<script>alert(1)</script> & ]]> \"quotes\""
    view = build_view(hostile, "token-abcdefghijklmnop", T0, [
        PhotoPoint("p1", "<img src=x onerror=alert(1)>.jpg", 0, T0, 0, OFFSET_TAG, 1.0, 2.0, None, sequence=1)])

    text = journey_gpx(view)

    assert ET.fromstring(text).tag.endswith("gpx")  # well-formed despite the markup in the data
    assert "<script>" not in text and "<img" not in text
    assert gpxpy.parse(text).name == hostile


def test_gpx_drops_control_characters_xml_cannot_carry() -> None:
    view = build_view("a\x01b\x1fc", "token-abcdefghijklmnop", T0, [
        PhotoPoint("p1", "f\x02.jpg", 0, T0, 0, OFFSET_TAG, 1.0, 2.0, None, sequence=1)])

    text = journey_gpx(view)

    assert ET.fromstring(text) is not None
    assert gpxpy.parse(text).name == "abc"


# --- properties -------------------------------------------------------------------------------

coordinates = st.tuples(st.floats(-80, 80), st.floats(-179.9, 179.9))
photo_specs = st.lists(
    st.tuples(st.one_of(st.none(), st.floats(0, 72 * 60)),
              st.one_of(st.none(), coordinates, st.sampled_from([LISBON, BELEM, near(LISBON, 100)]))),
    max_size=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(photo_specs)
def test_engine_invariants(specs: list[tuple[float | None, tuple[float, float] | None]]) -> None:
    photos = [photo(f"p{i}", minutes, where, sequence=i) for i, (minutes, where) in enumerate(specs)]

    view = build(photos)

    # every photo appears once
    assert sorted(p.public_id for p in view.photos) == sorted(p.public_id for p in photos)
    # the route is in time order
    times = [p.taken_at for p in view.route]
    assert times == sorted(times)
    # every photo is on the route, estimated, or listed for the owner's attention
    for p in view.photos:
        assert p.on_route or p.placement == ESTIMATED or p in view.needs_attention
        assert (p.position is None) == (p.placement == UNPLACED)
    # stops never overlap, in time or in membership
    members = [p.public_id for s in view.stops for p in s.photos]
    assert len(members) == len(set(members))
    for earlier, later in zip(view.stops, view.stops[1:], strict=False):
        assert earlier.departure <= later.arrival
    # totals agree with the photos
    assert view.totals.photos == len(photos)
    assert view.totals.on_map + view.totals.unplaced == len(photos)
    assert view.totals.distance_km == pytest.approx(sum(leg.distance_km for leg in view.legs), abs=0.01)
    journey_validator().validate(json.loads(json.dumps(journey_json(view))))
