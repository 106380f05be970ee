"""The journey as the web shows it: JSON for scripts and downloads, context for templates."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from waypost.apps.journeys.build import SCHEMA_VERSION, JourneyView, PhotoPoint


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _local(point: PhotoPoint) -> str | None:
    if point.taken_at is None or point.utc_offset_minutes is None:
        return None
    return (point.taken_at + timedelta(minutes=point.utc_offset_minutes)).replace(tzinfo=None).isoformat()


def photo_json(point: PhotoPoint, base: str) -> dict[str, Any]:
    return {
        "id": point.public_id,
        "filename": point.filename,
        "taken_at": _iso(point.taken_at),
        "local_time": _local(point),
        "utc_offset_minutes": point.utc_offset_minutes,
        "time_source": point.time_source,
        "latitude": point.latitude,
        "longitude": point.longitude,
        "placed": point.placed,
        "problem": point.problem,
        "thumbnail_url": f"{base}/photos/{point.public_id}/thumb.jpg",
        "display_url": f"{base}/photos/{point.public_id}/display.jpg",
    }


def journey_json(view: JourneyView) -> dict[str, Any]:
    base = f"/j/{view.token}"
    return {
        "schema_version": SCHEMA_VERSION,
        "title": view.title,
        "created_at": _iso(view.created_at),
        "start": _iso(view.start),
        "end": _iso(view.end),
        "distance_km": view.distance_km,
        "photo_count": len(view.photos),
        "placed_count": len(view.route),
        "route": [[p.latitude, p.longitude] for p in view.route],
        "photos": [photo_json(p, base) for p in view.photos],
    }
