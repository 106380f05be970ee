"""A person's export: one zip of everything Waypost holds about them (``export`` by mail,
``waypost person export``), and the expiring link that hands it out (``/x/<token>``).

The owner's export carries their own full data: coordinates as recorded (the public outputs round
them to 5 decimals), the photos' own file names and cameras (which the public outputs leave out).
The link's token holds 192 random bits and is kept only as a SHA-256; each download is audited
with a truncated IP, and an expired link answers "gone" (the zip itself is deleted then).
"""

from __future__ import annotations

import io
import json
import secrets
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gpxpy.gpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost import audit
from waypost.apps.erasure import Person
from waypost.apps.journeys import repository
from waypost.apps.journeys.build import JourneyView, Locate, RouteRules
from waypost.link_tokens import new_token, token_hash
from waypost.store.blobs import BlobStore
from waypost.store.models import (
    allowlist,
    audit_log,
    exports,
    feedback_events,
    inbound_messages,
    journeys,
    outbound_messages,
    photos,
    suppression_log,
    suppressions,
    utcnow,
)

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the same bytes for the same data: a rebuilt zip is the same zip
DOWNLOAD_ACTION = "export.download"
README = """\
Everything Waypost holds about {address}, as of {at}.

README.txt            this file
person.json           your allowlist entries, your suppression entries (addresses we send
                      nothing to) and their history
messages/inbound.json every message we received from you: when, from where (network
                      address of the sending server), its subject, Message-ID, what we did
                      with it and its authentication results. The messages themselves are
                      deleted once processed, with the original photos in them.
messages/outbound.json every message we sent you: when, its subject and delivery state
feedback.json         bounces and complaints about our mail to you, as reported to us
audit.json            records that name you: changes to your entries, views of your
                      journeys' pages (network of the viewer only), downloads of exports
journeys/<n>/journey.json     a journey: title, dates, photos in order with the time and place
                              each was taken (as recorded), file names and cameras, stops
journeys/<n>/journey.geojson  the same as GeoJSON (RFC 7946): photos as points, the route as a line
journeys/<n>/journey.gpx      the same as GPX 1.1: the route as a track, photos as waypoints
journeys/<n>/images/          the images we show of each photo (without any metadata)

Times are UTC (ISO 8601) unless they carry their own offset.
"""


@dataclass(frozen=True)
class Download:
    """An export ready to hand out."""

    id: str
    blob_key: str
    filename: str


@dataclass(frozen=True)
class Expired:
    """An export whose link has expired (the zip is gone)."""

    id: str



def build_zip(conn: Connection, blobs: BlobStore, address: str, *, rules: RouteRules | None = None,
              locate: Locate | None = None, at: datetime | None = None) -> bytes:
    """The export of ``address`` (as the gate takes it: any case, any +tag). Raises
    ``AddressError``; a missing image is left out (listed in its journey's ``missing_images``)."""
    person = Person.of(address)
    at = at or utcnow()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        def add(name: str, data: bytes | str) -> None:
            archive.writestr(zipfile.ZipInfo(name, ZIP_TIME), data)

        add("README.txt", README.format(address=person.key, at=_iso(at)))
        add("person.json", _json(_person(conn, person)))
        add("messages/inbound.json", _json(_rows(conn, inbound_messages, sa.or_(
            person.named_by(inbound_messages.c.from_address), person.named_by(inbound_messages.c.mail_from)),
            leave_out=("blob_key",))))
        add("messages/outbound.json", _json(_rows(conn, outbound_messages, person.named_by(
            outbound_messages.c.recipient), leave_out=("raw",))))
        add("feedback.json", _json(_rows(conn, feedback_events, person.named_by(feedback_events.c.recipient))))
        owned = conn.execute(sa.select(journeys).where(person.named_by(journeys.c.owner_address))
                             .order_by(journeys.c.id)).all()
        add("audit.json", _json(_audit(conn, person, [str(j.id) for j in owned])))
        for number, journey in enumerate(owned, start=1):
            for name, data in _journey_files(conn, blobs, journey, rules=rules, locate=locate):
                add(f"journeys/{number}/{name}", data)
    return buffer.getvalue()


def export_to_file(engine: Engine, blobs: BlobStore, address: str, target: Path, *,
                   rules: RouteRules | None = None, locate: Locate | None = None) -> int:
    """``build_zip`` written to ``target``, which must not exist (raises ``FileExistsError``);
    returns its size."""
    with engine.connect() as conn:
        data = build_zip(conn, blobs, address, rules=rules, locate=locate)
    with open(target, "xb") as out:
        out.write(data)
    return len(data)


def _person(conn: Connection, person: Person) -> dict[str, Any]:
    return {
        "address": person.key,
        "allowlist": _rows(conn, allowlist, sa.and_(allowlist.c.kind == "address", person.named_by(allowlist.c.value))),
        "suppressions": _rows(conn, suppressions, person.named_by(suppressions.c.address)),
        "suppression_history": _rows(conn, suppression_log, person.named_by(suppression_log.c.address)),
    }


def _audit(conn: Connection, person: Person, journey_ids: list[str]) -> list[dict[str, Any]]:
    export_ids = sa.select(exports.c.id).where(person.named_by(exports.c.address))
    query = sa.or_(person.named_by(audit_log.c.target),
                   sa.and_(audit_log.c.action == "journey.view", audit_log.c.target.in_(journey_ids)),
                   sa.and_(audit_log.c.action == DOWNLOAD_ACTION, audit_log.c.target.in_(export_ids)),
                   person.maybe_in(audit_log.c.detail))
    return [row for row in _rows(conn, audit_log, query) if person.mentioned_in(row["detail"])
            or row["action"] in ("journey.view", DOWNLOAD_ACTION) or person.mentioned_in(row["target"])]


def _journey_files(conn: Connection, blobs: BlobStore, journey: sa.Row, *, rules: RouteRules | None,
                   locate: Locate | None) -> Iterable[tuple[str, bytes | str]]:
    view = repository.load_view(conn, journey.token, rules=rules, locate=locate)
    assert view is not None  # read in the same transaction that found the row
    rows = {r.public_id: r for r in conn.execute(sa.select(photos).where(photos.c.journey_id == journey.id))}
    images, missing = [], []
    for photo in view.photos:
        key = rows[photo.point.public_id].display_key or rows[photo.point.public_id].thumb_key
        if key and blobs.exists(key):
            images.append((f"images/photo-{photo.number}.jpg", blobs.get(key)))
        elif key:
            missing.append(photo.number)
    yield "journey.json", _json(_journey(journey, view, rows, missing))
    yield "journey.geojson", _json(_geojson(view, rows))
    yield "journey.gpx", _gpx(view, rows)
    yield from images


def _journey(journey: sa.Row, view: JourneyView, rows: dict[str, sa.Row], missing: list[int]) -> dict[str, Any]:
    return {
        "title": journey.title, "created_at": _iso(journey.created_at), "updated_at": _iso(journey.updated_at),
        "share_link_revoked_at": _iso(journey.revoked_at), "share_link_expires_at": _iso(journey.expires_at),
        "start": _iso(view.start), "end": _iso(view.end),
        "distance_km": view.totals.distance_km, "places": list(view.totals.places),
        "countries": list(view.totals.countries),
        "photos": [{
            "number": p.number, "image": f"images/photo-{p.number}.jpg", "file_name": rows[p.point.public_id].filename,
            "camera_make": rows[p.point.public_id].make, "camera_model": rows[p.point.public_id].model,
            "taken_at": _iso(p.point.taken_at), "utc_offset_minutes": p.point.utc_offset_minutes,
            "time_source": p.point.time_source, "latitude": p.point.latitude, "longitude": p.point.longitude,
            "altitude": p.point.altitude, "placement": p.placement, "stop": p.stop, "problem": p.point.problem,
        } for p in view.photos],
        "stops": [{"number": s.number, "latitude": s.position[0], "longitude": s.position[1],
                   "arrival": _iso(s.arrival), "departure": _iso(s.departure),
                   "place": s.place.label if s.place is not None else None} for s in view.stops],
        "missing_images": missing,
    }


def _geojson(view: JourneyView, rows: dict[str, sa.Row]) -> dict[str, Any]:
    features: list[dict[str, Any]] = [{
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": _lon_lat(p.point.longitude, p.point.latitude, p.point.altitude)},
        "properties": {"number": p.number, "file_name": rows[p.point.public_id].filename,
                       "taken_at": _iso(p.point.taken_at)},
    } for p in view.photos if p.point.latitude is not None and p.point.longitude is not None]
    route = [[p.point.longitude, p.point.latitude] for p in view.route
             if p.point.latitude is not None and p.point.longitude is not None]
    if len(route) > 1:
        features.append({"type": "Feature", "geometry": {"type": "LineString", "coordinates": route},
                         "properties": {"title": view.title}})
    return {"type": "FeatureCollection", "features": features}


def _gpx(view: JourneyView, rows: dict[str, sa.Row]) -> str:
    document = gpxpy.gpx.GPX()
    segment = gpxpy.gpx.GPXTrackSegment()
    for p in view.route:
        if p.point.latitude is not None and p.point.longitude is not None:
            segment.points.append(gpxpy.gpx.GPXTrackPoint(p.point.latitude, p.point.longitude,
                                                          elevation=p.point.altitude, time=p.point.taken_at))
    track = gpxpy.gpx.GPXTrack(name=view.title)
    track.segments.append(segment)
    document.tracks.append(track)
    for p in view.photos:
        if p.point.latitude is not None and p.point.longitude is not None:
            document.waypoints.append(gpxpy.gpx.GPXWaypoint(
                p.point.latitude, p.point.longitude, elevation=p.point.altitude, time=p.point.taken_at,
                name=rows[p.point.public_id].filename or f"Photo {p.number}"))
    return document.to_xml(version="1.1")


def _lon_lat(lon: float | None, lat: float | None, alt: float | None) -> list[float | None]:
    return [lon, lat] if alt is None else [lon, lat, alt]


# -- requests, links and downloads --------------------------------------------------------


def request(conn: Connection, address: str, *, source_message_id: str | None) -> tuple[str, bool]:
    """The export for a request (one per requesting mail), in the caller's transaction:
    (its id, whether it is new)."""
    if source_message_id is not None:
        found = conn.execute(sa.select(exports.c.id).where(exports.c.source_message_id == source_message_id)).scalar()
        if found is not None:
            return str(found), False
    export_id = secrets.token_hex(16)
    conn.execute(exports.insert().values(id=export_id, address=Person.of(address).key,
                                         source_message_id=source_message_id, created_at=utcnow()))
    return export_id, True


def blob_key(export_id: str) -> str:
    return f"exports/{export_id}.zip"


def mark_ready(conn: Connection, export_id: str, size: int, expires_at: datetime) -> str:
    """Record the zip as stored and give the export a new link; returns its token (shown once)."""
    token = new_token()
    conn.execute(exports.update().where(exports.c.id == export_id).values(
        token_hash=token_hash(token), blob_key=blob_key(export_id), size=size, ready_at=utcnow(),
        expires_at=expires_at))
    return token


def load(conn: Connection, export_id: str) -> sa.Row | None:
    return conn.execute(sa.select(exports).where(exports.c.id == export_id)).first()


def expire(conn: Connection, blobs: BlobStore, export_id: str) -> bool:
    """Delete the zip of an export whose link has expired. Its row stays, so the link can say
    "gone", but names nobody any more (its address is emptied). True when there was one to
    delete."""
    row = load(conn, export_id)
    if row is None or row.blob_key is None or (row.expires_at is not None and row.expires_at > utcnow()):
        return False
    blobs.delete(row.blob_key)
    conn.execute(exports.update().where(exports.c.id == export_id).values(blob_key=None, address=""))
    return True


class Downloads:
    """What the web's ``/x/<token>`` asks: the export behind a token, and the audit of each download."""

    def __init__(self, engine: Engine, blobs: BlobStore) -> None:
        self.engine = engine
        self.blobs = blobs

    def find(self, token: str) -> Download | Expired | None:
        """None: no such link (never was, or erased)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(exports).where(exports.c.token_hash == token_hash(token))).first()
        if row is None:
            return None
        if row.blob_key is None or (row.expires_at is not None and row.expires_at <= utcnow()) \
                or not self.blobs.exists(row.blob_key):
            return Expired(row.id)
        return Download(row.id, row.blob_key, f"waypost-export-{row.created_at:%Y-%m-%d}.zip")

    def record(self, download: Download, ip: str | None) -> None:
        audit.record_alone(self.engine, DOWNLOAD_ACTION, actor="owner", target=download.id, ip=ip)


def _rows(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool],
          leave_out: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    columns = [c for c in table.c if c.name not in leave_out]
    primary = next(iter(table.primary_key.columns))
    return [{k: _plain(v) for k, v in row._mapping.items()}
            for row in conn.execute(sa.select(*columns).where(where).order_by(primary))]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value.tzinfo is UTC else value.isoformat()


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
