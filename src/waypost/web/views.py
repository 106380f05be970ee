"""The journey in the shapes the web hands out: JSON (the page's data and a download, with a
versioned JSON Schema), GeoJSON (RFC 7946) and GPX 1.1. All three are drawn from the same
``JourneyView``, so they never disagree with the page or the reply."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from importlib import resources
from typing import Any

import gpxpy.gpx
import jsonschema
import jsonschema.protocols
import jsonschema.validators

from waypost.apps.journeys.build import SCHEMA_VERSION, JourneyPhoto, JourneyView, Leg, Stop
from waypost.apps.journeys.geo import arc, split_at_antimeridian, unwrap


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _local(value: datetime | None) -> str | None:
    """Local wall-clock time with its offset, e.g. 2024-07-13T09:04:00+01:00."""
    return value.isoformat() if value else None


# public coordinates carry 5 decimals at most (about 1 m): more says nothing true about a phone's
# fix and only narrows down a doorstep
PUBLIC_PLACES = 5


def _round(value: float | None, places: int = PUBLIC_PLACES) -> float | None:
    return None if value is None else round(value, min(places, PUBLIC_PLACES))


def public_name(photo: JourneyPhoto) -> str:
    """The name a photo has in public: its number, never the file name the owner's phone gave
    it (which may hold a name, a date or a place); the owner sees that in their reply mail."""
    return f"Photo {photo.number}"


def photo_json(photo: JourneyPhoto, base: str) -> dict[str, Any]:
    local = photo.local_taken_at if photo.utc_offset_minutes is not None else None
    return {
        "id": photo.public_id,
        "number": photo.number,
        "filename": public_name(photo),
        "taken_at": _iso(photo.taken_at),
        "local_time": _local(local),
        "utc_offset_minutes": photo.utc_offset_minutes,
        "time_source": photo.time_source,
        "latitude": _round(photo.latitude),
        "longitude": _round(photo.longitude),
        "altitude_m": _round(photo.altitude, 1),
        "placement": photo.placement,
        "position": [_round(photo.position[0]), _round(photo.position[1])] if photo.position else None,
        "estimate_gap_s": int(photo.estimate_gap.total_seconds()) if photo.estimate_gap is not None else None,
        "stop": photo.stop,
        "issue": photo.issue,
        "thumbnail_url": f"{base}/photos/{photo.public_id}/thumb.jpg",
        "display_url": f"{base}/photos/{photo.public_id}/display.jpg",
    }


def leg_path(leg: Leg) -> list[tuple[float, float]]:
    """Flights follow the great circle (an arc on the map); other legs are straight."""
    a, b = leg.start.placed_at, leg.end.placed_at
    return arc(a, b) if leg.flight else unwrap([a, b])


def _leg_fields(leg: Leg) -> dict[str, Any]:
    speed = leg.speed_kmh
    return {
        "from": leg.start.public_id,
        "to": leg.end.public_id,
        "mode": "flight" if leg.flight else "ground",
        "distance_km": round(leg.distance_km, 3),
        "duration_s": int(leg.duration.total_seconds()),
        "speed_kmh": None if speed is None else round(speed, 1),
    }


def leg_json(leg: Leg) -> dict[str, Any]:
    return {**_leg_fields(leg), "path": [[_round(lat), _round(lon)] for lat, lon in leg_path(leg)]}


def stop_json(stop: Stop) -> dict[str, Any]:
    place = stop.place
    return {
        "number": stop.number,
        "latitude": _round(stop.position[0]),
        "longitude": _round(stop.position[1]),
        "arrival": _local(stop.arrival),
        "departure": _local(stop.departure),
        "photo_count": len(stop.photos),
        "photos": [photo.public_id for photo in stop.photos],
        "label": stop.label,
        "place": None if place is None else {
            "name": place.name, "region": place.region, "country_code": place.country_code,
            "country": place.country,
        },
    }


def journey_json(view: JourneyView) -> dict[str, Any]:
    base = f"/j/{view.token}"
    totals = view.totals
    return {
        "schema_version": SCHEMA_VERSION,
        "title": view.title,
        "created_at": _iso(view.created_at),
        "updated_at": _iso(view.updated_at),
        "start": _local(view.start),
        "end": _local(view.end),
        "totals": {
            "photos": totals.photos,
            "on_map": totals.on_map,
            "estimated": totals.estimated,
            "outliers": totals.outliers,
            "unplaced": totals.unplaced,
            "untimed": totals.untimed,
            "distance_km": totals.distance_km,
            "flown_km": totals.flown_km,
            "days": totals.days,
            "places": list(totals.places),
            "countries": list(totals.countries),
        },
        "route": [[_round(lat), _round(lon)] for lat, lon in unwrap([p.position for p in view.route])],  # type: ignore[misc]
        "legs": [leg_json(leg) for leg in view.legs],
        "stops": [stop_json(stop) for stop in view.stops],
        "photos": [photo_json(photo, base) for photo in view.photos],
        "links": {"page": base, "geojson": f"{base}.geojson", "gpx": f"{base}.gpx"},
    }


@cache
def journey_schema() -> dict[str, Any]:
    """The JSON Schema that ``journey_json`` output follows (shipped in the package)."""
    text = resources.files("waypost.apps.journeys").joinpath(f"schema/journey-{SCHEMA_VERSION}.json").read_text()
    return json.loads(text)


@cache
def journey_validator() -> jsonschema.protocols.Validator:
    """A ready validator for ``journey_schema()`` (building one is the slow part)."""
    schema = journey_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def journey_geojson(view: JourneyView) -> dict[str, Any]:
    """A FeatureCollection: one LineString (or MultiLineString, when it crosses the
    antimeridian) per leg, and Points for stops and photos; [longitude, latitude] order."""
    base = f"/j/{view.token}"
    features: list[dict[str, Any]] = []
    for leg in view.legs:
        pieces = [[[_round(lon), _round(lat)] for lat, lon in piece] for piece in split_at_antimeridian(leg_path(leg))]
        geometry = ({"type": "LineString", "coordinates": pieces[0]} if len(pieces) == 1
                    else {"type": "MultiLineString", "coordinates": pieces})
        features.append({"type": "Feature", "geometry": geometry, "properties": {"kind": "leg", **_leg_fields(leg)}})
    for stop in view.stops:
        data = stop_json(stop)
        features.append({"type": "Feature", "geometry": _point(stop.position, None),
                         "properties": {"kind": "stop", **{k: v for k, v in data.items()
                                                           if k not in ("latitude", "longitude")}}})
    for photo in view.photos:
        if photo.position is None:
            continue
        data = photo_json(photo, base)
        altitude = photo.altitude if photo.placement != "estimated" else None
        features.append({"type": "Feature", "geometry": _point(photo.position, altitude),
                         "properties": {"kind": "photo", **{k: v for k, v in data.items() if k != "position"}}})
    return {"type": "FeatureCollection", "name": view.title, "features": features}


def _point(position: tuple[float, float], altitude: float | None) -> dict[str, Any]:
    coordinates = [_round(position[1]), _round(position[0])]
    if altitude is not None:
        coordinates.append(_round(altitude, 1))
    return {"type": "Point", "coordinates": coordinates}


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str | None) -> str | None:
    """Text XML 1.0 can carry: control characters (a subject may hold any) removed."""
    return None if text is None else _XML_ILLEGAL.sub("", text)


def journey_gpx(view: JourneyView) -> str:
    """GPX 1.1: the route as one track (own GPS fixes only, with times), stops as waypoints."""
    document = gpxpy.gpx.GPX()
    document.name = _xml_text(view.title)
    document.creator = "Waypost"
    document.time = view.updated_at or view.created_at
    track = gpxpy.gpx.GPXTrack(name=_xml_text(view.title))
    segment = gpxpy.gpx.GPXTrackSegment()
    for photo in view.route:
        lat, lon = photo.position  # type: ignore[misc]
        segment.points.append(gpxpy.gpx.GPXTrackPoint(_round(lat), _round(lon), elevation=_round(photo.altitude, 1),
                                                      time=photo.taken_at,
                                                      name=_xml_text(public_name(photo))))
    track.segments.append(segment)
    document.tracks.append(track)
    for stop in view.stops:
        document.waypoints.append(gpxpy.gpx.GPXWaypoint(
            _round(stop.position[0]), _round(stop.position[1]), time=stop.arrival.astimezone(UTC),
            name=_xml_text(stop.label),
            description=f"{len(stop.photos)} photo{'s' if len(stop.photos) != 1 else ''}",
        ))
    return document.to_xml(version="1.1")


def download_name(title: str, extension: str) -> str:
    """A safe ASCII file name for a download, from the journey's title."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_title).strip("-").lower()[:60] or "journey"
    return f"{slug}.{extension}"


# --- the journey page: its timeline, its figures, its one-line summary -------------------------


@dataclass(frozen=True)
class TimelineDay:
    """Photos of one local calendar day, in time order; ``date`` None for "Time unknown"."""

    date: date | None
    places: tuple[str, ...]  # names of the stops of that day's photos, in order
    photos: tuple[JourneyPhoto, ...]

    @property
    def heading(self) -> str:
        return describe_day(self.date) if self.date else "Time unknown"


@dataclass(frozen=True)
class Figure:
    value: str  # "1,642 km"
    label: str  # "travelled"
    note: str | None = None  # "1,565 km flown"


def describe_day(day: date) -> str:
    """'Sat 13 Jul 2024' (English, whatever the server's locale)."""
    return f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]} {day.year}"


def describe_clock(moment: datetime | None) -> str:
    """'09:04 (UTC+01:00)': the local clock time and its offset, the day being said above it."""
    if moment is None:
        return "time unknown"
    offset = moment.strftime("%z")
    zone = "zone unknown" if not offset else "UTC" if offset == "+0000" else f"UTC{offset[:3]}:{offset[3:]}"
    return f"{moment:%H:%M} ({zone})"


def timeline_days(view: JourneyView) -> list[TimelineDay]:
    """The photos by local day, in journey order. Consecutive photos of the same local date
    share a day; a date can come twice when the traveller crossed the date line. Photos
    without a time come last, under "Time unknown"."""
    names = {stop.number: stop.place.name for stop in view.stops if stop.place is not None}
    runs: list[tuple[date | None, list[JourneyPhoto]]] = []
    untimed: list[JourneyPhoto] = []
    for photo in view.photos:
        local = photo.local_taken_at
        if local is None:
            untimed.append(photo)
        elif runs and runs[-1][0] == local.date():
            runs[-1][1].append(photo)
        else:
            runs.append((local.date(), [photo]))
    if untimed:
        runs.append((None, untimed))
    return [TimelineDay(day, _distinct(names.get(p.stop) for p in group if p.stop is not None), tuple(group))
            for day, group in runs]


def describe_dates(view: JourneyView) -> str | None:
    """'13 Jul 2024', '13 – 15 Jul 2024', '28 Jun – 2 Jul 2024' or '30 Dec 2023 – 2 Jan 2024'."""
    if view.start is None or view.end is None:
        return None
    first, last = view.start.date(), view.end.date()
    if first == last:
        return describe_day(first)
    end = f"{last.day} {_MONTHS[last.month - 1]} {last.year}"
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day} – {end}"
    if first.year == last.year:
        return f"{first.day} {_MONTHS[first.month - 1]} – {end}"
    return f"{first.day} {_MONTHS[first.month - 1]} {first.year} – {end}"


def describe_km(km: float) -> str:
    return f"{km:.1f} km" if km < 10 else f"{km:,.0f} km"


def _plural(count: int, word: str) -> str:
    return f"{word}{'s' if count != 1 else ''}"


def journey_figures(view: JourneyView) -> list[Figure]:
    """The totals line: distance, days, places, photos (those there is something to say about)."""
    totals = view.totals
    figures = []
    if view.legs:
        flown = f"{describe_km(totals.flown_km)} flown" if totals.flown_km else None
        figures.append(Figure(describe_km(totals.distance_km), "travelled", flown))
    if totals.days:
        figures.append(Figure(str(totals.days), _plural(totals.days, "day")))
    if totals.places:
        figures.append(Figure(str(len(totals.places)), _plural(len(totals.places), "place")))
    figures.append(Figure(str(totals.photos), _plural(totals.photos, "photo")))
    return figures


def journey_summary(view: JourneyView) -> str:
    """One line for link previews: '3 photos · 12.4 km · 1 day · Lisbon, Sintra'."""
    totals = view.totals
    parts = [f"{totals.photos} {_plural(totals.photos, 'photo')}"]
    if view.legs:
        parts.append(describe_km(totals.distance_km))
    if totals.days:
        parts.append(f"{totals.days} {_plural(totals.days, 'day')}")
    names = _distinct(stop.place.name for stop in view.stops if stop.place is not None)
    if names:
        more = len(names) - 3
        parts.append(", ".join(names[:3]) + (f" and {more} more" if more > 0 else ""))
    return " · ".join(parts)


def _distinct(items: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
