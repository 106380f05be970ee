"""The journey in the shapes the web hands out: JSON (the page's data and a download, with a
versioned JSON Schema), GeoJSON (RFC 7946) and GPX 1.1. All three are drawn from the same
``JourneyView``, so they never disagree with the page or the reply."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import gpxpy.gpx
import jsonschema
import jsonschema.protocols
import jsonschema.validators

from waypost.apps.journeys.build import SCHEMA_VERSION, JourneyPhoto, JourneyView, Leg, Stop
from waypost.apps.journeys.geo import split_at_antimeridian, unwrap
from waypost.apps.journeys.sketch import leg_path, route_sketch
from waypost.apps.journeys.story import (
    StoryStop,
    cover_photo,
    describe_dates,
    describe_km,
    journey_figures,
    journey_summary,
    stop_lines,
    story_stops,
    timeline_days,
)


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
            "country": place.country, "city": place.city, "offset": place.offset,
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
        "route_breaks": route_breaks(view),
        "legs": [leg_json(leg) for leg in view.legs],
        "stops": [stop_json(stop) for stop in view.stops],
        "photos": [photo_json(photo, base) for photo in view.photos],
        "links": {"page": base, "geojson": f"{base}.geojson", "gpx": f"{base}.gpx"},
    }


def route_breaks(view: JourneyView) -> list[int]:
    """The indexes of the route points that start a new line: a privacy zone cut the route
    between each and the point before it, so no leg joins them."""
    joined = {(leg.start.public_id, leg.end.public_id) for leg in view.legs}
    return [index for index, (before, photo) in enumerate(zip(view.route, view.route[1:], strict=False), start=1)
            if (before.public_id, photo.public_id) not in joined]


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
    breaks = set(route_breaks(view))
    for index, photo in enumerate(view.route):
        if index in breaks:
            track.segments.append(segment)  # a privacy zone cut the route here: a new segment
            segment = gpxpy.gpx.GPXTrackSegment()
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


# --- the journey page ------------------------------------------------------------------------------


def _with_image(extras: Mapping[str, Any]) -> Any:
    """Whether a photo has images to show (``extras``: the repository's ``PhotoExtras`` by id)."""
    return lambda photo: (extra := extras.get(photo.public_id)) is None or extra.has_image


def page_context(view: JourneyView, extras: Mapping[str, Any]) -> dict[str, Any]:
    """What journey.html shows besides the journey itself: cover, sketch, figures, the
    numbered stops and the timeline told day by day."""
    return {"sketch": route_sketch(view), "days": timeline_days(view), "figures": journey_figures(view),
            "dates": describe_dates(view), "summary": journey_summary(view), "stops": stop_lines(view),
            "cover": cover_photo(view, _with_image(extras)),
            "distance": f"{describe_km(view.distance_km)} travelled" if view.legs else None}


def _story_stop_json(stop: StoryStop, has_image: Any) -> dict[str, Any]:
    pictured = next((photo for photo in stop.photos if has_image(photo)), None)
    return {"number": stop.number, "label": stop.label, "position": [_round(stop.position[0]),
                                                                     _round(stop.position[1])],
            "photos": [photo.public_id for photo in stop.photos],
            "cover": pictured.public_id if pictured is not None else None}


def page_data(view: JourneyView, extras: Mapping[str, Any], tiles: dict[str, str]) -> dict[str, Any]:
    """The page script's data: the journey's JSON, the tile layer, and the stops numbered as
    the cards, the sketch and the mail number them (the download keeps the engine's stops)."""
    has_image = _with_image(extras)
    return {**journey_json(view), "tiles": tiles,
            "numbered_stops": [_story_stop_json(stop, has_image) for stop in story_stops(view)]}
