"""Place names (places.py) and time zones (zones.py), against the real bundled data."""

from __future__ import annotations

import csv
import io
import logging
import lzma
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waypost.apps.journeys import places
from waypost.apps.journeys.places import (
    CACHE_FILE,
    MAX_DISTANCE_KM,
    Place,
    PlaceIndex,
    bundled_source,
    check_coordinates,
    country_name,
    default_index,
)
from waypost.apps.journeys.zones import localize, zone_at

T = TypeVar("T")
LISBON = Place("Lisbon", "Lisbon", "PT", "Portugal")
SINTRA = Place("Sintra", "Lisbon", "PT", "Portugal")
TOKYO = Place("Tokyo", "Tokyo", "JP", "Japan", offset="7 km E")  # GeoNames puts Tokyo's centre in Shinjuku
LABASA = Place("Labasa", None, "FJ", "Fiji", offset="82 km SE")
LONGYEARBYEN = Place("Longyearbyen", "Svalbard", "SJ", "Svalbard and Jan Mayen")
MCMURDO = Place("McMurdo Station", None, "AQ", "Antarctica")


def all_at_once(task: Callable[[int], T], threads: int = 16) -> list[T]:
    """Run ``task(i)`` on ``threads`` threads released together by a barrier; re-raise the first failure."""
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = task(i)
        except BaseException as err:  # handed back to the main thread below
            results[i] = err

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


# --- places: lookups --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latitude", "longitude", "expected"),
    [
        pytest.param(38.7223, -9.1393, LISBON, id="lisbon"),
        pytest.param(38.7975, -9.3881, SINTRA, id="sintra-palace"),
        pytest.param(35.6812, 139.7671, TOKYO, id="tokyo-station"),
        # Taveuni lies on the antimeridian; Labasa, 81 km away, is on the other side of it
        pytest.param(-16.80, -179.97, LABASA, id="taveuni-east-of-180"),
        pytest.param(-16.85, 179.99, replace(LABASA, offset="81 km SE"), id="taveuni-west-of-180"),
        pytest.param(78.2232, 15.6267, LONGYEARBYEN, id="longyearbyen"),
        pytest.param(-77.85, 166.67, MCMURDO, id="mcmurdo"),
        pytest.param(30.0, -40.0, None, id="mid-atlantic"),
        pytest.param(-48.88, -123.39, None, id="point-nemo"),
        pytest.param(90.0, 0.0, None, id="north-pole"),
        pytest.param(-90.0, 0.0, None, id="south-pole"),
    ],
)
def test_lookup_names_the_place_around(latitude: float, longitude: float, expected: Place | None) -> None:
    assert default_index().lookup(latitude, longitude) == expected


@pytest.mark.parametrize(
    ("latitude", "longitude", "max_distance_km", "expected"),
    [
        # at a pole every longitude is the same point: the answer must not depend on it
        (90.0, 0.0, 2000, LONGYEARBYEN),
        (90.0, 180.0, 2000, LONGYEARBYEN),
        (90.0, -97.0, 2000, LONGYEARBYEN),
        (-90.0, 45.0, 2000, MCMURDO),
        # the limit is the great-circle distance: the pole is 1,310 km from Longyearbyen
        (90.0, 0.0, 1300, None),
        (90.0, 0.0, 1320, LONGYEARBYEN),
        # Labasa is 81 km from this point on Taveuni
        (-16.80, -179.97, 80, None),
        (-16.80, -179.97, 82, LABASA),
    ],
)
def test_the_distance_limit_is_great_circle_km(
    latitude: float, longitude: float, max_distance_km: float, expected: Place | None
) -> None:
    place = default_index().lookup(latitude, longitude, max_distance_km=max_distance_km)
    assert (place.name if place else None) == (expected.name if expected else None)


def test_lookup_many_keeps_order_and_gaps() -> None:
    points = [(38.7223, -9.1393), (30.0, -40.0), (35.6812, 139.7671), (38.7975, -9.3881)]
    assert default_index().lookup_many(points) == [LISBON, None, TOKYO, SINTRA]
    assert default_index().lookup_many(iter(points[:1])) == [LISBON]
    assert default_index().lookup_many([]) == []


@pytest.mark.parametrize(
    ("latitude", "longitude", "axis"),
    [
        (float("nan"), 0.0, "latitude"),
        (0.0, float("nan"), "longitude"),
        (float("inf"), 0.0, "latitude"),
        (0.0, float("-inf"), "longitude"),
        (90.0001, 0.0, "latitude"),
        (-91, 0.0, "latitude"),
        (0.0, 180.5, "longitude"),
        (0.0, -181, "longitude"),
    ],
)
def test_invalid_coordinates_are_refused(latitude: float, longitude: float, axis: str) -> None:
    with pytest.raises(ValueError, match=f"^{axis} .* is not a coordinate"):
        default_index().lookup(latitude, longitude)
    with pytest.raises(ValueError, match=axis):
        default_index().lookup_many([(38.7, -9.1), (latitude, longitude)])
    with pytest.raises(ValueError, match=axis):
        zone_at(latitude, longitude)


@pytest.mark.parametrize("value", ["38.7", None, True])
def test_non_numbers_are_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="latitude must be a number"):
        check_coordinates(value, 0.0)


def test_edges_of_the_range_are_coordinates() -> None:
    assert check_coordinates(-90, 180) == (-90.0, 180.0)
    assert check_coordinates(np.float32(45.5), np.int64(-180)) == (45.5, -180.0)


@pytest.mark.parametrize("limit", [0.0, -5.0, float("nan")])
def test_max_distance_must_be_positive(limit: float) -> None:
    with pytest.raises(ValueError, match="max_distance_km"):
        default_index().lookup(38.7, -9.1, max_distance_km=limit)


def test_an_unlimited_distance_always_finds_a_place() -> None:
    assert default_index().lookup(-48.88, -123.39, max_distance_km=float("inf")) is not None


# --- places: labels and countries -------------------------------------------------------


@pytest.mark.parametrize(
    ("place", "label"),
    [
        (LISBON, "Lisbon, Portugal"),
        (SINTRA, "Sintra, Lisbon, Portugal"),
        (MCMURDO, "McMurdo Station, Antarctica"),
        (Place("Singapore", None, "SG", "Singapore"), "Singapore"),
        (Place("Monaco", "Commune de Monaco", "MC", "Monaco"), "Monaco, Commune de Monaco"),
        (Place("Luxembourg", "LUXEMBOURG", "LU", "Luxembourg"), "Luxembourg"),
        (Place("Lisbon", "Ohio", "US", "United States"), "Lisbon, Ohio, United States"),
        (Place("Somewhere", "", "ZZ", "ZZ"), "Somewhere, ZZ"),
    ],
)
def test_label_leaves_out_repeats(place: Place, label: str) -> None:
    assert place.label == label


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("PT", "Portugal"),
        ("pt", "Portugal"),
        ("GB", "United Kingdom"),
        ("CI", "Côte d'Ivoire"),
        ("XK", "Kosovo"),
        ("ZZ", "ZZ"),
        ("", ""),
    ],
)
def test_country_names(code: str, name: str) -> None:
    assert country_name(code) == name


def test_every_country_in_the_data_has_a_name() -> None:
    codes = {row["country"] for row in bundled_rows()}
    assert {code for code in codes if country_name(code) == code} == set()


# --- places: threads, loading, cache ----------------------------------------------------

THREAD_POINTS = [
    ((38.7223, -9.1393), LISBON),
    ((35.6812, 139.7671), TOKYO),
    ((-16.80, -179.97), LABASA),
    ((78.2232, 15.6267), LONGYEARBYEN),
    ((30.0, -40.0), None),
    ((38.7975, -9.3881), SINTRA),
]


def test_threads_racing_the_first_lookup_load_once_and_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Path] = []
    real_read = places.read_source

    def counting_read(source: Path) -> dict[str, np.ndarray]:
        loads.append(source)
        return real_read(source)

    monkeypatch.setattr(places, "read_source", counting_read)
    index = PlaceIndex()

    def task(i: int) -> list[Place | None]:
        rotated = THREAD_POINTS[i % 6 :] + THREAD_POINTS[: i % 6]
        return [index.lookup(*point) for point, _ in rotated * 20]

    results = all_at_once(task)
    assert len(loads) == 1
    for i, result in enumerate(results):
        rotated = THREAD_POINTS[i % 6 :] + THREAD_POINTS[: i % 6]
        assert result == [expected for _, expected in rotated * 20]


def bundled_rows() -> list[dict[str, str]]:
    with lzma.open(bundled_source(), "rt", encoding="utf-8", newline="") as rows:
        return list(csv.DictReader(rows, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))


def write_source(path: Path, *rows: str) -> Path:
    """A places file of ``rows``, each 'name,latitude,longitude,region,country' (PPL, 5,000 people)."""
    lines = []
    for row in rows:
        name, lat, lon, region, code = row.split(",")
        lines.append("\t".join([name, lat, lon, "PPL", code, region, "5000"]) + "\n")
    path.write_text("\t".join(places.SOURCE_COLUMNS) + "\n" + "".join(lines), encoding="utf-8")
    return path


LISBON_ROW = "Lisbon,38.71667,-9.13333,Lisbon,PT"


def test_a_source_with_other_columns_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "cities.csv"
    source.write_text("lat,lng,city\n38.7,-9.1,Lisbon\n", encoding="utf-8")
    with pytest.raises(ValueError, match="columns"):
        PlaceIndex(source).lookup(38.7, -9.1)


@pytest.mark.parametrize("row", ["Lisbon\t38.7\t-9.1\tPPL\tPT", "Lisbon\tnorth\t-9.1\tPPL\tPT\tLisbon\t5"])
def test_a_broken_row_is_refused_with_its_line(tmp_path: Path, row: str) -> None:
    source = tmp_path / "places.tsv"
    source.write_text("\t".join(places.SOURCE_COLUMNS) + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 is not a place row"):
        PlaceIndex(source).lookup(38.7, -9.1)


def test_a_source_without_rows_names_nothing(tmp_path: Path) -> None:
    assert PlaceIndex(write_source(tmp_path / "places.tsv")).lookup(38.7, -9.1) is None


def test_an_xz_source_is_read(tmp_path: Path) -> None:
    plain = write_source(tmp_path / "places.tsv", "Algés,38.70245,-9.22936,Lisbon,PT")
    packed = tmp_path / "places.tsv.xz"
    packed.write_bytes(lzma.compress(plain.read_bytes()))
    assert PlaceIndex(packed).lookup(38.7025, -9.2294) == Place("Algés", "Lisbon", "PT", "Portugal")


def test_a_missing_source_is_reported_at_first_lookup(tmp_path: Path) -> None:
    index = PlaceIndex(tmp_path / "absent.csv")
    with pytest.raises(FileNotFoundError):
        index.lookup(38.7, -9.1)


def test_names_with_commas_and_missing_regions_and_populations_are_read(tmp_path: Path) -> None:
    source = tmp_path / "places.tsv"
    source.write_text("\t".join(places.SOURCE_COLUMNS) + "\n"
                      "Rüti, Dorfzentrum\t47.25\t8.85\tPPLX\tCH\tZurich\t\n"
                      "Singapore\t1.29\t103.85\tPPLC\tSG\t\t5638700\n", encoding="utf-8")
    assert PlaceIndex(source).lookup_many([(47.25, 8.85), (1.29, 103.85)]) == [
        Place("Rüti, Dorfzentrum", "Zurich", "CH", "Switzerland"),
        Place("Singapore", None, "SG", "Singapore"),
    ]


def test_the_cache_is_used_when_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_source(tmp_path / "cities.csv", LISBON_ROW)
    assert PlaceIndex(source, cache_dir=tmp_path / "cache").lookup(38.72, -9.14) == LISBON
    assert sorted(os.listdir(tmp_path / "cache")) == [CACHE_FILE]  # no temporary file left behind

    def no_reading(source: Path) -> dict[str, np.ndarray]:
        raise AssertionError("the source was read although the cache is fresh")

    monkeypatch.setattr(places, "read_source", no_reading)
    assert PlaceIndex(source, cache_dir=tmp_path / "cache").lookup(38.72, -9.14) == LISBON


@pytest.mark.parametrize(
    "replacement",
    [
        pytest.param("Lisboa,38.71667,-9.13333,Lisbon,PT", id="size-changed"),
        pytest.param("Lisbin,38.71667,-9.13333,Lisbon,PT", id="same-size-mtime-changed"),
    ],
)
def test_a_stale_cache_is_rebuilt(tmp_path: Path, replacement: str) -> None:
    source = write_source(tmp_path / "cities.csv", LISBON_ROW)
    PlaceIndex(source, cache_dir=tmp_path).lookup(38.72, -9.14)
    before = source.stat().st_mtime_ns
    write_source(source, replacement)
    os.utime(source, ns=(before + 10**9, before + 10**9))
    new_name = replacement.split(",")[0]
    assert PlaceIndex(source, cache_dir=tmp_path).lookup(38.72, -9.14) == Place(new_name, "Lisbon", "PT", "Portugal")
    assert PlaceIndex(source, cache_dir=tmp_path).lookup(38.72, -9.14) == Place(new_name, "Lisbon", "PT", "Portugal")


def npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "damage",
    [b"", b"not a zip file", b"PK\x03\x04 truncated", npy_bytes()],
    ids=["empty", "garbage", "truncated-zip", "npy-not-npz"],
)
def test_a_damaged_cache_is_rebuilt(tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture) -> None:
    source = write_source(tmp_path / "cities.csv", LISBON_ROW)
    (tmp_path / CACHE_FILE).write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger=places.__name__):
        assert PlaceIndex(source, cache_dir=tmp_path).lookup(38.72, -9.14) == LISBON
    assert "rebuilding" in caplog.text
    with np.load(tmp_path / CACHE_FILE) as rebuilt:
        assert "key" in rebuilt.files


def test_an_unwritable_cache_is_lived_without(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = write_source(tmp_path / "cities.csv", LISBON_ROW)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger=places.__name__):
        assert PlaceIndex(source, cache_dir=blocker).lookup(38.72, -9.14) == LISBON
    assert "could not write" in caplog.text


def test_cached_bundled_index_answers_like_the_source(tmp_path: Path) -> None:
    points = [point for point, _ in THREAD_POINTS] + [(51.5, -0.12), (-33.87, 151.21), (64.14, -21.94)]
    expected = PlaceIndex().lookup_many(points)
    PlaceIndex(cache_dir=tmp_path).lookup(0.0, 0.0)  # builds the cache
    assert PlaceIndex(cache_dir=tmp_path).lookup_many(points) == expected


# --- places: property against a brute-force search ---------------------------------------


class BruteForce:
    """Every row of the bundled file, scored exhaustively with the haversine formula and the
    module's rule: the deepest inside by distance over reach, or the nearest when in none."""

    def __init__(self) -> None:
        table = bundled_rows()
        self.lat = np.radians([float(row["latitude"]) for row in table])
        self.lon = np.radians([float(row["longitude"]) for row in table])
        self.reach = places._reach_km(np.array([int(row["population"]) for row in table], dtype=np.int64))
        self.keys = [(row["name"], row["region"] or None, row["country"]) for row in table]

    def distances_km(self, latitude: float, longitude: float) -> np.ndarray:
        phi, lmb = np.radians(latitude), np.radians(longitude)
        h = np.sin((self.lat - phi) / 2) ** 2 + np.cos(phi) * np.cos(self.lat) * np.sin((self.lon - lmb) / 2) ** 2
        return 2 * places.EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))


@pytest.fixture(scope="module")
def brute_force() -> BruteForce:
    return BruteForce()


@settings(max_examples=150, deadline=None)
@given(
    latitude=st.floats(-90, 90),
    longitude=st.floats(-180, 180),
    max_distance_km=st.sampled_from([MAX_DISTANCE_KM, 5.0, 700.0, 2500.0]),
)
def test_lookup_agrees_with_brute_force(
    brute_force: BruteForce, latitude: float, longitude: float, max_distance_km: float
) -> None:
    place = default_index().lookup(latitude, longitude, max_distance_km=max_distance_km)
    distances = brute_force.distances_km(latitude, longitude)
    tolerance = 1e-6  # km; the tree and the haversine formula round differently
    within = distances <= max_distance_km + tolerance
    if place is None:
        assert not within[distances < max_distance_km - tolerance].any()
        return
    depths = np.where(within, distances / brute_force.reach, np.inf)
    scores = depths if depths.min() <= places.OUTSIDE else np.where(within, distances, np.inf)
    key = (place.town, place.region, place.country_code)
    found = min(s for s, row_key in zip(scores, brute_force.keys, strict=True) if row_key == key)
    assert found <= scores.min() * (1 + 1e-6) + tolerance  # the best place, or one tied with it


# --- zones ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latitude", "longitude", "zone", "july_offset"),
    [
        pytest.param(38.7223, -9.1393, "Europe/Lisbon", 60, id="lisbon"),
        pytest.param(40.7128, -74.0060, "America/New_York", -240, id="new-york"),
        pytest.param(1.87, -157.40, "Pacific/Kiritimati", 14 * 60, id="kiritimati"),
        pytest.param(-16.80, -179.97, "Pacific/Fiji", 12 * 60, id="taveuni-east-of-180"),
        pytest.param(-16.85, 179.99, "Pacific/Fiji", 12 * 60, id="taveuni-west-of-180"),
        pytest.param(-13.83, -171.76, "Pacific/Apia", 13 * 60, id="apia"),
        pytest.param(-31.55, 159.08, "Australia/Lord_Howe", 10 * 60 + 30, id="lord-howe"),
        pytest.param(78.2232, 15.6267, "Arctic/Longyearbyen", 120, id="longyearbyen"),
        pytest.param(-77.85, 166.67, "Antarctica/McMurdo", 12 * 60, id="mcmurdo"),
        # at sea, the nautical zones; their names carry the inverted POSIX sign
        pytest.param(30.0, -40.0, "Etc/GMT+3", -180, id="mid-atlantic"),
        pytest.param(-48.88, -123.39, "Etc/GMT+8", -480, id="point-nemo"),
    ],
)
def test_zone_at(latitude: float, longitude: float, zone: str, july_offset: int) -> None:
    found = zone_at(latitude, longitude)
    assert found == ZoneInfo(zone)
    assert localize(datetime(2024, 7, 1, 12), found)[1] == july_offset


def test_zone_lookups_from_many_threads_agree() -> None:
    points = [
        ((38.7223, -9.1393), "Europe/Lisbon"),
        ((40.7128, -74.0060), "America/New_York"),
        ((1.87, -157.40), "Pacific/Kiritimati"),
        ((-16.80, -179.97), "Pacific/Fiji"),
        ((30.0, -40.0), "Etc/GMT+3"),
    ]

    def task(i: int) -> list[str | None]:
        return [str(zone_at(*point)) for point, _ in points * 40]

    for result in all_at_once(task):
        assert result == [name for _, name in points * 40]


def at(*parts: int) -> datetime:
    return datetime(*parts)  # naive: a wall-clock reading, or the UTC one expected


@pytest.mark.parametrize(
    ("zone", "local", "utc", "offset"),
    [
        pytest.param("Europe/Lisbon", at(2024, 7, 13, 14, 35), at(2024, 7, 13, 13, 35), 60, id="lisbon-summer"),
        pytest.param("Europe/Lisbon", at(2024, 1, 13, 14, 35), at(2024, 1, 13, 14, 35), 0, id="lisbon-winter"),
        # gaps (spring forward): the reading never shows on a clock; the offset before the change applies
        pytest.param("Europe/Lisbon", at(2024, 3, 31, 1, 30), at(2024, 3, 31, 1, 30), 0, id="lisbon-gap"),
        pytest.param("America/New_York", at(2024, 3, 10, 2, 30), at(2024, 3, 10, 7, 30), -300, id="ny-gap"),
        pytest.param("Australia/Lord_Howe", at(2024, 10, 6, 2, 15), at(2024, 10, 5, 15, 45), 630, id="lh-30min-gap"),
        # folds (fall back): the reading shows twice; the first, still on summer time, is taken
        pytest.param("Europe/Lisbon", at(2024, 10, 27, 1, 30), at(2024, 10, 27, 0, 30), 60, id="lisbon-fold"),
        pytest.param("America/New_York", at(2024, 11, 3, 1, 30), at(2024, 11, 3, 5, 30), -240, id="ny-fold"),
        pytest.param("Australia/Lord_Howe", at(2024, 4, 7, 1, 45), at(2024, 4, 6, 14, 45), 660, id="lh-30min-fold"),
        # Samoa skipped 30 Dec 2011 moving across the date line (-10 to +14): a 24-hour gap
        pytest.param("Pacific/Apia", at(2011, 12, 29, 23), at(2011, 12, 30, 9), -600, id="apia-before"),
        pytest.param("Pacific/Apia", at(2011, 12, 30, 12), at(2011, 12, 30, 22), -600, id="apia-skipped-day"),
        pytest.param("Pacific/Apia", at(2011, 12, 31, 1), at(2011, 12, 30, 11), 840, id="apia-after"),
        # Kiribati's Line Islands did the same on 31 Dec 1994
        pytest.param("Pacific/Kiritimati", at(1994, 12, 31, 12), at(1994, 12, 31, 22), -600, id="kiritimati-skipped"),
        pytest.param("Pacific/Kiritimati", at(1995, 1, 1, 12), at(1994, 12, 31, 22), 840, id="kiritimati-after"),
        pytest.param("Etc/GMT-14", at(2024, 1, 1), at(2023, 12, 31, 10), 840, id="utc-plus-14"),
    ],
)
def test_localize(zone: str, local: datetime, utc: datetime, offset: int) -> None:
    instant, minutes = localize(local, ZoneInfo(zone))
    assert (instant, minutes) == (utc.replace(tzinfo=UTC), offset)
    assert instant.tzinfo is UTC
    # the pair gives back the camera's reading, whatever the edge case
    assert (instant.replace(tzinfo=None) - local).total_seconds() == -minutes * 60
    assert localize(local.replace(fold=1), ZoneInfo(zone)) == (instant, minutes)  # fold=1 is not honoured


def test_localize_refuses_an_aware_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        localize(datetime(2024, 7, 13, 14, 35, tzinfo=UTC), ZoneInfo("Europe/Lisbon"))


def test_localize_rounds_local_mean_time_to_minutes() -> None:
    # Lisbon kept its mean solar time, -0:36:45, until 1912; the instant stays exact
    instant, minutes = localize(datetime(1900, 1, 1, 12, 0), ZoneInfo("Europe/Lisbon"))
    assert (instant, minutes) == (datetime(1900, 1, 1, 12, 36, 45, tzinfo=UTC), -37)
