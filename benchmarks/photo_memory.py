"""Peak memory of the inbound path for one mail full of photos, in a fresh process.

(``smtp_photo_memory.py`` measures the same mail sent through SMTP to `waypost serve`.)

``photos.py`` runs this as ``python benchmarks/photo_memory.py MAIL --workers N`` and reads
the one JSON object it prints. The mail goes the real way: ``Inbox.accept`` stores it, the
queue worker loads it, ``parse_message`` reads it, the journeys app decodes its photos
(on ``ImagePool`` workers when N > 1), stores the JPEGs and queues the reply.

What counts is growth over a warmed-up process: a small mail goes through first, so every
import, the database, the templates, the place index and the pool's workers are in place.
The peak is then reset (writing 5 to ``/proc/PID/clear_refs`` resets VmHWM, Linux >= 4.0)
for this process and for each pool worker, and read again after each phase:

- ``parse``: ``parse_message`` reading the stored raw message;
- ``photos``: ``ImagePool.process`` for all the attachments;
- ``store``: the rest (thumbnail and display blobs, the database commit, the reply).

Pool workers are started by a fork server, so they are this process's grandchildren and
``RUSAGE_CHILDREN`` never sees them while the fork server lives; their VmHWM is read from
``/proc`` while they still run. ``--trace`` adds tracemalloc (Python allocations only, not
Pillow's pixel buffers): each phase then also lists the largest live allocations at its end
and the traced peak within it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from process_tree import descendants, reset_peak, status_kib

from waypost import runtime as wiring
from waypost.apps.journeys.samples import DEMO_TRIP, make_photo
from waypost.config import load_settings
from waypost.pipeline import processor
from waypost.pipeline.inbox import ReceivedMail
from waypost.store.models import inbound_messages, photos

SENDER = "ann@example.org"
RECIPIENT = "journeys@waypost.test"
KIB = 1024


class PhaseMeter:
    """Per-phase peak RSS of this process, read and reset at each boundary."""

    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.phases: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def start(self) -> None:
        reset_peak("self")
        if self.trace:
            tracemalloc.start()
        self.started = time.perf_counter()

    def boundary(self, name: str) -> None:
        phase = {"phase": name, "peak_kib": status_kib("self", "VmHWM"), "rss_kib": status_kib("self", "VmRSS"),
                 "seconds": time.perf_counter() - self.started}
        if self.trace:
            current, peak = tracemalloc.get_traced_memory()
            phase.update(traced_kib=current // KIB, traced_peak_kib=peak // KIB, largest=_largest_allocations())
            tracemalloc.reset_peak()
        self.phases.append(phase)
        reset_peak("self")
        self.started = time.perf_counter()


def _largest_allocations(count: int = 6) -> list[str]:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    return [f"{stat.size // KIB} KiB in {stat.count} blocks at {stat.traceback[-1]}"
            for stat in snapshot.statistics("lineno")[:count]]


def instrument(runtime: Any, meter: PhaseMeter) -> None:
    """Mark the phase boundaries without touching the code under test: wrap the parser
    the processor calls and the pool the journeys app calls."""
    parse = processor.parse_message

    def parse_and_mark(raw: Any, *args: Any, **kwargs: Any) -> Any:
        message = parse(raw, *args, **kwargs)
        meter.boundary("parse")
        return message

    processor.parse_message = parse_and_mark
    runtime.images.process = _marked(runtime.images.process, meter, "photos")


def _marked(function: Callable[..., Any], meter: PhaseMeter, name: str) -> Callable[..., Any]:
    def run_and_mark(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        meter.boundary(name)
        return result

    return run_and_mark


def deliver(runtime: Any, raw: bytes) -> str:
    mail = ReceivedMail(raw=raw, mail_from=SENDER, rcpt_tos=(RECIPIENT,), peer_ip="127.0.0.1")
    return runtime.inbox.accept(mail)


def drain(runtime: Any) -> None:
    worker = runtime.worker()
    while worker.run_once():
        pass


def warm_up(runtime: Any) -> None:
    """One small photo mail end to end, so imports, caches and pool workers exist."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, RECIPIENT, "warm-up"
    message.set_content("warm-up")
    for index, shot in enumerate(DEMO_TRIP[:4]):
        message.add_attachment(make_photo(shot, seed=index), maintype="image", subtype="jpeg",
                               filename=f"warm-{index}.jpg")
    deliver(runtime, message.as_bytes())
    drain(runtime)


def status_of(runtime: Any, message_id: str) -> str:
    with runtime.engine.connect() as conn:
        query = sa.select(inbound_messages.c.status).where(inbound_messages.c.id == message_id)
        return conn.execute(query).scalar_one()


def published_photos(runtime: Any) -> int:
    """Photos stored with a display JPEG (an unreadable one has none), over all journeys."""
    with runtime.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(photos).where(photos.c.display_key.is_not(None))
        return conn.execute(query).scalar_one()


def measure(mail: Path, workers: int, trace: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="waypost-bench-") as data_dir:
        # the mail comes from loopback as local submission: the benchmark measures photos, not DNS
        runtime = wiring.build(load_settings(data_dir=data_dir, journeys={"image_workers": workers},
                                             trusted_networks=["127.0.0.0/8"]))
        try:
            return _measure_in(runtime, mail, trace)
        finally:
            runtime.close()


def _measure_in(runtime: Any, mail: Path, trace: bool) -> dict[str, Any]:
    runtime.allowlist.add(SENDER)
    warm_up(runtime)
    warm_photos = published_photos(runtime)
    message_id = deliver(runtime, mail.read_bytes())  # the raw bytes are freed on return, as after an SMTP 250
    gc.collect()
    pool = descendants(os.getpid())
    baseline = {pid: status_kib(pid, "VmRSS") for pid in [os.getpid(), *pool]}
    reset_ok = all([reset_peak("self"), *(reset_peak(pid) for pid in pool)])
    meter = PhaseMeter(trace)
    instrument(runtime, meter)
    meter.start()
    drain(runtime)
    meter.boundary("store")
    children = [{"pid": pid, "baseline_kib": baseline[pid], "peak_kib": status_kib(pid, "VmHWM")} for pid in pool]
    return {
        "workers": runtime.images.workers, "mail_bytes": mail.stat().st_size,
        "status": status_of(runtime, message_id), "photos_published": published_photos(runtime) - warm_photos,
        "baseline_kib": baseline[os.getpid()], "peak_reset": reset_ok,
        "peak_kib": max(phase["peak_kib"] for phase in meter.phases), "phases": meter.phases, "children": children,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mail", type=Path, help="raw message (.eml) to push through the inbound path")
    parser.add_argument("--workers", type=int, default=1, help="journeys.image_workers (0: the default)")
    parser.add_argument("--trace", action="store_true", help="also trace Python allocations (slower)")
    args = parser.parse_args(argv)
    json.dump(measure(args.mail, args.workers, args.trace), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
