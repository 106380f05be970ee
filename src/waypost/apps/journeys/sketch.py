"""The route drawn by the server: an SVG on the page (so the journey shows with no script and
no tiles), and the same drawing in the preview image (``preview.py``) that the link preview
and the reply mail carry. Stops are numbered as everywhere else (``story.py``).

Points are projected with Web Mercator, like the map, after unwrapping longitudes along the
route so a journey across the antimeridian stays one continuous line. Ground legs are
straight; flights follow the great circle, as on the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from waypost.apps.journeys.build import JourneyView, Leg
from waypost.apps.journeys.geo import LatLon, arc, unwrap
from waypost.apps.journeys.story import story_stops

WIDTH, HEIGHT, PAD = 1000, 600, 40
MIN_SPAN = 0.00002  # of the Mercator square: about 800 m across, so one stop is not drawn at street level

Point = tuple[float, float]


@dataclass(frozen=True)
class Line:
    points: tuple[Point, ...]
    flight: bool

    @property
    def path(self) -> str:
        """SVG path data."""
        return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(self.points))


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    number: int
    label: str  # "Sintra, Lisbon, Portugal", or the coordinates
    place: str | None  # "Sintra"; None when no place is near


@dataclass(frozen=True)
class Sketch:
    lines: tuple[Line, ...]  # one per leg, in route order
    stops: tuple[Mark, ...]  # numbered like the stops list (story.py)
    strays: tuple[Point, ...]  # placed photos off the line (estimated, outliers, untimed GPS)
    width: int = WIDTH
    height: int = HEIGHT


def leg_path(leg: Leg) -> list[tuple[float, float]]:
    """Flights follow the great circle (an arc on the map); other legs are straight."""
    a, b = leg.start.placed_at, leg.end.placed_at
    return arc(a, b) if leg.flight else unwrap([a, b])


def _mercator(lat: float, lon: float) -> Point:
    lat = max(min(lat, 85.0), -85.0)
    return lon / 360 + 0.5, 0.5 - math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) / (2 * math.pi)


def _near(lon: float, reference: float) -> float:
    """``lon`` shifted by whole turns to lie within 180 degrees of ``reference``."""
    return lon + 360.0 * round((reference - lon) / 360.0)


def _geography(view: JourneyView) -> tuple[list[tuple[list[LatLon], bool]],
                                           list[tuple[LatLon, int, str, str | None]], list[LatLon]]:
    """Legs, stops and strays in degrees, longitudes continuous along the route."""
    legs: list[tuple[list[LatLon], bool]] = []
    for leg in view.legs:
        path = leg_path(leg)
        if legs:
            shift = _near(path[0][1], legs[-1][0][-1][1]) - path[0][1]
            path = [(lat, lon + shift) for lat, lon in path]
        legs.append((path, leg.flight))
    anchor = legs[0][0][0][1] if legs else next((p.position[1] for p in view.photos if p.position), 0.0)
    stops = [((s.position[0], _near(s.position[1], anchor)), s.number, s.label, s.name) for s in story_stops(view)]
    strays = [(p.position[0], _near(p.position[1], anchor)) for p in view.photos
              if p.position is not None and not p.on_route]
    return legs, stops, strays


def route_sketch(view: JourneyView, *, width: int = WIDTH, height: int = HEIGHT, pad: int = PAD) -> Sketch | None:
    """The route fitted into ``width`` x ``height`` (pixels, ``pad`` kept free at the edges);
    None when no photo has a place on the map."""
    legs, stops, strays = _geography(view)
    everything = [p for path, _ in legs for p in path] + [stop[0] for stop in stops] + strays
    if not everything:
        return None
    projected = [_mercator(lat, lon) for lat, lon in everything]
    xs, ys = [x for x, _ in projected], [y for _, y in projected]
    span = max(max(xs) - min(xs), (max(ys) - min(ys)) * (width - 2 * pad) / max(height - 2 * pad, 1), MIN_SPAN)
    scale = (width - 2 * pad) / span
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2

    def place(lat: float, lon: float) -> Point:
        x, y = _mercator(lat, lon)
        return width / 2 + (x - cx) * scale, height / 2 + (y - cy) * scale

    return Sketch(
        lines=tuple(Line(tuple(place(*p) for p in path), flight) for path, flight in legs),
        stops=tuple(Mark(*place(*where), number, label, name) for where, number, label, name in stops),
        strays=tuple(place(*p) for p in strays),
        width=width,
        height=height,
    )
