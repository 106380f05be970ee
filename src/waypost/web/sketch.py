"""A server-drawn SVG of the route, so the journey is visible with no script and no tiles."""

from __future__ import annotations

import math
from dataclasses import dataclass

from waypost.apps.journeys.build import JourneyView

WIDTH, HEIGHT, PAD = 1000, 600, 40


@dataclass(frozen=True)
class Sketch:
    path: str  # SVG path data for the route line
    points: tuple[tuple[float, float, int], ...]  # x, y, 1-based photo number on the route
    width: int = WIDTH
    height: int = HEIGHT


def _mercator(lat: float, lon: float) -> tuple[float, float]:
    lat = max(min(lat, 85.0), -85.0)
    return lon / 360 + 0.5, 0.5 - math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) / (2 * math.pi)


def route_sketch(view: JourneyView) -> Sketch | None:
    coords = [_mercator(p.latitude, p.longitude) for p in view.route]  # type: ignore[arg-type]
    if not coords:
        return None
    xs, ys = [c[0] for c in coords], [c[1] for c in coords]
    span = max(max(xs) - min(xs), (max(ys) - min(ys)) * WIDTH / HEIGHT, 1e-9)
    scale = (WIDTH - 2 * PAD) / span
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    placed = [(WIDTH / 2 + (x - cx) * scale, HEIGHT / 2 + (y - cy) * scale) for x, y in coords]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(placed))
    return Sketch(path, tuple((x, y, i + 1) for i, (x, y) in enumerate(placed)))
