"""Spherical geometry for journeys: distances, points along a great circle, centres.

A spherical Earth is off by at most 0.5 % against the ellipsoid, which no traveller will
notice on a map of their trip; the formulas stay short and well-behaved everywhere,
including near the poles and across the antimeridian.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius

LatLon = tuple[float, float]


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance between two points, in kilometres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _vector(lat: float, lon: float) -> tuple[float, float, float]:
    phi, lmb = math.radians(lat), math.radians(lon)
    return math.cos(phi) * math.cos(lmb), math.cos(phi) * math.sin(lmb), math.sin(phi)


def _latlon(x: float, y: float, z: float) -> LatLon:
    return math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))


def intermediate(a: LatLon, b: LatLon, fraction: float) -> LatLon:
    """The point ``fraction`` (0..1) of the way from ``a`` to ``b`` along the great circle."""
    va, vb = _vector(*a), _vector(*b)
    dot = max(-1.0, min(1.0, sum(p * q for p, q in zip(va, vb, strict=True))))
    angle = math.acos(dot)
    if angle < 1e-12:
        return a
    if math.pi - angle < 1e-9:  # antipodes: every great circle joins them; go via the pole-free meridian
        b = (b[0], b[1] + 1e-6)
        va, vb = _vector(*a), _vector(*b)
        angle = math.acos(max(-1.0, min(1.0, sum(p * q for p, q in zip(va, vb, strict=True)))))
    s = math.sin(angle)
    wa, wb = math.sin((1 - fraction) * angle) / s, math.sin(fraction * angle) / s
    return _latlon(*(wa * p + wb * q for p, q in zip(va, vb, strict=True)))


def arc(a: LatLon, b: LatLon, *, step_km: float = 100.0, max_points: int = 64) -> list[LatLon]:
    """Points along the great circle from ``a`` to ``b`` (both included), longitudes unwrapped
    so consecutive points never jump by more than 180 degrees (Leaflet draws them as one line)."""
    distance = great_circle_km(*a, *b)
    count = max(2, min(max_points, math.ceil(distance / step_km) + 1))
    points = [intermediate(a, b, i / (count - 1)) for i in range(count)]
    return unwrap(points)


def unwrap(points: Sequence[LatLon]) -> list[LatLon]:
    """Shift longitudes by whole turns so each differs from the previous by at most 180 degrees."""
    out: list[LatLon] = []
    for lat, lon in points:
        if out:
            previous = out[-1][1]
            lon += 360.0 * round((previous - lon) / 360.0)
        out.append((lat, lon))
    return out


def split_at_antimeridian(points: Sequence[LatLon]) -> list[list[LatLon]]:
    """Cut an unwrapped line where it crosses +/-180 degrees (RFC 7946 section 3.1.9), giving
    pieces whose longitudes all lie in [-180, 180]."""
    pieces: list[list[LatLon]] = [[]]
    for index, (lat, lon) in enumerate(points):
        if index:
            plat, plon = points[index - 1]
            turn_a, turn_b = math.floor((plon + 180) / 360), math.floor((lon + 180) / 360)
            if turn_a != turn_b:
                edge = 360 * max(turn_a, turn_b) - 180  # the unwrapped longitude of the meridian crossed
                crossing_lat = plat + (lat - plat) * (edge - plon) / (lon - plon)
                pieces[-1].append((crossing_lat, _wrap(edge, from_east=plon > lon)))
                pieces.append([(crossing_lat, _wrap(edge, from_east=plon < lon))])
        pieces[-1].append((lat, _wrap(lon)))
    return [piece for piece in pieces if len(piece) >= 2] or [[(lat, _wrap(lon)) for lat, lon in points]]


def _wrap(lon: float, *, from_east: bool | None = None) -> float:
    """Longitude in [-180, 180]; on the antimeridian itself, the side the line is on."""
    wrapped = (lon + 180.0) % 360.0 - 180.0
    if from_east is not None and abs(abs(wrapped) - 180.0) < 1e-9:
        return -180.0 if from_east else 180.0
    return wrapped


def centre(points: Iterable[LatLon]) -> LatLon:
    """The spherical mean of some points (right across the antimeridian, unlike averaging)."""
    x = y = z = 0.0
    count = 0
    for lat, lon in points:
        vx, vy, vz = _vector(lat, lon)
        x, y, z, count = x + vx, y + vy, z + vz, count + 1
    if count == 0:
        raise ValueError("centre of no points")
    if math.hypot(x, y, z) < 1e-12:
        raise ValueError("points are spread evenly round the globe: no centre")
    return _latlon(x, y, z)
