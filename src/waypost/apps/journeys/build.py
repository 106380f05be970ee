"""From stored photos to the journey people see: order, route, legs, flights, stops, totals.

This is the one place that turns photo rows into the journey view; the web page, the JSON,
the GeoJSON and GPX downloads and the reply all read it, so they never disagree. It is a
pure function of the photos and the rules: rebuilding after more photos arrive is just
building again.

How each photo ends up on the map (``JourneyPhoto.placement``):

- ``gps``: its own coordinates, and part of the route line when its time is known;
- ``outlier``: its coordinates imply an impossible speed from both neighbours (a stale or
  wild GPS fix), so it is left off the line and shown apart;
- ``estimated``: no coordinates, but taken between two placed photos that are close in
  time, so it sits on the great circle between them in proportion to the time;
- ``unplaced``: no coordinates and no close neighbours (or no time): listed, not mapped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Protocol

from waypost.apps.journeys.geo import EARTH_RADIUS_KM, LatLon, centre, great_circle_km, intermediate

__all__ = ["EARTH_RADIUS_KM", "SCHEMA_VERSION", "great_circle_km"]

SCHEMA_VERSION = "1"

GPS, ESTIMATED, OUTLIER, UNPLACED = "gps", "estimated", "outlier", "unplaced"


@dataclass(frozen=True)
class RouteRules:
    """The tunable parts of journey building (settable under ``[journeys]``)."""

    stop_radius_km: float = 0.3  # photos this close to a stop's first photo join it ...
    stop_max_gap: timedelta = timedelta(hours=3)  # ... unless this long passed since the previous one
    estimate_max_gap: timedelta = timedelta(minutes=30)  # placed neighbours at most this far apart
    max_speed_kmh: float = 1200.0  # faster than any airliner over ground: a bad GPS fix
    gps_noise_km: float = 1.0  # jumps shorter than this are never called impossible
    flight_min_km: float = 150.0  # a leg at least this long ...
    flight_min_speed_kmh: float = 250.0  # ... and at least this fast (on average) was flown;
    long_haul_km: float = 1000.0  # so was a leg this long at an average no car or train keeps up
    long_haul_speed_kmh: float = 100.0  # over a day or two (a day of photos in London, next in New York)


class Place(Protocol):
    """A human name for a point, as the offline place index (``places.py``) gives it (read-only)."""

    @property
    def name(self) -> str: ...

    @property
    def region(self) -> str | None: ...

    @property
    def country_code(self) -> str: ...

    @property
    def country(self) -> str: ...

    @property
    def city(self) -> str | None: ...  # the larger place ``name`` is part of ("Osaka" for Umeda)

    @property
    def offset(self) -> str | None: ...  # how far and which way from ``name``'s centre ("4 km S")

    @property
    def label(self) -> str: ...


Locate = Callable[[float, float], "Place | None"]


@dataclass(frozen=True)
class PhotoPoint:
    """One stored photo, as the database has it: facts, no interpretation."""

    public_id: str
    filename: str | None
    mail_position: int
    taken_at: datetime | None  # aware, UTC
    utc_offset_minutes: int | None
    time_source: str | None
    latitude: float | None
    longitude: float | None
    problem: str | None
    altitude: float | None = None
    sequence: int = 0  # arrival order across all the mails of the journey (row id)

    @property
    def has_gps(self) -> bool:
        return self.gps is not None

    @property
    def gps(self) -> LatLon | None:
        """The photo's own fix, when it has both coordinates."""
        if self.latitude is None or self.longitude is None:
            return None
        return (self.latitude, self.longitude)

    @property
    def placed(self) -> bool:  # kept for callers that only know stored photos
        return self.has_gps

    @property
    def local_taken_at(self) -> datetime | None:
        """The wall-clock time where the photo was taken (aware, in its own offset)."""
        return _local(self.taken_at, self.utc_offset_minutes)


@dataclass(frozen=True)
class JourneyPhoto:
    """A photo as the journey shows it: its facts plus where the engine put it."""

    point: PhotoPoint
    number: int  # 1-based, in journey order
    placement: str  # GPS | ESTIMATED | OUTLIER | UNPLACED
    position: LatLon | None  # where it goes on the map (own GPS or estimate); None if unplaced
    estimate_gap: timedelta | None = None  # for estimates: time between the two neighbours used
    stop: int | None = None  # number of the stop it belongs to

    # the stored facts, read through
    public_id = property(lambda self: self.point.public_id)
    filename = property(lambda self: self.point.filename)
    mail_position = property(lambda self: self.point.mail_position)
    taken_at = property(lambda self: self.point.taken_at)
    utc_offset_minutes = property(lambda self: self.point.utc_offset_minutes)
    time_source = property(lambda self: self.point.time_source)
    latitude = property(lambda self: self.point.latitude)
    longitude = property(lambda self: self.point.longitude)
    altitude = property(lambda self: self.point.altitude)
    problem = property(lambda self: self.point.problem)
    local_taken_at = property(lambda self: self.point.local_taken_at)

    @property
    def placed(self) -> bool:
        return self.position is not None

    @property
    def placed_at(self) -> LatLon:
        """Where a photo on the map is (a leg joins two of them); raises for an unplaced one."""
        if self.position is None:
            raise ValueError(f"photo {self.number} is not on the map")
        return self.position

    @property
    def on_route(self) -> bool:
        return self.placement == GPS and self.point.taken_at is not None

    @property
    def label(self) -> str:
        return self.point.filename or f"photo {self.number}"

    @property
    def issue(self) -> str | None:
        """Why this photo is not where its own data would put it, in words; None if it is."""
        problem = self.point.problem or ""
        if problem.startswith("could not read"):
            return problem
        parts = [part for part in problem.split("; ") if part]
        reasons = []
        if self.placement == OUTLIER:
            reasons.append("its location is too far from the photos around it to be right, so it is off the route")
        elif self.placement == ESTIMATED:
            reasons.append("no location of its own: placed between the photos taken just before and after it")
        elif self.placement == UNPLACED:
            reasons.append(next((p for p in parts if p.startswith("no location")), "no location"))
        if self.point.taken_at is None:
            reasons.append(next((p for p in parts if p.startswith("no time")), "no time"))
        return "; ".join(reasons) or None


@dataclass(frozen=True)
class Leg:
    """The way between two consecutive photos on the route."""

    start: JourneyPhoto
    end: JourneyPhoto
    distance_km: float
    duration: timedelta
    flight: bool

    @property
    def speed_kmh(self) -> float | None:
        hours = self.duration.total_seconds() / 3600
        return self.distance_km / hours if hours > 0 else None


@dataclass(frozen=True)
class Stop:
    """Consecutive photos close together in place and time."""

    number: int
    position: LatLon
    arrival: datetime  # local, aware (first photo's offset)
    departure: datetime  # local, aware (last photo's offset)
    photos: tuple[JourneyPhoto, ...]
    place: Place | None

    @property
    def duration(self) -> timedelta:
        return self.departure - self.arrival

    @property
    def label(self) -> str:
        return self.place.label if self.place else f"{self.position[0]:.4f}, {self.position[1]:.4f}"


@dataclass(frozen=True)
class Visit:
    """Consecutive stops in the same named place, as a person would tell the day: "Sintra,
    14:21 to 15:33, 2 photos" rather than two stops a kilometre apart."""

    label: str
    stops: tuple[Stop, ...]

    @property
    def arrival(self) -> datetime:
        return self.stops[0].arrival

    @property
    def departure(self) -> datetime:
        return self.stops[-1].departure

    @property
    def photo_count(self) -> int:
        return sum(len(stop.photos) for stop in self.stops)


@dataclass(frozen=True)
class Totals:
    photos: int
    on_map: int  # own GPS or estimated
    estimated: int
    outliers: int
    unplaced: int
    untimed: int
    distance_km: float
    flown_km: float
    days: int  # distinct local calendar days with a photo
    places: tuple[str, ...]  # distinct stop labels, in order of first visit
    countries: tuple[str, ...]


@dataclass(frozen=True)
class JourneyView:
    title: str
    token: str
    created_at: datetime
    photos: tuple[JourneyPhoto, ...]  # every photo, in journey order
    route: tuple[JourneyPhoto, ...]  # the line: GPS-placed, timed, not outliers, in time order
    legs: tuple[Leg, ...]
    stops: tuple[Stop, ...]
    totals: Totals
    start: datetime | None  # local time of the first photo, aware
    end: datetime | None  # local time of the last photo, aware
    updated_at: datetime | None = None
    rules: RouteRules = field(default_factory=RouteRules)

    @property
    def distance_km(self) -> float:
        return self.totals.distance_km

    @property
    def unplaced(self) -> tuple[JourneyPhoto, ...]:
        return tuple(photo for photo in self.photos if not photo.placed)

    @property
    def needs_attention(self) -> tuple[JourneyPhoto, ...]:
        """Photos the owner should hear about: not on the map, estimated, off the route, or untimed."""
        return tuple(photo for photo in self.photos if photo.issue)

    @property
    def visits(self) -> tuple[Visit, ...]:
        """The stops, with consecutive ones in the same named place taken together."""
        visits: list[Visit] = []
        for stop in self.stops:
            if visits and stop.place is not None and visits[-1].label == stop.label:
                visits[-1] = Visit(stop.label, (*visits[-1].stops, stop))
            else:
                visits.append(Visit(stop.label, (stop,)))
        return tuple(visits)


def _local(moment: datetime | None, offset_minutes: int | None) -> datetime | None:
    if moment is None:
        return None
    if offset_minutes is None:
        return moment
    try:
        return moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    except OverflowError:  # a stored time at the calendar's edge: show it in UTC rather than fail
        return moment


def time_order(photos: Iterable[PhotoPoint]) -> list[PhotoPoint]:
    """By UTC instant; a photo without a time follows the photo it came after in the mail.

    Ties on the instant keep arrival order. Untimed photos that came before every timed one
    in their mail lead the journey, in mail order."""
    arrived = sorted(photos, key=lambda p: (p.sequence, p.mail_position))
    timed = sorted((p for p in arrived if p.taken_at is not None),
                   key=lambda p: (p.taken_at, p.sequence, p.mail_position))
    followers: dict[str | None, list[PhotoPoint]] = {}
    anchor: str | None = None
    for photo in arrived:
        if photo.taken_at is not None:
            anchor = photo.public_id
        else:
            followers.setdefault(anchor, []).append(photo)
    ordered = list(followers.get(None, ()))
    for photo in timed:
        ordered.append(photo)
        ordered.extend(followers.get(photo.public_id, ()))
    return ordered


def build_view(title: str, token: str, created_at: datetime, photos: Iterable[PhotoPoint], *,
               rules: RouteRules | None = None, locate: Locate | None = None,
               updated_at: datetime | None = None) -> JourneyView:
    rules = rules or RouteRules()
    ordered = time_order(photos)
    outliers = _outliers([p for p in ordered if p.has_gps and p.taken_at is not None], rules)
    placed = [_initial(p, i + 1, outliers) for i, p in enumerate(ordered)]
    placed = _estimate(placed, rules)
    stops, placed = _stops(placed, rules, locate)
    route = tuple(p for p in placed if p.on_route)
    legs = tuple(_leg(a, b, rules) for a, b in zip(route, route[1:], strict=False))
    timed = [p for p in placed if p.taken_at is not None]
    return JourneyView(
        title=title,
        token=token,
        created_at=created_at,
        updated_at=updated_at,
        photos=tuple(placed),
        route=route,
        legs=legs,
        stops=stops,
        totals=_totals(placed, legs, stops),
        start=min(timed, key=lambda p: p.taken_at).local_taken_at if timed else None,
        end=max(timed, key=lambda p: p.taken_at).local_taken_at if timed else None,
        rules=rules,
    )


def _initial(point: PhotoPoint, number: int, outliers: set[str]) -> JourneyPhoto:
    position = point.gps
    if position is None:
        return JourneyPhoto(point, number, UNPLACED, None)
    return JourneyPhoto(point, number, OUTLIER if point.public_id in outliers else GPS, position)


def _implausible(a: PhotoPoint, b: PhotoPoint, rules: RouteRules) -> bool:
    distance = great_circle_km(a.latitude, a.longitude, b.latitude, b.longitude)  # type: ignore[arg-type]
    if distance <= rules.gps_noise_km:
        return False
    hours = abs((b.taken_at - a.taken_at).total_seconds()) / 3600  # type: ignore[operator]
    return hours == 0 or distance / hours > rules.max_speed_kmh


def _outliers(track: Sequence[PhotoPoint], rules: RouteRules) -> set[str]:
    """Fixes that are impossible to reach from their neighbours, removed one at a time.

    A point in the middle goes when both its legs are impossible but skipping it is not; an
    end point goes when its only leg is impossible and the next leg is fine (so of two
    disagreeing points, the one that disagrees with the rest of the track goes). When the
    track does not say which is wrong, nothing is removed: a real flight stays a flight."""
    kept = list(track)
    removed: set[str] = set()
    changed = True
    while changed and len(kept) >= 3:
        changed = False
        for i, point in enumerate(kept):
            before = kept[i - 1] if i > 0 else None
            after = kept[i + 1] if i + 1 < len(kept) else None
            if before is not None and after is not None:
                spike = (_implausible(before, point, rules) and _implausible(point, after, rules)
                         and not _implausible(before, after, rules))
            elif after is not None:  # first point
                spike = (_implausible(point, after, rules) and not _implausible(after, kept[i + 2], rules)
                         and _implausible(point, kept[i + 2], rules))
            else:  # last point
                spike = (_implausible(before, point, rules) and not _implausible(kept[i - 2], before, rules)  # type: ignore[arg-type]
                         and _implausible(kept[i - 2], point, rules))
            if spike:
                removed.add(point.public_id)
                del kept[i]
                changed = True
                break
    return removed


def _estimate(photos: list[JourneyPhoto], rules: RouteRules) -> list[JourneyPhoto]:
    """Place timed photos without GPS between their nearest timed, placed neighbours."""
    anchors = [p for p in photos if p.on_route]
    result = []
    for photo in photos:
        if photo.placement != UNPLACED or photo.taken_at is None:
            result.append(photo)
            continue
        before = next((a for a in reversed(anchors) if a.taken_at <= photo.taken_at), None)
        after = next((a for a in anchors if a.taken_at >= photo.taken_at and a is not before), None)
        if before is None or after is None:
            result.append(photo)
            continue
        gap = after.taken_at - before.taken_at
        if gap > rules.estimate_max_gap:
            result.append(photo)
            continue
        fraction = 0.0 if not gap else (photo.taken_at - before.taken_at) / gap
        position = intermediate(before.position, after.position, fraction)  # type: ignore[arg-type]
        result.append(replace(photo, placement=ESTIMATED, position=position, estimate_gap=gap))
    return result


def _leg(a: JourneyPhoto, b: JourneyPhoto, rules: RouteRules) -> Leg:
    distance = great_circle_km(*a.position, *b.position)  # type: ignore[misc]
    duration = b.taken_at - a.taken_at
    hours = duration.total_seconds() / 3600
    speed = math.inf if hours <= 0 else distance / hours
    flight = ((distance >= rules.flight_min_km and speed >= rules.flight_min_speed_kmh)
              or (distance >= rules.long_haul_km and speed >= rules.long_haul_speed_kmh))
    return Leg(a, b, round(distance, 3), duration, flight=flight)


def _stops(photos: list[JourneyPhoto], rules: RouteRules,
           locate: Locate | None) -> tuple[tuple[Stop, ...], list[JourneyPhoto]]:
    """Group consecutive route photos that stay within the radius of the group's first photo
    with no long pause between them; estimated photos taken during a stop join it."""
    groups: list[list[JourneyPhoto]] = []
    for photo in (p for p in photos if p.on_route):
        group = groups[-1] if groups else None
        if (group is not None
                and great_circle_km(*group[0].position, *photo.position) <= rules.stop_radius_km  # type: ignore[misc]
                and photo.taken_at - group[-1].taken_at <= rules.stop_max_gap):
            group.append(photo)
        else:
            groups.append([photo])
    membership: dict[str, int] = {}
    spans: list[tuple[datetime, datetime, int]] = []
    for number, group in enumerate(groups, start=1):
        spans.append((group[0].taken_at, group[-1].taken_at, number))
        membership.update((p.public_id, number) for p in group)
    for photo in photos:
        if photo.placement == ESTIMATED:
            for first, last, number in spans:
                if first <= photo.taken_at <= last:
                    membership[photo.public_id] = number
    assigned = [replace(p, stop=membership.get(p.public_id)) for p in photos]
    stops = []
    for number, group in enumerate(groups, start=1):
        members = tuple(p for p in assigned if p.stop == number)
        where = centre(p.position for p in group if p.position is not None)
        stops.append(Stop(
            number=number,
            position=where,
            arrival=group[0].local_taken_at,
            departure=group[-1].local_taken_at,
            photos=members,
            place=locate(*where) if locate else None,
        ))
    return tuple(stops), assigned


def _totals(photos: Sequence[JourneyPhoto], legs: Sequence[Leg], stops: Sequence[Stop]) -> Totals:
    days: set[date] = {p.local_taken_at.date() for p in photos if p.local_taken_at is not None}
    places: list[str] = []
    countries: list[str] = []
    for stop in stops:
        if stop.place is None:
            continue
        if stop.place.label not in places:
            places.append(stop.place.label)
        if stop.place.country not in countries:
            countries.append(stop.place.country)
    return Totals(
        photos=len(photos),
        on_map=sum(1 for p in photos if p.placed),
        estimated=sum(1 for p in photos if p.placement == ESTIMATED),
        outliers=sum(1 for p in photos if p.placement == OUTLIER),
        unplaced=sum(1 for p in photos if not p.placed),
        untimed=sum(1 for p in photos if p.taken_at is None),
        distance_km=round(math.fsum(leg.distance_km for leg in legs), 3),
        flown_km=round(math.fsum(leg.distance_km for leg in legs if leg.flight), 3),
        days=len(days),
        places=tuple(places),
        countries=tuple(countries),
    )


def describe_moment(moment: datetime | None) -> str:
    """'13 Jul 2024, 09:04 (UTC+01:00)': local clock time with its offset, for people.

    A naive moment has no known zone and says so rather than claiming UTC."""
    if moment is None:
        return "time unknown"
    offset = moment.strftime("%z")
    if not offset:
        return f"{moment.day} {moment:%b %Y, %H:%M} (zone unknown)"
    label = "UTC" if offset == "+0000" else f"UTC{offset[:3]}:{offset[3:]}"
    return f"{moment.day} {moment:%b %Y, %H:%M} ({label})"
