"""Where a photo was taken, in words a traveller would use: the place, the city it is part
of, its region and country.

Offline. The places are GeoNames' "cities1000" (every populated place of 1,000 people or
more and every seat of an administrative division, about 141,000 rows, CC BY 4.0), shipped
in ``data/places.tsv.xz`` (2 MB) with GeoNames' own spellings, accents included ("Algés",
"Mukō"); ``scripts/derive-places`` rebuilds that file from the package registry. The rows
live in a few numpy arrays and a k-d tree of unit vectors: nearest by straight-line distance
between unit vectors is nearest by great-circle distance, so answers stay right near the
poles and across the antimeridian, where differences of latitude and longitude mislead.

Which place names a point is not simply the nearest centre: a place reaches about as far as
its population would fill at 5,000 people per km², and the point is named after the place
it is deepest inside, measured in those reaches (``_reach_km``). So Fushimi Inari, 6 km
from Kyoto's centre and 6.5 km from Mukō's, is in Kyoto; the Togetsukyō bridge, 200 m from
Arashiyama, is in Arashiyama. A smaller place within its own reach (at least 1 km) of the
point names its part of that city ("Umeda" in Osaka). A point well away from a large
place's centre says how far and which way ("Kyoto (4 km S)"), so a day across a city
reads as several places.

Country names come from ``data/countries.json``: ISO 3166-1 alpha-2 codes, plus ``XK``
(Kosovo), the user-assigned code GeoNames uses.
"""

from __future__ import annotations

import csv
import json
import logging
import lzma
import math
import os
import tempfile
import threading
import zipfile
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from waypost.apps.journeys.geo import EARTH_RADIUS_KM

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

log = logging.getLogger(__name__)
StrPath = str | os.PathLike[str]

MAX_DISTANCE_KM = 100.0  # farther than this from any town is open sea or wilderness: no name beats a wrong one
SOURCE_COLUMNS = ["name", "latitude", "longitude", "feature", "country", "region", "population"]
CACHE_FILE = "places-index.npz"
PEOPLE_PER_KM2 = 5000.0  # a town's reach: the disc its population would fill at a city's density
MIN_REACH_KM = 0.25  # (1,000 people, the smallest place in the data)
PART_KM = 1.0  # a smaller place at most this far (or within its own reach) names the part of a city ...
PART_SHARE = 0.25  # ... if it has at most this share of the city's people (else it is a town of its own)
OUTSIDE = 3.0  # deeper than this many reaches from every place is in none: the nearest centre names it
CITY_POPULATION = 100_000  # from this size a place has parts worth telling apart by direction
OFFSET_KM = {True: 1.5, False: 3.0}  # from the centre of a city (True) or a town: say how far and which way
NEIGHBOURS = 16  # candidates read from the tree before the exact search by reach
REMEMBERED = 4096  # answers kept per index, by point
_CACHE_FORMAT = 2  # bump when the arrays below change meaning
_CACHED_ARRAYS = {"key", "xyz", "name_text", "name_ends", "region_text", "region_ends", "region_of", "country",
                  "population"}
_DATA = Path(__file__).parent / "data"
_COUNTRIES = _DATA / "countries.json"
_COMPASS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
_LIMITS = {"latitude": 90.0, "longitude": 180.0}


@dataclass(frozen=True)
class Place:
    """A populated place as GeoNames spells it ("Zürich", "Algés"), with its country's English name."""

    name: str  # the place the point is in: a town, a city, or the part of a city ("Umeda")
    region: str | None  # first-level division (state, province); None where GeoNames has none
    country_code: str  # ISO 3166-1 alpha-2
    country: str
    city: str | None = None  # the larger place ``name`` is part of; None when ``name`` is the town itself
    offset: str | None = None  # how far and which way from ``name``'s centre ("4 km S"), when that far out

    @property
    def label(self) -> str:
        """'Sintra, Lisbon, Portugal', 'Umeda, Osaka, Japan', 'Kyoto (4 km S), Japan'; a part equal
        to an earlier one is left out ('Lisbon, Portugal')."""
        parts: list[str] = []
        for part in (self.name, self.city, self.region, self.country):
            if part and part.casefold() not in (seen.casefold() for seen in parts):
                parts.append(part)
        if self.offset:
            parts[0] = f"{parts[0]} ({self.offset})"
        return ", ".join(parts)

    @property
    def town(self) -> str:
        """The town or city, without its parts: 'Osaka' for Umeda."""
        return self.city or self.name


def country_name(code: str) -> str:
    """The English short name for an ISO 3166-1 alpha-2 code; an unknown code is returned as it is."""
    return _country_names().get(code.upper(), code)


def check_coordinates(latitude: float, longitude: float) -> tuple[float, float]:
    """The pair as floats. Raises ValueError for NaN, infinity or a value out of range, TypeError for a non-number."""
    for axis, value in (("latitude", latitude), ("longitude", longitude)):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{axis} must be a number, not {type(value).__name__}")
        limit = _LIMITS[axis]
        if not math.isfinite(value) or abs(value) > limit:
            raise ValueError(f"{axis} {value!r} is not a coordinate: it must be finite and within ±{limit:g} degrees")
    return float(latitude), float(longitude)


def bundled_source() -> Path:
    """The places file shipped with Waypost (GeoNames cities1000, see ``scripts/derive-places``)."""
    return _DATA / "places.tsv.xz"


def common_name(places: Iterable[Place]) -> str | None:
    """What a set of stops has in common, at the finest level they share: one place's label,
    else the town ('Kyoto, Japan'), else the country ('Japan'); None for several countries or none."""
    unique = {place.label: place for place in places}
    if not unique:
        return None
    if len(unique) == 1:
        return next(iter(unique))
    towns = {(place.town, place.region, place.country) for place in unique.values()}
    if len(towns) == 1:
        town, region, country = next(iter(towns))
        return Place(town, region, "", country).label
    countries = {place.country for place in unique.values()}
    return next(iter(countries)) if len(countries) == 1 else None


class PlaceIndex:
    """The populated place a point is in, from a GeoNames cities file (see the module's docstring).

    Nothing is read until the first lookup; that one reads the file (1.1 s of CPU here) or, when
    ``cache_dir`` is given, a prepared copy of it (a tenth of that). The prepared copy is
    rebuilt whenever the source file's size or modification time changes. Lookups are safe
    from any number of threads at once. Raises FileNotFoundError at the first lookup when
    the source is missing; a cache that cannot be written is logged and lived without.
    """

    def __init__(self, source: StrPath | None = None, *, cache_dir: StrPath | None = None) -> None:
        self._source = Path(source) if source is not None else None
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._tables: _Tables | None = None
        self._lock = threading.Lock()
        # a journey is rebuilt on every read, naming the same stops again: remember recent answers
        self._remembered = lru_cache(maxsize=REMEMBERED)(self._name_point)

    def lookup(self, latitude: float, longitude: float, *, max_distance_km: float = MAX_DISTANCE_KM) -> Place | None:
        """The place the point is deepest inside (distance over reach), or None when no place's
        centre is within ``max_distance_km``.

        Raises ValueError for coordinates that are not finite or out of range (see ``check_coordinates``).
        """
        latitude, longitude = check_coordinates(latitude, longitude)
        return self._remembered(latitude, longitude, _chord_for(max_distance_km))

    def lookup_many(
        self, points: Iterable[tuple[float, float]], *, max_distance_km: float = MAX_DISTANCE_KM
    ) -> list[Place | None]:
        """``lookup`` for each (latitude, longitude) pair, in order."""
        checked = [check_coordinates(latitude, longitude) for latitude, longitude in points]
        bound = _chord_for(max_distance_km)
        return [self._remembered(latitude, longitude, bound) for latitude, longitude in checked]

    def load(self) -> None:
        """Read the index now rather than at the first lookup (`waypost serve` and `waypost
        worker` call this at start, so the first mail does not wait for it). Raises as the
        first lookup would."""
        self._loaded()

    def _name_point(self, latitude: float, longitude: float, bound: float) -> Place | None:
        vector = unit_vectors(np.array([latitude]), np.array([longitude]))[0]
        return self._loaded().name_point(vector, bound)

    def _loaded(self) -> _Tables:
        tables = self._tables
        if tables is None:
            with self._lock:
                if self._tables is None:
                    self._tables = _Tables(self._arrays())
                tables = self._tables
        return tables

    def _arrays(self) -> dict[str, np.ndarray]:
        source = self._source or bundled_source()
        stat = source.stat()
        key = np.array([_CACHE_FORMAT, stat.st_size, stat.st_mtime_ns], dtype=np.int64)
        if self._cache_dir is None:
            return read_source(source)
        cache_path = self._cache_dir / CACHE_FILE
        arrays = _read_cache(cache_path, key)
        if arrays is None:
            arrays = read_source(source)
            _write_cache(cache_path, {**arrays, "key": key})
        return arrays


_DEFAULT_INDEX = PlaceIndex()  # costs nothing until its first lookup


def default_index() -> PlaceIndex:
    """The index shared by the whole process, over the bundled cities file."""
    return _DEFAULT_INDEX


def unit_vectors(latitudes: np.ndarray, longitudes: np.ndarray) -> np.ndarray:
    """Earth-centred (x, y, z) on the unit sphere, one row per point; degrees in."""
    phi, lmb = np.radians(latitudes), np.radians(longitudes)
    return np.column_stack((np.cos(phi) * np.cos(lmb), np.cos(phi) * np.sin(lmb), np.sin(phi)))


def read_source(source: Path) -> dict[str, np.ndarray]:
    """Read a places file (``SOURCE_COLUMNS``, tab-separated, UTF-8; xz-compressed when its name
    ends in ``.xz``) into the arrays a ``PlaceIndex`` is built from.

    Streams the rows into compact buffers so the whole file is never held as Python objects.
    Raises ValueError, naming the line, for a header or a row that is not of that form."""
    latitudes, longitudes, name_ends, region_of, population = array("d"), array("d"), array("q"), array("i"), array("q")
    names, countries = bytearray(), bytearray()
    regions = _Interner()
    with _open_text(source) as rows:
        reader = csv.reader(rows, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        header = next(reader, None)
        if header != SOURCE_COLUMNS:
            raise ValueError(f"{source} has columns {header}, expected {SOURCE_COLUMNS}")
        for line, row in enumerate(reader, start=2):
            try:
                name, lat, lon, _feature, code, region, people = row
                latitudes.append(float(lat))
                longitudes.append(float(lon))
                population.append(int(people or 0))
            except ValueError as err:
                raise ValueError(f"{source} line {line} is not a place row ({err})") from err
            names += name.encode()
            name_ends.append(len(names))
            region_of.append(regions.id_of(region) if region else -1)
            countries += code.encode("ascii", "replace")[:2].ljust(2)
    region_text, region_ends = regions.packed()
    return {
        "xyz": unit_vectors(np.frombuffer(latitudes), np.frombuffer(longitudes)),
        "name_text": np.frombuffer(bytes(names), dtype=np.uint8),
        "name_ends": np.frombuffer(name_ends, dtype=np.int64),
        "region_text": region_text,
        "region_ends": region_ends,
        "region_of": np.frombuffer(region_of, dtype=np.intc),
        "country": np.frombuffer(bytes(countries), dtype="S2"),
        "population": np.frombuffer(population, dtype=np.int64),
    }


def _open_text(source: Path) -> TextIO:
    if source.suffix == ".xz":
        return lzma.open(source, "rt", encoding="utf-8", newline="")
    return source.open(encoding="utf-8", newline="")


class _Tables:
    """The loaded index: the tree plus per-row names, regions, country codes and reaches."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.size = len(arrays["xyz"])
        columns = ("name_ends", "region_of", "country", "population")
        if any(len(arrays[column]) != self.size for column in columns):
            raise ValueError("place arrays disagree in length")
        # Imported here: scipy.spatial alone takes ~0.8 s and ~37 MB, which only a lookup should pay.
        from scipy.spatial import cKDTree

        # Unbalanced, uncompacted: builds in half the time and queries as fast on this data.
        self.tree: cKDTree = cKDTree(arrays["xyz"], balanced_tree=False, compact_nodes=False)
        self.xyz = arrays["xyz"]
        self.names = _Strings(arrays["name_text"], arrays["name_ends"])
        self.regions = _Strings(arrays["region_text"], arrays["region_ends"])
        self.region_of = arrays["region_of"]
        self.countries = arrays["country"]
        self.population = arrays["population"]
        self.reach = _reach_km(self.population)
        self.tiers = [_Tier(rows, float(self.reach[rows].max()),
                            cKDTree(arrays["xyz"][rows], balanced_tree=False, compact_nodes=False))
                      for rows in _by_reach(self.reach)]

    def name_point(self, vector: np.ndarray, bound: float) -> Place | None:
        """The place the point (a unit vector) is deepest inside, among those within ``bound`` (a chord)."""
        if not self.size:
            return None
        chords, rows = self.tree.query(vector, k=min(NEIGHBOURS, self.size), distance_upper_bound=bound)
        chords, rows = np.atleast_1d(chords), np.atleast_1d(rows)
        near = rows[chords <= bound]
        if not len(near):
            return None
        best = float(np.min(self._depth(vector, near)))
        # a place can be deeper only if nearer than best depth × its reach: search each tier of
        # reaches that far (unless the neighbours already cover it), which finds every such place
        covered = float(chords[-1]) if len(near) == NEIGHBOURS else bound
        parts = [near]
        for tier in self.tiers:
            radius = min(_chord_for(best * tier.widest * (1 + 1e-9)) if best > 0 else 0.0, bound)
            if radius > covered:
                parts.append(tier.rows[np.array(tier.tree.query_ball_point(vector, radius), dtype=np.int64)])
        found = np.unique(np.concatenate(parts))
        depths = self._depth(vector, found)
        if float(depths.min()) > OUTSIDE:  # in no place: the nearest one, with how far and which way
            depths = self._distances_km(vector, found)
        home = int(found[np.lexsort((found, depths))[0]])  # ties: the lower row, for a stable answer
        return self._place(vector, home, near)

    def _distances_km(self, vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        cosines = np.clip(self.xyz[rows] @ vector, -1.0, 1.0)
        return np.arccos(cosines) * EARTH_RADIUS_KM

    def _depth(self, vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self._distances_km(vector, rows) / self.reach[rows]

    def _place(self, vector: np.ndarray, home: int, near: np.ndarray) -> Place:
        region = int(self.region_of[home])
        code = self.countries[home].decode("ascii")
        part = self._part(vector, home, near)
        name, city = (self.names[part], self.names[home]) if part is not None else (self.names[home], None)
        offset = None if part is not None else self._offset(vector, home)
        return Place(name, self.regions[region] if region >= 0 else None, code, country_name(code), city, offset)

    def _part(self, vector: np.ndarray, home: int, near: np.ndarray) -> int | None:
        """The nearest much smaller place of the same country whose own reach (or PART_KM) covers the point."""
        distances = self._distances_km(vector, near)
        smaller = self.population[near] <= PART_SHARE * self.population[home]
        inside = (distances <= np.maximum(self.reach[near], PART_KM)) & smaller
        inside &= (self.countries[near] == self.countries[home]) & (near != home)
        candidates = near[inside]
        return int(candidates[np.argmin(distances[inside])]) if len(candidates) else None

    def _offset(self, vector: np.ndarray, home: int) -> str | None:
        distance = float(self._distances_km(vector, np.array([home]))[0])
        if distance < OFFSET_KM[bool(self.population[home] >= CITY_POPULATION)]:
            return None
        x, y, z = (float(c) for c in self.xyz[home])
        # the compass bearing from the centre: east and north unit vectors of the tangent plane there
        across = math.hypot(x, y) or 1.0  # 0 only at a pole, where every way is the same
        east = (-y / across, x / across, 0.0)
        north = (-z * east[1], z * east[0], x * east[1] - y * east[0])  # centre × east
        px, py, pz = (float(c) for c in vector)
        degrees = math.degrees(math.atan2(px * east[0] + py * east[1],
                                          px * north[0] + py * north[1] + pz * north[2])) % 360
        return f"{round(distance):.0f} km {_COMPASS[round(degrees / 45) % 8]}"


@dataclass(frozen=True)
class _Tier:
    """The places whose reach is at most ``widest``, in a tree of their own."""

    rows: np.ndarray
    widest: float
    tree: cKDTree


def _by_reach(reach: np.ndarray) -> list[np.ndarray]:
    """Row numbers grouped by reach, each group's limit twice the last one's (0.5, 1, 2 ... km)."""
    tier = np.maximum(np.ceil(np.log2(reach / MIN_REACH_KM)), 1).astype(np.int64)
    return [np.flatnonzero(tier == value) for value in np.unique(tier)]


def _reach_km(population: np.ndarray) -> np.ndarray:
    """How far a place of this many people reaches from its centre (see the module's docstring)."""
    return np.maximum(np.sqrt(population / (math.pi * PEOPLE_PER_KM2)), MIN_REACH_KM)


class _Strings:
    """Many short strings in one UTF-8 buffer; one is decoded only when asked for."""

    def __init__(self, text: np.ndarray, ends: np.ndarray) -> None:
        self._text = text.tobytes()
        self._ends = ends

    def __getitem__(self, index: int) -> str:
        start = int(self._ends[index - 1]) if index else 0
        return self._text[start : int(self._ends[index])].decode()


class _Interner:
    """Numbers each distinct string once (a region appears on thousands of rows)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def id_of(self, text: str) -> int:
        return self._ids.setdefault(text, len(self._ids))

    def packed(self) -> tuple[np.ndarray, np.ndarray]:
        encoded = [text.encode() for text in self._ids]  # dicts keep insertion order, i.e. id order
        ends = np.cumsum([len(item) for item in encoded], dtype=np.int64)
        return np.frombuffer(b"".join(encoded), dtype=np.uint8), ends


def _chord_for(max_distance_km: float) -> float:
    """The straight-line distance between unit vectors that spans ``max_distance_km`` of great circle."""
    if not max_distance_km > 0:  # also refuses NaN
        raise ValueError(f"max_distance_km must be positive, not {max_distance_km!r}")
    angle = max_distance_km / EARTH_RADIUS_KM
    # The tree keeps only neighbours strictly closer than the bound; nudge it so the limit is inclusive.
    return math.inf if angle >= math.pi else float(np.nextafter(2 * math.sin(angle / 2), math.inf))


def _read_cache(path: Path, key: np.ndarray) -> dict[str, np.ndarray] | None:
    """The cached arrays if they were built from this very source file, else None (missing, stale, damaged)."""
    try:
        # Opened here rather than by np.load, which leaves its own handle open when the zip is damaged.
        with path.open("rb") as handle:
            stored = np.load(handle, allow_pickle=False)
            if not isinstance(stored, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with stored:
                if set(stored.files) != _CACHED_ARRAYS or not np.array_equal(stored["key"], key):
                    return None
                return {name: stored[name] for name in stored.files if name != "key"}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("place index cache %s is unreadable (%s); rebuilding it", path, err)
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write next to the target and rename over it, so a reader sees the old file or the new, never half."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
            temporary = Path(handle.name)
            np.savez(handle, allow_pickle=False, **arrays)
        os.replace(temporary, path)
    except OSError as err:
        log.warning("could not write the place index cache %s: %s", path, err)
        if temporary is not None:
            temporary.unlink(missing_ok=True)


@cache
def _country_names() -> dict[str, str]:
    return json.loads(_COUNTRIES.read_text(encoding="utf-8"))
