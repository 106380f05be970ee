"""Photo times (timeline.py) and the journey view built from them (build.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from waypost.apps.journeys.build import (
    EARTH_RADIUS_KM,
    PhotoPoint,
    build_view,
    describe_moment,
    great_circle_km,
    time_order,
)
from waypost.apps.journeys.exif import PhotoMetadata
from waypost.apps.journeys.timeline import (
    GPS_TIME,
    MAIL_DATE_ZONE,
    NO_TIME,
    OFFSET_TAG,
    PhotoTime,
    resolve_time,
)


def zone(hours: int, minutes: int = 0) -> timezone:
    sign = -1 if hours < 0 else 1
    return timezone(sign * timedelta(hours=abs(hours), minutes=minutes))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- resolve_time: which source wins ------------------------------------------------------

LOCAL = datetime(2024, 7, 13, 14, 35, 10)  # naive: what the camera's clock showed
MAIL_DATE = datetime(2024, 7, 14, 8, 0, tzinfo=zone(2))


@pytest.mark.parametrize(
    ("meta", "mail_date", "expected"),
    [
        # the offset tag beats a GPS clock that disagrees and the mail's zone
        (
            PhotoMetadata(taken_local=LOCAL, utc_offset_minutes=60, gps_time_utc=utc(2024, 7, 13, 1)),
            MAIL_DATE,
            PhotoTime(utc(2024, 7, 13, 13, 35, 10), 60, OFFSET_TAG),
        ),
        # no offset tag: GPS time is the instant, the offset comes from the camera clock
        (
            PhotoMetadata(taken_local=LOCAL, gps_time_utc=utc(2024, 7, 13, 9, 5, 10)),
            MAIL_DATE,
            PhotoTime(utc(2024, 7, 13, 9, 5, 10), 330, GPS_TIME),
        ),
        # an offset tag without a local time is no use; GPS still gives the instant
        (
            PhotoMetadata(utc_offset_minutes=60, gps_time_utc=utc(2024, 7, 13, 9)),
            MAIL_DATE,
            PhotoTime(utc(2024, 7, 13, 9), None, GPS_TIME),
        ),
        # neither: the mail's Date zone is the last resort
        (PhotoMetadata(taken_local=LOCAL), MAIL_DATE, PhotoTime(utc(2024, 7, 13, 12, 35, 10), 120, MAIL_DATE_ZONE)),
        (
            PhotoMetadata(taken_local=LOCAL),
            datetime(2024, 7, 14, tzinfo=zone(-7)),
            PhotoTime(utc(2024, 7, 13, 21, 35, 10), -420, MAIL_DATE_ZONE),
        ),
        # nothing to anchor the wall-clock time: no time at all
        (PhotoMetadata(taken_local=LOCAL), None, PhotoTime(None, None, NO_TIME)),
        (PhotoMetadata(taken_local=LOCAL), datetime(2024, 7, 14, 8), PhotoTime(None, None, NO_TIME)),
        (PhotoMetadata(), MAIL_DATE, PhotoTime(None, None, NO_TIME)),
        (PhotoMetadata(utc_offset_minutes=60), MAIL_DATE, PhotoTime(None, None, NO_TIME)),
    ],
    ids=[
        "tag-beats-all",
        "gps",
        "gps-no-local",
        "mail-zone",
        "mail-zone-west",
        "no-mail-date",
        "naive-mail-date",
        "nothing",
        "offset-only",
    ],
)
def test_resolve_time_source_precedence(meta: PhotoMetadata, mail_date: datetime | None, expected: PhotoTime) -> None:
    assert resolve_time(meta, mail_date) == expected


@pytest.mark.parametrize(
    ("camera_clock", "gps_utc", "offset"),
    [
        (datetime(2024, 3, 1, 14, 35, 10), utc(2024, 3, 1, 9, 5, 7), 330),  # India +05:30
        (datetime(2024, 3, 1, 14, 50, 40), utc(2024, 3, 1, 9, 5, 0), 345),  # Nepal +05:45
        (datetime(2024, 3, 1, 9, 5, 0), utc(2024, 3, 1, 9, 5, 0), 0),
        (datetime(2024, 3, 1, 9, 12, 0), utc(2024, 3, 1, 9, 5, 0), 0),  # camera 7 min fast
        (datetime(2024, 3, 1, 9, 13, 0), utc(2024, 3, 1, 9, 5, 0), 15),  # 8 min: next step
        (datetime(2024, 3, 1, 1, 4, 30), utc(2024, 3, 1, 9, 5, 0), -480),  # Pacific -08:00
        (datetime(2024, 2, 29, 20, 35, 0), utc(2024, 3, 1, 0, 5, 0), -210),  # Newfoundland
        (datetime(2024, 3, 2, 1, 50, 0), utc(2024, 3, 1, 12, 5, 0), 825),  # Chatham +13:45
        (datetime(2024, 3, 2, 0, 5, 0), utc(2024, 3, 1, 10, 5, 0), 840),  # Kiribati +14:00
        (datetime(2024, 3, 1, 0, 5, 0), utc(2024, 3, 1, 12, 5, 0), -720),  # Baker -12:00
        # a camera clock a day off gives an impossible offset: the instant stays, offset unknown
        (datetime(2024, 3, 2, 9, 5, 0), utc(2024, 3, 1, 9, 5, 0), None),
        (datetime(2024, 2, 29, 20, 50, 0), utc(2024, 3, 1, 11, 5, 0), None),  # -14:15
    ],
)
def test_offset_from_gps_time_rounds_to_quarter_hours(
    camera_clock: datetime, gps_utc: datetime, offset: int | None
) -> None:
    when = resolve_time(PhotoMetadata(taken_local=camera_clock, gps_time_utc=gps_utc), None)

    assert (when.utc, when.offset_minutes, when.source) == (gps_utc, offset, GPS_TIME)


@pytest.mark.parametrize(
    ("local", "offset", "expected_utc"),
    [
        # the date line: late on New Year's Eve in Kiribati is still the morning of the 31st
        (datetime(2024, 12, 31, 23, 30), 14 * 60, utc(2024, 12, 31, 9, 30)),
        (datetime(2025, 1, 1, 0, 30), 14 * 60, utc(2024, 12, 31, 10, 30)),
        # the other side of it: after midnight UTC while still the evening before at -12:00
        (datetime(2024, 12, 31, 20, 0), -12 * 60, utc(2025, 1, 1, 8, 0)),
        # crossing midnight and a month end, and a leap day, with half-hour zones
        (datetime(2024, 3, 1, 2, 0), 330, utc(2024, 2, 29, 20, 30)),
        (datetime(2024, 2, 28, 22, 0), -210, utc(2024, 2, 29, 1, 30)),
        (datetime(2024, 7, 13, 9, 4, 0, 250_000), 0, utc(2024, 7, 13, 9, 4, 0, 250_000)),
    ],
)
@pytest.mark.parametrize("source", [OFFSET_TAG, MAIL_DATE_ZONE])
def test_utc_conversion(local: datetime, offset: int, expected_utc: datetime, source: str) -> None:
    if source == OFFSET_TAG:
        when = resolve_time(PhotoMetadata(taken_local=local, utc_offset_minutes=offset), None)
    else:
        mail_date = datetime(2025, 1, 2, tzinfo=timezone(timedelta(minutes=offset)))
        when = resolve_time(PhotoMetadata(taken_local=local), mail_date)

    assert when == PhotoTime(expected_utc, offset, source)
    assert when.utc is not None and when.utc.utcoffset() == timedelta(0)


def test_photo_time_local_is_the_wall_clock_in_its_own_offset() -> None:
    when = resolve_time(PhotoMetadata(taken_local=datetime(2024, 12, 31, 23, 30), utc_offset_minutes=840), None)

    assert when.local is not None
    assert when.local.replace(tzinfo=None) == datetime(2024, 12, 31, 23, 30)
    assert when.local.utcoffset() == timedelta(hours=14)
    assert when.local == when.utc  # the same instant


@pytest.mark.parametrize(
    "when",
    [PhotoTime(None, None, NO_TIME), PhotoTime(utc(2024, 1, 1), None, GPS_TIME)],
)
def test_photo_time_local_unknown(when: PhotoTime) -> None:
    assert when.local is None


# --- great-circle distance ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((51.5074, -0.1278), (40.7128, -74.0060), 5570.0),  # London - New York
        ((-33.8688, 151.2093), (51.5074, -0.1278), 16994.0),  # Sydney - London
        ((27.7172, 85.3240), (28.6139, 77.2090), 805.0),  # Kathmandu - Delhi
        ((0.0, 0.0), (1.0, 0.0), 111.195),  # one degree of a meridian
        ((0.0, 179.5), (0.0, -179.5), 111.195),  # across the date line, the short way
        ((0.0, 0.0), (0.0, 180.0), 20015.1),  # antipodes on the equator
        ((90.0, 0.0), (-90.0, 0.0), 20015.1),  # pole to pole
        ((45.0, 10.0), (-45.0, -170.0), 20015.1),  # antipodes off the equator
    ],
)
def test_great_circle_known_distances(a: tuple[float, float], b: tuple[float, float], km: float) -> None:
    assert great_circle_km(*a, *b) == pytest.approx(km, rel=0.005)
    assert great_circle_km(*b, *a) == pytest.approx(great_circle_km(*a, *b))


@pytest.mark.parametrize("point", [(0.0, 0.0), (51.5074, -0.1278), (90.0, 45.0), (-33.9, 151.2)])
def test_great_circle_zero_distance(point: tuple[float, float]) -> None:
    assert great_circle_km(*point, *point) == 0.0


def test_antipodes_are_half_the_circumference() -> None:
    assert great_circle_km(10.0, 20.0, -10.0, -160.0) == pytest.approx(3.141592653589793 * EARTH_RADIUS_KM)


# --- ordering and the journey view ----------------------------------------------------------


def point(
    public_id: str,
    position: int,
    taken_at: datetime | None = None,
    offset: int | None = None,
    lat: float | None = None,
    lon: float | None = None,
    **extra: Any,
) -> PhotoPoint:
    fields: dict[str, Any] = {
        "public_id": public_id,
        "filename": f"{public_id}.jpg",
        "mail_position": position,
        "taken_at": taken_at,
        "utc_offset_minutes": offset,
        "time_source": OFFSET_TAG if taken_at else None,
        "latitude": lat,
        "longitude": lon,
        "problem": None,
    }
    fields.update(extra)
    return PhotoPoint(**fields)


def test_time_order_keeps_untimed_photos_after_their_mail_predecessor() -> None:
    photos = [
        point("u2", 0),  # nothing timed before it in the mail: leads
        point("late", 1, utc(2024, 7, 13, 12)),
        point("u1", 2),  # follows "late"
        point("early", 3, utc(2024, 7, 13, 8)),
        point("u3", 4),  # follows "early"
        point("mid", 5, utc(2024, 7, 13, 10)),
    ]

    assert [p.public_id for p in time_order(photos)] == ["u2", "early", "u3", "mid", "late", "u1"]


def test_time_order_follows_arrival_across_mails() -> None:
    # photos of a second mail in the thread (higher sequence) with the same mail positions
    photos = [
        point("first-0", 0, utc(2024, 7, 13, 9), sequence=1),
        point("first-1", 1, None, sequence=2),
        point("second-0", 0, utc(2024, 7, 13, 8), sequence=3),
        point("second-1", 1, None, sequence=4),
    ]

    assert [p.public_id for p in time_order(photos)] == ["second-0", "second-1", "first-0", "first-1"]


def test_time_order_compares_instants_not_wall_clocks() -> None:
    # 09:00 in Kathmandu is earlier than 06:00 in London on the same day
    kathmandu = point("ktm", 0, datetime(2024, 7, 13, 9, 0, tzinfo=zone(5, 45)), 345)
    london = point("lon", 1, datetime(2024, 7, 13, 6, 0, tzinfo=zone(1)), 60)

    assert [p.public_id for p in time_order([london, kathmandu])] == ["ktm", "lon"]


def test_time_order_breaks_ties_by_mail_position() -> None:
    same = utc(2024, 7, 13, 9)
    photos = [point("b", 1, same), point("a", 0, same), point("c", 2, same)]

    assert [p.public_id for p in time_order(photos)] == ["a", "b", "c"]


def test_build_view() -> None:
    created = utc(2024, 7, 20, 18)
    photos = [
        point("nyc", 2, utc(2024, 7, 14, 18), -240, 40.7128, -74.0060),
        point("untimed", 0, None, None, 48.8566, 2.3522),
        point("ldn", 1, utc(2024, 7, 13, 8, 4), 60, 51.5074, -0.1278),
        point("no-gps", 3, utc(2024, 7, 15, 3, 30), 330),
    ]

    view = build_view("Summer", "tok123", created, photos)

    assert (view.title, view.token, view.created_at) == ("Summer", "tok123", created)
    assert [p.public_id for p in view.photos] == ["untimed", "ldn", "nyc", "no-gps"]
    assert [p.public_id for p in view.route] == ["ldn", "nyc"]
    assert [leg.flight for leg in view.legs] == [True]  # 5,570 km in 34 hours: nobody drove
    assert [p.public_id for p in view.unplaced] == ["no-gps"]
    assert view.distance_km == pytest.approx(5570.0, rel=0.005)
    assert view.distance_km == round(view.distance_km, 3)
    assert view.start == datetime(2024, 7, 13, 9, 4, tzinfo=zone(1))
    assert view.start is not None and view.start.utcoffset() == timedelta(hours=1)
    # the last timed photo, even though it has no place
    assert view.end == datetime(2024, 7, 15, 9, 0, tzinfo=zone(5, 30))
    assert view.end is not None and view.end.utcoffset() == timedelta(hours=5, minutes=30)
    assert (view.end.hour, view.end.minute) == (9, 0)


def test_build_view_distance_sums_legs_in_time_order() -> None:
    # mailed out of order: the route must be A -> B -> C, not A -> C -> B
    photos = [
        point("A", 0, utc(2024, 1, 1, 0), 0, 0.0, 0.0),
        point("C", 1, utc(2024, 1, 1, 2), 0, 0.0, 2.0),
        point("B", 2, utc(2024, 1, 1, 1), 0, 0.0, 1.0),
    ]

    view = build_view("t", "k", utc(2024, 1, 2), photos)

    assert [p.public_id for p in view.route] == ["A", "B", "C"]
    assert view.distance_km == pytest.approx(2 * great_circle_km(0, 0, 0, 1), abs=0.001)


@pytest.mark.parametrize(
    "photos",
    [
        [],
        [point("untimed", 0, lat=1.0, lon=1.0), point("untimed2", 1, lat=2.0, lon=2.0)],
    ],
    ids=["no-photos", "only-untimed"],
)
def test_build_view_without_times(photos: list[PhotoPoint]) -> None:
    view = build_view("t", "k", utc(2024, 1, 1), photos)

    assert (view.route, view.distance_km, view.start, view.end) == ((), 0.0, None, None)
    assert len(view.photos) == len(photos)


def test_single_photo_journey() -> None:
    only = point("one", 0, utc(2024, 12, 31, 9, 30), 840, -1.87, -157.4)

    view = build_view("t", "k", utc(2025, 1, 1), [only])

    assert view.distance_km == 0.0
    assert view.start == view.end
    assert view.start is not None
    assert view.start.replace(tzinfo=None) == datetime(2024, 12, 31, 23, 30)


def test_local_taken_at_without_offset_stays_utc() -> None:
    photo = point("p", 0, utc(2024, 7, 13, 9), None)

    assert photo.local_taken_at == utc(2024, 7, 13, 9)
    assert photo.local_taken_at is not None and photo.local_taken_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("lat", "lon", "placed"),
    [(1.0, 2.0, True), (0.0, 0.0, True), (None, 2.0, False), (1.0, None, False), (None, None, False)],
)
def test_placed(lat: float | None, lon: float | None, placed: bool) -> None:
    assert point("p", 0, lat=lat, lon=lon).placed is placed


# --- describe_moment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 7, 13, 9, 4, tzinfo=zone(1)), "13 Jul 2024, 09:04 (UTC+01:00)"),
        (datetime(2024, 7, 13, 9, 4, tzinfo=UTC), "13 Jul 2024, 09:04 (UTC)"),
        (datetime(2024, 3, 1, 2, 0, tzinfo=zone(5, 45)), "1 Mar 2024, 02:00 (UTC+05:45)"),
        (datetime(2024, 12, 31, 23, 30, tzinfo=zone(14)), "31 Dec 2024, 23:30 (UTC+14:00)"),
        (datetime(2024, 2, 29, 20, 35, tzinfo=zone(-3, 30)), "29 Feb 2024, 20:35 (UTC-03:30)"),
        (datetime(2025, 1, 1, 0, 5, tzinfo=zone(-12)), "1 Jan 2025, 00:05 (UTC-12:00)"),
        (None, "time unknown"),
    ],
)
def test_describe_moment(moment: datetime | None, text: str) -> None:
    assert describe_moment(moment) == text


def test_describe_moment_of_a_built_view() -> None:
    view = build_view("t", "k", utc(2025, 1, 1), [point("p", 0, utc(2024, 12, 31, 9, 30), 840)])

    assert describe_moment(view.start) == "31 Dec 2024, 23:30 (UTC+14:00)"
