"""The journey as people read it (story.py): one numbering of stops, times without repeated
offsets, the timeline by day and stop, what an update changed; and the reply's subject."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from PIL import Image, ImageChops

from waypost.apps.journeys.build import JourneyView, PhotoPoint, build_view
from waypost.apps.journeys.preview import mail_picture, preview_png
from waypost.apps.journeys.sketch import route_sketch
from waypost.apps.journeys.story import (
    changes,
    clock_times,
    cover_photo,
    route_alt,
    stop_lines,
    stop_numbers,
    story_stops,
    timeline_days,
)
from waypost.outbound.compose import reply_subject

KYOTO = timezone(timedelta(hours=9))
# a day in Kyoto, two photos at most places; Gion twice with Nishiki between (three stops, two places)
DAY = (
    (34.9858, 135.7588, 8, 10, "Kyoto Station"), (34.9860, 135.7590, 8, 20, "Kyoto Station"),
    (34.9671, 135.7727, 9, 30, "Fushimi Inari"), (34.9672, 135.7728, 9, 50, "Fushimi Inari"),
    (35.0037, 135.7788, 14, 5, "Gion"), (35.0050, 135.7649, 15, 20, "Nishiki"),
    (35.0038, 135.7789, 16, 5, "Gion"), (35.0039, 135.7790, 16, 15, "Gion"),
    (35.0094, 135.6668, 17, 40, "Arashiyama"),
)


@dataclass(frozen=True)
class Named:
    name: str
    region: str | None = None
    country_code: str = "JP"
    country: str = "Japan"
    city: str | None = None
    offset: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}, Kyoto, Japan"


def locate(latitude: float, longitude: float) -> Named:
    """Names by the nearest sight of DAY, as a finer place index would."""
    nearest = min(DAY, key=lambda row: (row[0] - latitude) ** 2 + (row[1] - longitude) ** 2)
    return Named(nearest[4])


def day_in_kyoto(rows: tuple = DAY, *, first_sequence: int = 1, offsets: dict[int, int] | None = None,
                 earlier: list[PhotoPoint] | None = None) -> JourneyView:
    points = list(earlier or [])
    for index, (lat, lon, hour, minute, _) in enumerate(rows):
        offset = (offsets or {}).get(index, 540)
        local = datetime(2024, 4, 6, hour, minute, tzinfo=timezone(timedelta(minutes=offset)))
        points.append(PhotoPoint(public_id=f"p{first_sequence + index}", filename=f"IMG_{index}.jpg",
                                 mail_position=index, taken_at=local.astimezone(UTC), utc_offset_minutes=offset,
                                 time_source="offset-tag", latitude=lat, longitude=lon, problem=None,
                                 sequence=first_sequence + index))
    return build_view("A day in Kyoto", "token", datetime(2024, 4, 7, tzinfo=UTC), points, locate=locate)


def test_stops_are_numbered_one_by_one_in_time_order_whatever_the_engine_numbers() -> None:
    view = day_in_kyoto()
    stops = story_stops(view)
    assert [(s.number, s.name) for s in stops] == [
        (1, "Kyoto Station"), (2, "Fushimi Inari"), (3, "Gion"), (4, "Nishiki"), (5, "Gion"), (6, "Arashiyama")]
    assert [s.photo_count for s in stops] == [2, 2, 1, 1, 2, 1]
    numbers = stop_numbers(view)
    assert sorted(set(numbers.values())) == [1, 2, 3, 4, 5, 6]
    # the sketch (and so the preview picture) carries the same numbers and places
    sketch = route_sketch(view)
    assert sketch is not None and [(m.number, m.place) for m in sketch.stops] == [(s.number, s.name) for s in stops]


def test_visits_of_several_engine_stops_take_one_number() -> None:
    # two stops a kilometre apart and an hour apart, in the same named place: one card, one number
    rows = ((34.9858, 135.7588, 8, 10, "Kyoto Station"), (34.9960, 135.7588, 10, 30, "Kyoto Station"),
            (34.9671, 135.7727, 12, 0, "Fushimi Inari"))

    def station_then_shrine(latitude: float, longitude: float) -> Named:
        return Named("Kyoto Station" if latitude > 34.98 else "Fushimi Inari")

    points = day_in_kyoto(rows).photos
    view = build_view("t", "token", datetime(2024, 4, 7, tzinfo=UTC), [p.point for p in points],
                      locate=station_then_shrine)
    assert len(view.stops) == 3
    assert [(s.number, s.name, s.photo_count) for s in story_stops(view)] == [
        (1, "Kyoto Station", 2), (2, "Fushimi Inari", 1)]
    assert stop_numbers(view) == {1: 1, 2: 1, 3: 2}


def test_times_carry_no_offset_in_one_zone_and_say_it_where_it_changes() -> None:
    one = day_in_kyoto()
    assert [line.when for line in stop_lines(one)][:3] == ["Sat 6 Apr 2024, 08:10 to 08:20", "09:30 to 09:50", "14:05"]
    assert "UTC" not in " ".join(photo.clock for day in timeline_days(one) for c in day.chapters for photo in c.photos)

    taipei = timezone(timedelta(hours=8))
    moments = [datetime(2024, 4, 6, 8, 10, tzinfo=taipei), datetime(2024, 4, 6, 11, 0, tzinfo=KYOTO),
               datetime(2024, 4, 6, 12, 0, tzinfo=KYOTO), None]
    assert clock_times(moments, with_zones=True) == ["08:10 (UTC+08:00)", "11:00 (UTC+09:00)", "12:00", "time unknown"]
    assert clock_times(moments, with_zones=False) == ["08:10", "11:00", "12:00", "time unknown"]
    shifted = day_in_kyoto(offsets={8: 480})  # the last photo in another offset
    clocks = [p.clock for day in timeline_days(shifted) for c in day.chapters for p in c.photos]
    assert clocks[0] == "08:10 (UTC+09:00)" and clocks[1] == "08:20" and clocks[-1] == "17:40 (UTC+08:00)"


def test_the_timeline_tells_each_day_stop_by_stop() -> None:
    (day,) = timeline_days(day_in_kyoto())
    assert day.heading == "Sat 6 Apr 2024"
    assert [(c.number, c.place, len(c.photos), c.first_of_stop) for c in day.chapters] == [
        (1, "Kyoto Station", 2, True), (2, "Fushimi Inari", 2, True), (3, "Gion", 1, True), (4, "Nishiki", 1, True),
        (5, "Gion", 2, True), (6, "Arashiyama", 1, True)]
    assert day.places == ("Kyoto Station", "Fushimi Inari", "Gion", "Nishiki", "Arashiyama")
    assert [c.clock for c in day.chapters][:2] == ["08:10", "09:30"]


def test_the_cover_is_a_photo_of_the_most_photographed_stop() -> None:
    view = day_in_kyoto()
    assert cover_photo(view, lambda photo: True).public_id == "p2"  # the middle of Kyoto Station's two
    assert cover_photo(view, lambda photo: photo.public_id != "p2").public_id == "p1"
    assert cover_photo(view, lambda photo: False) is None


def test_an_update_names_only_what_the_latest_mail_added() -> None:
    first = day_in_kyoto(DAY[:5])
    later = day_in_kyoto(DAY[5:], first_sequence=100, earlier=[p.point for p in first.photos])
    changed = changes(later, 4)
    assert [p.public_id for p in changed.photos] == ["p100", "p101", "p102", "p103"]
    assert [(line.number, line.label, line.photo_count) for line in changed.stops] == [
        (4, "Nishiki, Kyoto, Japan", 1), (5, "Gion, Kyoto, Japan", 2), (6, "Arashiyama, Kyoto, Japan", 1)]
    assert changed.stops[0].when.startswith("Sat 6 Apr 2024, ")  # the day, though the stop before is not listed
    assert changed.attention == ()
    assert changes(later, 0).photos == ()
    assert route_alt(later).startswith("Map of the route with its numbered stops: 1 Kyoto Station, 2 Fushimi Inari")


def test_the_mail_picture_is_the_preview_at_half_size() -> None:
    picture = Image.open(io.BytesIO(mail_picture(day_in_kyoto())))
    assert picture.format == "PNG" and picture.size == (600, 315)
    preview = Image.open(io.BytesIO(preview_png(day_in_kyoto())))
    assert preview.size == (1200, 630)
    # the same drawing, halved: the two agree pixel for pixel
    difference = ImageChops.difference(preview.convert("RGB").reduce(2), picture.convert("RGB"))
    assert max(high for _, high in difference.getextrema()) == 0


@pytest.mark.parametrize(("theirs", "ours"), [
    ("A day in Kyoto", "Re: A day in Kyoto"),
    ("Re: A day in Kyoto", "Re: A day in Kyoto"),
    ("RE:A day in Kyoto", "RE:A day in Kyoto"),
    ("Regensburg", "Re: Regensburg"),
    ("", "Re: your photos"),
])
def test_every_answer_keeps_their_subject(theirs: str, ours: str) -> None:
    assert reply_subject(theirs) == ours
