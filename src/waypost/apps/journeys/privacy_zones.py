"""Privacy zones: places a person keeps off every public output of their journeys.

(``zones.py`` beside this module is about time zones.) A zone is a circle, a centre and a
radius (500 m unless said otherwise), kept per person under their address without its +tag.
The person sets one by writing ``hide home`` in a journey's thread with a photo number or a
place name; the operator with ``waypost person zone add``.

What a share link shows is the journey rebuilt without the photos inside a zone
(:func:`public_view`): by their own fix or their estimated place, and with them every photo of
a stop that reaches into a zone. The route is cut where they were: the legs that would join the
photos on either side of a hidden stretch are left out, so no line leads into or out of a
zone, and a photo placed by time on such a leg loses its estimate. The owner's own reply reads
the whole journey.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.apps.journeys.build import (
    ESTIMATED,
    UNPLACED,
    JourneyPhoto,
    JourneyView,
    Locate,
    PhotoPoint,
    _totals,
    build_view,
)
from waypost.apps.journeys.geo import LatLon, great_circle_km
from waypost.errors import WaypostError
from waypost.mail.addresses import AddressError, address_key
from waypost.store.db import inserted_id
from waypost.store.models import privacy_zones, utcnow

DEFAULT_RADIUS_M = 500.0
MAX_RADIUS_M = 50_000.0
HOME = "home"
BY_MAIL, BY_OPERATOR = "mail", "operator"


class ZoneError(WaypostError):
    """A zone that cannot be set: coordinates or radius out of range, an unusable address."""


@dataclass(frozen=True)
class Zone:
    id: int
    address: str
    latitude: float
    longitude: float
    radius_m: float
    label: str | None
    source: str
    created_at: datetime

    def holds(self, position: LatLon) -> bool:
        return great_circle_km(self.latitude, self.longitude, *position) * 1000 <= self.radius_m


def person_key(address: str) -> str:
    """The key zones are kept under: the address without its +tag, as the gate compares senders."""
    try:
        return address_key(address)
    except AddressError as err:
        raise ZoneError(f"not an email address: {address!r}") from err


def add_zone(conn: Connection, address: str, latitude: float, longitude: float, *,
             radius_m: float = DEFAULT_RADIUS_M, label: str | None = None, source: str = BY_OPERATOR) -> Zone:
    """Add a zone for ``address`` in the caller's transaction. Raises ZoneError for a centre off
    the globe or a radius outside 1 m – 50 km."""
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise ZoneError(f"no such place: latitude {latitude} must be within ±90, longitude {longitude} within ±180")
    if not 1 <= radius_m <= MAX_RADIUS_M:
        raise ZoneError(f"a radius of {radius_m:g} m is not allowed: use 1 to {MAX_RADIUS_M:g} metres")
    key, now = person_key(address), utcnow()
    ident = inserted_id(conn.execute(privacy_zones.insert().values(
        address=key, latitude=latitude, longitude=longitude, radius_m=radius_m, label=label, source=source,
        created_at=now)))
    return Zone(ident, key, latitude, longitude, radius_m, label, source, now)


def zones_of(conn: Connection, address: str) -> list[Zone]:
    """The zones of a person, oldest first; none for an address that cannot be read."""
    try:
        key = person_key(address)
    except ZoneError:
        return []
    rows = conn.execute(sa.select(privacy_zones).where(privacy_zones.c.address == key)
                        .order_by(privacy_zones.c.id)).all()
    return [Zone(r.id, r.address, r.latitude, r.longitude, r.radius_m, r.label, r.source, r.created_at) for r in rows]


def remove_zones(conn: Connection, address: str, latitude: float, longitude: float) -> int:
    """Remove the person's zones centred at this point (to 5 decimals, about 1 m); how many went."""
    gone = [zone.id for zone in zones_of(conn, address)
            if round(zone.latitude, 5) == round(latitude, 5) and round(zone.longitude, 5) == round(longitude, 5)]
    if gone:
        conn.execute(privacy_zones.delete().where(privacy_zones.c.id.in_(gone)))
    return len(gone)


class PrivacyZones:
    """The operator's side (`waypost person zone`), each call its own transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, address: str, latitude: float, longitude: float, radius_m: float = DEFAULT_RADIUS_M,
            label: str | None = None) -> Zone:
        with self.engine.begin() as conn:
            return add_zone(conn, address, latitude, longitude, radius_m=radius_m, label=label)

    def list(self, address: str) -> list[Zone]:
        with self.engine.connect() as conn:
            return zones_of(conn, address)

    def remove(self, address: str, latitude: float, longitude: float) -> int:
        with self.engine.begin() as conn:
            return remove_zones(conn, address, latitude, longitude)


# --- what a share link shows ---------------------------------------------------------------


def hidden_photos(view: JourneyView, zones: Sequence[Zone]) -> tuple[JourneyPhoto, ...]:
    """The photos a share link leaves out: inside a zone by their fix or their estimate, and
    every photo of a stop that has one of them or whose centre is inside."""
    if not zones:
        return ()

    def inside(position: LatLon | None) -> bool:
        return position is not None and any(zone.holds(position) for zone in zones)

    hidden = {p.public_id for p in view.photos if inside(p.position) or inside(p.point.gps)}
    for stop in view.stops:
        if inside(stop.position) or any(p.public_id in hidden for p in stop.photos):
            hidden.update(p.public_id for p in stop.photos)
    return tuple(p for p in view.photos if p.public_id in hidden)


def public_view(view: JourneyView, points: Sequence[PhotoPoint], zones: Sequence[Zone], *,
                locate: Locate | None = None) -> JourneyView:
    """The journey as its share link shows it: rebuilt without the hidden photos, and the
    route cut where they were (see the module's doc). ``view`` is the whole journey."""
    hidden = hidden_photos(view, zones)
    if not hidden:
        return view
    gone = {p.public_id for p in hidden}
    moments = [p.taken_at for p in hidden if p.taken_at is not None]
    public = build_view(view.title, view.token, view.created_at, [p for p in points if p.public_id not in gone],
                        rules=view.rules, locate=locate, updated_at=view.updated_at)
    cuts = [(leg.start.taken_at, leg.end.taken_at) for leg in public.legs
            if _spans(leg.start.taken_at, leg.end.taken_at, moments)]
    legs = tuple(leg for leg in public.legs if (leg.start.taken_at, leg.end.taken_at) not in cuts)
    photos = tuple(_unplaced(p) if p.placement == ESTIMATED and _on_cut(p.taken_at, cuts) else p
                   for p in public.photos)
    return replace(public, photos=photos, legs=legs, totals=_totals(photos, legs, public.stops))


def _spans(start: datetime | None, end: datetime | None, moments: Iterable[datetime]) -> bool:
    return start is not None and end is not None and any(start <= moment <= end for moment in moments)


def _on_cut(moment: datetime | None, cuts: Sequence[tuple[datetime | None, datetime | None]]) -> bool:
    return any(_spans(start, end, [moment]) for start, end in cuts) if moment is not None else False


def _unplaced(photo: JourneyPhoto) -> JourneyPhoto:
    return replace(photo, placement=UNPLACED, position=None, estimate_gap=None)


# --- hide home, by mail ----------------------------------------------------------------------


def fold(text: str) -> str:
    """Case and accents gone: "Belém" and "belem" are the same place to a person typing."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def place_in(view: JourneyView, name: str) -> LatLon | None:
    """Where ``name`` is in the journey: the first stop whose place (or its label) is called so,
    else the first photo whose file name (as the owner's mail lists it, "Belém.jpg") is."""
    wanted = fold(name)
    for stop in view.stops:
        names = [stop.label] + ([stop.place.name] if stop.place is not None else [])
        if any(fold(candidate) == wanted for candidate in names):
            return stop.position
    for photo in view.photos:
        stem = (photo.filename or "").rsplit(".", 1)[0]
        if stem and fold(stem) == wanted and (place := photo.point.gps or photo.position) is not None:
            return place
    return None


def photo_place(view: JourneyView, number: int) -> LatLon | None:
    """Where photo ``number`` (as the owner's mail numbers it) is: its own fix, else its estimate."""
    photo = next((p for p in view.photos if p.number == number), None)
    return None if photo is None else photo.point.gps or photo.position


def place_names(view: JourneyView) -> list[str]:
    """The journey's named places, in order, each once (what the owner may write after `hide home`)."""
    return list(dict.fromkeys(stop.place.name for stop in view.stops if stop.place is not None))


# "photo 3", "Photo #3", "picture no. 3", "3"
PHOTO = re.compile(r"^(?:(?:photo|picture|pic|image)\s*)?(?:#|no\.?)?\s*(?P<number>\d{1,5})$", re.IGNORECASE)


@dataclass(frozen=True)
class Hidden:
    """What ``hide home`` did: the zone added (None: the photo or place was not found)."""

    zone: Zone | None
    hidden: tuple[JourneyPhoto, ...]  # every photo of the journey its share link now leaves out
    places: tuple[str, ...]  # the journey's place names, to say what may be written instead


def hide_home(conn: Connection, view: JourneyView, owner: str, where: str) -> Hidden:
    """``hide home photo 3`` / ``hide home Belém``: a zone of the default radius around that photo
    or place of ``view`` (the whole journey, as the owner's mail numbers it), for ``owner``."""
    number = PHOTO.match(where.strip())
    centre = photo_place(view, int(number.group("number"))) if number else place_in(view, where) if where else None
    places = tuple(place_names(view))
    if centre is None:
        return Hidden(None, (), places)
    zone = add_zone(conn, owner, *centre, label=HOME, source=BY_MAIL)
    return Hidden(zone, hidden_photos(view, zones_of(conn, owner)), places)
