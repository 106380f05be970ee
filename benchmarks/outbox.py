"""The outbox's throughput and send-rate accuracy, against baselines measured in the same run.

    python benchmarks/outbox.py            # full: 2,000 messages per round, 60 s rate runs; about 5 minutes
    python benchmarks/outbox.py --quick    # CI: 200 messages per round, 15 s rate runs; under a minute
    python benchmarks/outbox.py --json out.json

Throughput is reported against the job queue's own claim + complete for as many no-op jobs,
the floor for a design of one job per message. The rate runs check a correctness property:
a 1-second window with more sends than the limit exits with status 1, as does a message sent
twice. A throughput ratio, or a rate below 95 % of the allowed count, never changes the exit
status; a crash does. See README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import multiprocessing
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from photos import git_revision, source_fingerprint
from process_tree import CpuWatch

from waypost import runtime
from waypost.config import load_settings
from waypost.outbound.outbox import OutboundMessage, OutboundState
from waypost.outbound.ratelimit import DEFAULT_MARGIN
from waypost.outbound.senders.base import BaseSender, Envelope, Handoff
from waypost.store.models import outbound_messages
from waypost.store.queue import enqueue

POSTGRES_URL = os.environ.get("WAYPOST_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RATE = 14  # messages per second in the rate runs (the figure)
RATE_WORKERS = 2
RATE_SHARE = 0.95  # of RATE x seconds, the least a rate run should send
UNLIMITED = 100_000  # the highest max_per_second the settings accept; no daily quota either
NOOP_JOB = "bench-noop"
RAW = (b"From: Waypost <journeys@waypost.test>\r\nTo: <ann@example.org>\r\nSubject: Benchmark\r\n\r\n"
       + b"A reply of typical size, about four kilobytes of text.\r\n" * 72)
BUSY_CPUS = 0.25  # other processes' load above which a section's figures are flagged


@dataclass(frozen=True)
class Mode:
    name: str
    messages: int  # per throughput round, and as many no-op jobs for the baseline
    rounds: int
    rate_seconds: float


MODES = {"full": Mode("full", 2000, 3, 60.0), "quick": Mode("quick", 200, 2, 15.0)}


@dataclass
class Check:
    name: str
    figure: str
    want: str
    verdict: str  # PASS, MISS (a target missed: exit 0), FAIL (correctness broken: exit 1), INFO, SKIP

    def line(self) -> str:
        return f"  {self.verdict:4}  {self.name:62} {self.figure:>14}  {self.want}".rstrip()


@dataclass
class Report:
    mode: str
    machine: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    def section(self, title: str, figures: dict[str, Any], lines: Sequence[str], watch: CpuWatch,
                started: float) -> None:
        seconds, busy = time.perf_counter() - started, watch.others()
        self.sections[title] = {**figures, "seconds_taken": seconds, "other_processes_cpus": busy}
        flag = "  (busy machine: figures may be low)" if busy > BUSY_CPUS else ""
        print(f"\n{title}  [{seconds:.0f} s; other processes kept {busy:.2f} CPUs busy{flag}]")
        for line in lines:
            print(f"  {line}")

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "machine": self.machine, "sections": self.sections,
                "checks": [asdict(check) for check in self.checks]}

    def finish(self, json_path: Path | None, failure: str, seconds: float | None = None) -> int:
        """Print the summary (and write the JSON); the exit status: 1 when a check FAILed."""
        print("\nSummary" + (f"  [{seconds:.0f} s in all]" if seconds is not None else ""))
        for check in self.checks:
            print(check.line())
        if source_fingerprint() != self.machine["waypost_sources"]:
            print("\nWARNING: waypost's sources changed during this run; its figures mix code versions. Run it again.")
        if json_path:
            json_path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        failed = [check.name for check in self.checks if check.verdict == "FAIL"]
        if failed:
            print(f"\nFAILED ({failure}): {'; '.join(failed)}")
        return 1 if failed else 0


class NoopSender(BaseSender):
    """Delivers nothing: calls ``handoff()`` and records the send call's wall-clock time, the
    time after the handoff committed (when a real transport's bytes would leave) and the key;
    to ``log`` too, one line each, when given."""

    name = "noop"

    def __init__(self, log: TextIO | None = None) -> None:
        self.log = log
        self.sends: list[tuple[float, float, str]] = []

    def send(self, envelope: Envelope, raw: bytes, handoff: Handoff) -> str:
        called = time.time()
        handoff()
        left = time.time()
        self.sends.append((called, left, envelope.idempotency_key))
        if self.log is not None:
            self.log.write(f"{called:.6f} {left:.6f} {envelope.idempotency_key}\n")
            self.log.flush()
        return f"noop-{envelope.idempotency_key}"

    def confirm(self, envelope: Envelope) -> str | None:
        return None


class DeferralCount(logging.Handler):
    """Counts the outbox's "send job deferred" records: claims the rate limiter sent back."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "deferred" in str(record.msg)


# -- databases -------------------------------------------------------------------------------

def postgres_problem() -> str | None:
    """None when PostgreSQL answers at POSTGRES_URL; otherwise why not."""
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 5})
    try:
        engine.connect().close()
    except Exception as err:  # any driver or network error: the PostgreSQL sections are skipped
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    finally:
        engine.dispose()
    return None


@contextmanager
def fresh_database(kind: str, scratch: Path) -> Iterator[str]:
    """A new SQLite file, or a PostgreSQL schema of its own, dropped afterwards (as the tests do):
    nothing else in the shared database is touched."""
    if kind == "sqlite":
        yield f"sqlite:///{scratch / f'bench-{secrets.token_hex(4)}.sqlite3'}"
        return
    schema = f"bench_{secrets.token_hex(6)}"
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def build_runtime(url: str, data_dir: Path, per_second: float, sender: NoopSender, *,
                  upgrade: bool = True) -> runtime.Runtime:
    settings = load_settings(data_dir=data_dir, database={"url": url}, journeys={"image_workers": 1},
                             outbound={"max_per_second": per_second, "max_per_day": 0},
                             # the guard's checks run as in production; a benchmark's burst is no spike
                             guard={"spike_min_per_hour": 100_000_000})
    return runtime.build(settings, sender=sender, upgrade=upgrade)


def queue_messages(built: runtime.Runtime, count: int, tag: str) -> float:
    """Queue ``count`` messages in one transaction; the seconds it took."""
    started = time.perf_counter()
    with built.engine.begin() as conn:
        for index in range(count):
            built.outbox.queue_message(conn, OutboundMessage(
                f"{tag}-{index}", "bench", f"reader{index}@example.org", "journeys@waypost.test",
                "Benchmark", f"<{tag}.{index}@waypost.test>", RAW))
    return time.perf_counter() - started


def queue_noop_jobs(built: runtime.Runtime, count: int) -> float:
    started = time.perf_counter()
    with built.engine.begin() as conn:
        for index in range(count):
            enqueue(conn, NOOP_JOB, {"n": index}, max_attempts=5)
    return time.perf_counter() - started


# -- 1. throughput ---------------------------------------------------------------------------

THROUGHPUT_LABELS = {"outbox": "outbox: sent through the no-op sender", "baseline":
                     "baseline: no-op jobs claimed + completed", "queue": "queue_message, one transaction",
                     "enqueue": "enqueue of a no-op job, one transaction"}
NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def drain_outbox(built: runtime.Runtime, sender: NoopSender, count: int) -> float:
    """Run the worker until nothing is due; the seconds it took. Raises unless every message
    went out exactly once."""
    worker, before = built.worker(), len(sender.sends)
    started = time.perf_counter()
    while worker.run_once():
        pass
    seconds = time.perf_counter() - started
    keys = [key for _, _, key in sender.sends[before:]]
    if len(keys) != count or len(set(keys)) != count:
        raise RuntimeError(f"the outbox sent {len(keys)} messages ({len(set(keys))} distinct) of {count} queued")
    return seconds


def drain_noop_jobs(built: runtime.Runtime, count: int) -> float:
    """Claim and complete no-op jobs until none is due: the queue's cost for one job per message."""
    done, started = 0, time.perf_counter()
    while (job := built.queue.claim("bench", (NOOP_JOB,))) is not None:
        with built.engine.begin() as conn:
            built.queue.complete(conn, job)
        done += 1
    seconds = time.perf_counter() - started
    if done != count:
        raise RuntimeError(f"the queue ran {done} of {count} no-op jobs")
    return seconds


def bench_throughput(report: Report, mode: Mode, kind: str, scratch: Path) -> None:
    watch, started = CpuWatch(), time.perf_counter()
    sender = NoopSender()
    with fresh_database(kind, scratch) as url:
        built = build_runtime(url, scratch / f"data-{kind}", UNLIMITED, sender)
        try:
            rates = _throughput_rounds(built, sender, mode)
        finally:
            built.close()
    best = {name: max(values) for name, values in rates.items()}
    ratio = best["outbox"] / best["baseline"]
    lines = [f"{mode.messages:,} messages per round, best of {mode.rounds} rounds (median beside it);"
             f" one Worker.run_once loop, no-op sender, max_per_second={UNLIMITED:,}, no daily quota",
             *(f"{label:46} {best[name]:7.0f} /s  (median {statistics.median(rates[name]):6.0f})"
               for name, label in THROUGHPUT_LABELS.items()),
             f"{'outbox / baseline':46} {ratio:7.2f}x",
             f"{'queueing: queue_message / enqueue':46} {best['queue'] / best['enqueue']:7.2f}x"]
    report.section(f"1. Throughput, {NAMES[kind]}", rates, lines, watch, started)
    report.checks.append(Check(f"Throughput, {NAMES[kind]}: outbox / job claim+complete",
                               f"{best['outbox']:.0f}/s {ratio:.2f}x", "(no target)", "INFO"))



def _throughput_rounds(built: runtime.Runtime, sender: NoopSender, mode: Mode) -> dict[str, list[float]]:
    """Messages (or jobs) per second, every round; the two contenders take turns going first."""
    count, batches = mode.messages, itertools.count()
    rates: dict[str, list[float]] = {name: [] for name in THROUGHPUT_LABELS}
    contenders: list[tuple[str, Callable[[], float], Callable[[], float]]] = [
        ("outbox", lambda: queue_messages(built, count, f"batch{next(batches)}"),
         lambda: drain_outbox(built, sender, count)),
        ("baseline", lambda: queue_noop_jobs(built, count), lambda: drain_noop_jobs(built, count)),
    ]
    queue_messages(built, 20, "warm-up")  # compile and cache every statement once, untimed
    drain_outbox(built, sender, 20)
    queue_noop_jobs(built, 20)
    drain_noop_jobs(built, 20)
    for round_index in range(mode.rounds):
        for name, fill, drain in contenders[round_index % 2:] + contenders[:round_index % 2]:
            rates["queue" if name == "outbox" else "enqueue"].append(count / fill())
            rates[name].append(count / drain())
    return rates


# -- 2. rate accuracy ------------------------------------------------------------------------

def rate_worker(url: str, data_dir: Path, sends: Path, ready: Any, stop: Any) -> None:
    """One worker process of a rate run (spawned): builds the runtime, waits for the others at
    ``ready``, runs until ``stop``, then writes its own figures beside its send log."""
    with sends.open("w") as log:
        try:
            built = build_runtime(url, data_dir, RATE, NoopSender(log), upgrade=False)
        except BaseException:
            ready.abort()  # the parent and the other worker stop waiting at once
            raise
        deferrals = DeferralCount()
        outbox_log = logging.getLogger("waypost.outbound.outbox")
        outbox_log.setLevel(logging.DEBUG)
        outbox_log.addHandler(deferrals)
        ready.wait(timeout=120)
        cpu = time.process_time()
        built.worker().run(stop)
        cpu = time.process_time() - cpu
        built.close()
    figures = {"pid": os.getpid(), "cpu_seconds": cpu, "deferrals": deferrals.count}
    sends.with_suffix(".json").write_text(json.dumps(figures))


def run_rate_workers(url: str, data_dir: Path, seconds: float, scratch: Path) -> tuple[float, list[Path]]:
    """Run RATE_WORKERS processes for ``seconds`` from the moment all are ready; the wall-clock
    start and their send logs. Raises if one fails or does not stop within a deadline."""
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Barrier(RATE_WORKERS + 1), context.Event()
    logs = [scratch / f"sends-{secrets.token_hex(3)}-{index}.txt" for index in range(RATE_WORKERS)]
    workers = [context.Process(target=rate_worker, args=(url, data_dir, log, ready, stop)) for log in logs]
    for worker in workers:
        worker.start()
    try:
        ready.wait(timeout=120)
        started = time.time()
        early = wait([worker.sentinel for worker in workers], timeout=seconds)  # the run itself
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()
    failed = [worker.exitcode for worker in workers if worker.exitcode != 0]
    if early or failed:
        raise RuntimeError(f"a rate worker {'exited early' if early else 'failed'}: exit codes "
                           f"{[worker.exitcode for worker in workers]}")
    return started, logs


def busiest_second(times: Sequence[float]) -> tuple[int, float]:
    """The most events in any window [t, t + 1 s), and a t where that many fall (the maximum
    is always reached by a window that starts at an event)."""
    ordered, best, best_start, end = sorted(times), 0, 0.0, 0
    for start, moment in enumerate(ordered):
        while end < len(ordered) and ordered[end] < moment + 1.0:
            end += 1
        if end - start > best:
            best, best_start = end - start, moment
    return best, best_start


def tightest_span(times: Sequence[float], count: int) -> float | None:
    """The shortest time over which ``count`` consecutive events happened: under 1 s, and some
    1-second window holds ``count`` of them. How far above 1 s it stays is the margin left."""
    ordered = sorted(times)
    return min((ordered[i + count - 1] - ordered[i] for i in range(len(ordered) - count + 1)), default=None)


def bench_rate(report: Report, mode: Mode, kind: str, scratch: Path) -> None:
    watch, clock = CpuWatch(), time.perf_counter()
    queued = math.ceil(RATE * mode.rate_seconds * 1.5)
    with fresh_database(kind, scratch) as url:
        data_dir = scratch / f"rate-{kind}"
        built = build_runtime(url, data_dir, RATE, NoopSender())
        try:
            queue_messages(built, queued, "rate")
            started, logs = run_rate_workers(url, data_dir, mode.rate_seconds, scratch)
            with built.engine.connect() as conn:
                rows = conn.execute(sa.select(outbound_messages.c.idempotency_key, outbound_messages.c.admitted_at,
                                              outbound_messages.c.state)).all()
        finally:
            built.close()
    figures = _rate_figures(mode, started, logs, rows)
    report.section(f"2. Send rate, {NAMES[kind]}: {RATE_WORKERS} worker processes at {RATE}/s for "
                   f"{mode.rate_seconds:g} s", figures, _rate_lines(figures, queued), watch, clock)
    report.checks += _rate_checks(figures, NAMES[kind])


def _rate_figures(mode: Mode, started: float, logs: list[Path], rows: Sequence[sa.Row]) -> dict[str, Any]:
    sends = [line.split() for log in logs for line in log.read_text().splitlines()]
    admitted = {row.idempotency_key: row.admitted_at.timestamp() for row in rows if row.admitted_at is not None}
    series = {"send call": [(float(called), key) for called, _, key in sends],
              "after handoff": [(float(left), key) for _, left, key in sends],
              "admitted_at": [(moment, key) for key, moment in admitted.items()]}
    keys, ends = [key for _, _, key in sends], started + mode.rate_seconds
    return {
        "seconds": mode.rate_seconds, "allowed": RATE * mode.rate_seconds, "started": started,
        "sent_in_run": sum(started <= moment < ends for moment, _ in series["send call"]), "sent_total": len(keys),
        "sent_twice": len(keys) - len(set(keys)), "rows_sent": sum(row.state == OutboundState.SENT for row in rows),
        "busiest_second": {name: _busiest(events, started, admitted) for name, events in series.items()},
        "admitted_at_to_ms": {name: spread([(moment - admitted[key]) * 1000 for moment, key in series[name]])
                              for name in ("send call", "after handoff")},
        "workers": [json.loads(log.with_suffix(".json").read_text()) for log in logs],
    }


def _busiest(events: Sequence[tuple[float, str]], started: float, admitted: dict[str, float]) -> dict[str, Any]:
    """The busiest 1-second window of ``events``, and the longest its messages took from
    ``admitted_at`` to the event: the rate window's margin has to cover that delay."""
    times = [moment for moment, _ in events]
    count, at = busiest_second(times)
    delays = [moment - admitted[key] for moment, key in events if at <= moment < at + 1 and key in admitted]
    return {"sends": count, "at": at - started, f"tightest_{RATE + 1}_s": tightest_span(times, RATE + 1),
            "longest_after_admission_ms": max(delays, default=0.0) * 1000}


def spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values) or [math.nan]
    return {"median": statistics.median(ordered), "p99": ordered[int(len(ordered) * 0.99)], "max": ordered[-1],
            "count": len(values)}


def _rate_lines(figures: dict[str, Any], queued: int) -> list[str]:
    share = figures["sent_in_run"] / figures["allowed"]
    lines = [f"{queued:,} messages queued; sent {figures['sent_in_run']} in the run of {figures['allowed']:g} allowed"
             f" ({share:.1%}); {figures['sent_total']} in all, {figures['rows_sent']} rows ended sent",
             f"most sends in any 1-second window [t, t+1); the shortest time {RATE + 1} sends in a row took:"]
    for name, window in figures["busiest_second"].items():
        span, late = window[f"tightest_{RATE + 1}_s"], window["longest_after_admission_ms"]
        lines.append(f"  {name:14} {window['sends']:3}  (from {window['at']:7.3f} s)   "
                     + ("--" if span is None else f"{span:.4f} s")
                     + (f"   one of them came {late:.1f} ms after its admitted_at" if window["sends"] > RATE else ""))
    for name, lag in figures["admitted_at_to_ms"].items():
        lines.append(f"admitted_at to {name + ':':14} median {lag['median']:5.1f} ms, p99 {lag['p99']:5.1f} ms,"
                     f" max {lag['max']:6.1f} ms (the rate window's margin is {DEFAULT_MARGIN * 1000:g} ms)")
    for worker in figures["workers"]:
        lines.append(f"worker {worker['pid']}: {worker['deferrals']} deferrals,"
                     f" {worker['cpu_seconds'] / figures['seconds']:.0%} of a CPU")
    return lines


def _rate_checks(figures: dict[str, Any], name: str) -> list[Check]:
    share = figures["sent_in_run"] / figures["allowed"]
    checks = [Check(f"Rate, {name}: sent / allowed ({RATE}/s x {figures['seconds']:g} s)", f"{share:.1%}",
                    f"want >= {RATE_SHARE:.0%}", "PASS" if share >= RATE_SHARE else "MISS")]
    for window, busiest in figures["busiest_second"].items():
        checks.append(Check(f"Rate, {name}: most sends in 1 s ({window})", str(busiest["sends"]),
                            f"must be <= {RATE}", "PASS" if busiest["sends"] <= RATE else "FAIL"))
    checks.append(Check(f"Rate, {name}: messages handed over twice", str(figures["sent_twice"]), "must be 0",
                        "FAIL" if figures["sent_twice"] else "PASS"))
    return checks


# -- report ----------------------------------------------------------------------------------

def machine_facts(postgres: str | None) -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
            "sqlalchemy": sa.__version__, "sqlite": sqlite3.sqlite_version,
            "postgres": _postgres_version() if postgres is None else f"skipped: {postgres}",
            "waypost_revision": git_revision(), "waypost_sources": source_fingerprint()}


def _postgres_version() -> str:
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def print_header(report: Report, what: str = "outbox") -> None:
    facts = report.machine
    print(f"Waypost {what} benchmarks ({report.mode})")
    print(f"  CPUs: {facts['cpu_count']}   load average: {' '.join(f'{load:.2f}' for load in facts['load_average'])}")
    print(f"  Python {facts['python']}   SQLAlchemy {facts['sqlalchemy']}   SQLite {facts['sqlite']}"
          f"   PostgreSQL {facts['postgres']}")
    print(f"  waypost: {facts['waypost_revision']} (sources {facts['waypost_sources']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and 15 s rate runs (CI), under a minute")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure to PATH")
    args = parser.parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    postgres = postgres_problem()
    kinds = ["sqlite"] if postgres else ["sqlite", "postgres"]
    report = Report(mode.name, machine_facts(postgres))
    print_header(report)
    with tempfile.TemporaryDirectory(prefix="waypost-bench-") as scratch:
        for kind in kinds:
            bench_throughput(report, mode, kind, Path(scratch))
        for kind in kinds:
            bench_rate(report, mode, kind, Path(scratch))
    if postgres:
        report.checks.append(Check("PostgreSQL: throughput and rate", "--", f"({postgres})", "SKIP"))
    return report.finish(args.json, "a correctness limit was broken")


if __name__ == "__main__":
    sys.exit(main())
