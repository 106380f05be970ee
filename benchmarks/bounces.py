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

The target is 1,200 messages/s for ``waypost`` (what sisimai's Go port reports). Speed never
fails the run: the exit status is 0 whether the target is met or missed, non-zero only on a crash.
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


def best_rate(contender: Callable[[bytes], int], messages: list[bytes], rounds: int) -> tuple[float, float]:
    """(best, median) messages per second over ``rounds`` passes, after one untimed warm-up pass."""
    for raw in messages:
        contender(raw)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for raw in messages:
            contender(raw)
        rates.append(len(messages) / (time.perf_counter() - start))
    rates.sort()
    return rates[-1], rates[len(rates) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 7 (CI)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    rounds = 2 if args.quick else 7
    logging.getLogger("flufl.bounce").disabled = True  # its detectors log every exception they survive
    source, messages = corpus_messages()
    print(f"bounce classification, one core: {len(messages)} messages, {sum(map(len, messages)):,} bytes; {source}")
    print(f"python {platform.python_version()} on {platform.machine()}, {rounds} rounds, best round reported")
    rates: dict[str, dict[str, float]] = {}
    for name, contender in (("waypost", waypost), ("flufl_scan", flufl_scan)):
        best, median = best_rate(contender, messages, rounds)
        rates[name] = {"best": best, "median": median}
        print(f"  {LABELS[name]:34} {best:9,.0f} messages/s (median {median:,.0f})")
    ours, theirs = rates["waypost"]["best"], rates["flufl_scan"]["best"]
    figures: dict[str, object] = {"messages": len(messages), "rounds": rounds, "target": TARGET, **rates}
    verdict = "met" if ours >= TARGET else "MISSED"
    print(f"  ratio waypost / flufl scan: {ours / theirs:.2f}; target {TARGET:,.0f} messages/s: {verdict}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
