"""Place names at the level a traveller uses, against the real bundled data (places.py)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from waypost.apps.journeys.places import Place, common_name, default_index

CASES = Path(__file__).parents[1] / "data" / "visitor_places.tsv"
REQUIRED_SHARE = 0.9


def fold(text: str) -> str:
    """Casefolded without accents: 'Reykjavík' and 'Reykjavik' are the same answer here."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def read_cases() -> list[tuple[str, str, float, float, set[str]]]:
    rows = [line.split("\t") for line in CASES.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    return [(country, sight, float(lat), float(lon), {fold(name) for name in names.split("|")})
            for country, sight, lat, lon, names in rows]


def test_held_out_sights_are_named_as_a_visitor_would() -> None:
    """A case counts when the name, or the city it is a part of, is one a visitor would use."""
    cases = read_cases()
    assert len({country for country, *_ in cases}) >= 5
    misses = []
    for _country, sight, latitude, longitude, accepted in cases:
        place = default_index().lookup(latitude, longitude)
        named = place is not None and (fold(place.name) in accepted or fold(place.city or "") in accepted)
        if not named:
            misses.append(f"{sight}: {place.label if place else None}")
    share = 1 - len(misses) / len(cases)
    print(f"named as a visitor would: {len(cases) - len(misses)} of {len(cases)} ({share:.0%})")
    print("\n".join(f"  miss: {miss}" for miss in misses))
    assert share >= REQUIRED_SHARE, misses


@pytest.mark.parametrize(
    ("latitude", "longitude", "label"),
    [
        # 200 m from Arashiyama's centre, 7 km from Kyoto's, 5.5 km from Mukō's (the old answer)
        pytest.param(35.0129, 135.6778, "Arashiyama, Kyoto, Japan", id="arashiyama"),
        # nearer Mukō's centre than many parts of Kyoto are to Kyoto's, but deep in Kyoto's reach
        pytest.param(34.9671, 135.7727, "Kyoto (6 km S), Japan", id="fushimi-inari"),
        pytest.param(34.7025, 135.4959, "Umeda, Osaka, Japan", id="umeda"),
        pytest.param(38.7009, -9.2297, "Algés, Lisbon, Portugal", id="alges-keeps-its-accent"),
        pytest.param(38.7075, -9.1364, "Lisbon, Portugal", id="lisbon-centre"),
    ],
)
def test_labels_name_the_part_of_the_city(latitude: float, longitude: float, label: str) -> None:
    place = default_index().lookup(latitude, longitude)
    assert place is not None and place.label == label


def test_a_day_across_kyoto_reads_as_several_places() -> None:
    sights = [(34.9858, 135.7588), (34.9671, 135.7727), (34.9949, 135.7850),
              (35.0037, 135.7788), (35.0050, 135.7649), (35.0129, 135.6778)]
    named = default_index().lookup_many(sights)
    assert all(place is not None for place in named)
    assert len({place.label for place in named if place}) >= 5
    assert {place.town for place in named if place} == {"Kyoto", "Arashiyama"}


def test_a_small_town_is_named_without_an_offset_near_its_centre() -> None:
    place = default_index().lookup(38.7975, -9.3881)  # Sintra's palace, 1 km from the town centre
    assert place == Place("Sintra", "Lisbon", "PT", "Portugal")


def test_far_from_every_town_the_nearest_one_is_named_with_the_way_there() -> None:
    place = default_index().lookup(48.6361, -1.5115)  # Mont-Saint-Michel: its village is too small for the data
    assert place is not None and place.offset is not None and place.offset.endswith(("N", "E", "S", "W"))
    assert place.offset.split()[1] == "km"


KYOTO_STATION = Place("Kyoto", "Kyoto", "JP", "Japan", offset="4 km S")
ARASHIYAMA = Place("Arashiyama", "Kyoto", "JP", "Japan")  # a town of its own in GeoNames
UMEDA = Place("Umeda", "Osaka", "JP", "Japan", city="Osaka")
OSAKA_CASTLE = Place("Osaka", "Osaka", "JP", "Japan", offset="2 km E")
LISBON = Place("Lisbon", "Lisbon", "PT", "Portugal")


@pytest.mark.parametrize(
    ("places", "name"),
    [
        ([], None),
        ([UMEDA, UMEDA], "Umeda, Osaka, Japan"),
        ([UMEDA, OSAKA_CASTLE], "Osaka, Japan"),
        ([KYOTO_STATION, ARASHIYAMA], "Japan"),
        ([KYOTO_STATION, UMEDA, LISBON], None),
    ],
)
def test_common_name_is_the_finest_level_shared(places: list[Place], name: str | None) -> None:
    assert common_name(places) == name
