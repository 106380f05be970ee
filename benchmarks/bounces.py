"""Bounce classification throughput on one core, against flufl.bounce's scan alone on the same messages.

    python benchmarks/bounces.py            # full: 7 rounds over the messages, best round reported
    python benchmarks/bounces.py --quick    # CI: 2 rounds, a few seconds
    python benchmarks/bounces.py --json out.json

The messages are the shared corpus's real bounces (``bounces/``, ``dsn/`` and ``arf/``, found in
../shared/corpus or WAYPOST_CORPUS); without the corpus, the generated report mail of
tests/support/report_samples.py. Each contender gets every message as bytes:

- ``waypost``: ``read_report`` (parse, find the recipients, status, reply code and reason of
  each, the policy's bounce type), the whole path a bounce takes before the database;
- ``flufl.bounce``: ``email.message_from_bytes`` and ``flufl.bounce.all_failures``, which only
  names the failed addresses (no status, no reason).

The contenders take turns round by round, and a rate is messages per second of the process's
CPU time: one core's work, which other load on a shared machine changes far less than the
clock (the clock's best rate is printed beside it). The target is 1,200 messages/s for
``waypost`` (what sisimai's Go port reports). Speed never fails the run: the exit status is 0
whether the target is met or missed, non-zero only on a crash.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path

from flufl.bounce import all_failures

from waypost.feedback.reports import read_report

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1_200.0  # messages per second, one core
FOLDERS = ("bounces", "dsn", "arf")
LABELS = {"waypost": "waypost read_report (classified)", "flufl_scan": "flufl.bounce scan alone"}


def corpus_messages() -> tuple[str, list[bytes]]:
    corpus = Path(os.environ.get("WAYPOST_CORPUS") or ROOT.parent / "shared" / "corpus")
    files = sorted(p for folder in FOLDERS if (corpus / folder).is_dir()
                   for p in (corpus / folder).iterdir() if p.suffix in (".eml", ".txt"))
    if files:
        return f"shared corpus at {corpus} ({', '.join(FOLDERS)})", [p.read_bytes() for p in files]
    sys.path.insert(0, str(ROOT))
    from tests.support.report_samples import SAMPLES

    return "generated report mail (tests/support/report_samples.py; corpus not found)", [s.raw for s in SAMPLES]


def waypost(raw: bytes) -> int:
    return len(read_report(raw).events)


def flufl_scan(raw: bytes) -> int:
    try:
        temporary, permanent = all_failures(message_from_bytes(raw, policy=compat32))
    except Exception:  # some detectors fail on odd mail (no From:); waypost guards the same way
        return 0
    return len(temporary) + len(permanent)


def rates(contenders: dict[str, Callable[[bytes], int]], messages: list[bytes], rounds: int
          ) -> dict[str, dict[str, float]]:
    """Messages per second of each contender: ``best`` and ``median`` over ``rounds`` passes by
    the process's CPU time (one core's work, whatever else the machine runs), ``wall_best`` by
    the clock. The contenders take turns, pass by pass, after one untimed warm-up pass each, so
    that a change of load on a shared machine falls on all of them alike."""
    for contender in contenders.values():
        for raw in messages:
            contender(raw)
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, contender in contenders.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            for raw in messages:
                contender(raw)
            cpu[name].append(len(messages) / max(time.process_time() - started_cpu, 1e-9))
            wall[name].append(len(messages) / (time.perf_counter() - started))
    return {name: {"best": max(cpu[name]), "median": sorted(cpu[name])[len(cpu[name]) // 2],
                   "wall_best": max(wall[name])} for name in contenders}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 7 (CI)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    rounds = 2 if args.quick else 7
    logging.getLogger("flufl.bounce").disabled = True  # its detectors log every exception they survive
    source, messages = corpus_messages()
    print(f"bounce classification, one core: {len(messages)} messages, {sum(map(len, messages)):,} bytes; {source}")
    print(f"python {platform.python_version()} on {platform.machine()}, {rounds} rounds taken in turns, best reported")
    figures_of = rates({"waypost": waypost, "flufl_scan": flufl_scan}, messages, rounds)
    for name, figure in figures_of.items():
        print(f"  {LABELS[name]:34} {figure['best']:9,.0f} messages/s of CPU time (median {figure['median']:,.0f};"
              f" by the clock {figure['wall_best']:,.0f})")
    ours, theirs = figures_of["waypost"]["best"], figures_of["flufl_scan"]["best"]
    figures: dict[str, object] = {"messages": len(messages), "rounds": rounds, "target": TARGET, **figures_of,
                                  "load_average": list(os.getloadavg())}
    verdict = "met" if ours >= TARGET else "MISSED"
    print(f"  ratio waypost / flufl scan: {ours / theirs:.2f}; target {TARGET:,.0f} messages/s: {verdict}")
    print(f"  load average {', '.join(f'{load:.2f}' for load in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
