"""The send path across real processes: two workers share one rate limit through the
database, and a worker killed between a send and its commit never delivers twice."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.conftest import drain_output, server_env, start_process, stop_process, wait_until, waypost_command
from waypost import runtime as wiring
from waypost.outbound.outbox import OutboundMessage
from waypost.store.models import jobs, outbound_messages

RATE = 5


def max_in_any_second(times: list[datetime]) -> int:
    """The most events in any window [t, t + 1 s) (every event time tried as a start)."""
    stamps = sorted(t.timestamp() for t in times)
    return max((bisect.bisect_left(stamps, start + 1.0) - index for index, start in enumerate(stamps)), default=0)


def test_max_in_any_second_counts_half_open_windows() -> None:
    base = datetime(2026, 1, 1).timestamp()
    times = [datetime.fromtimestamp(base + offset) for offset in (0, 0.5, 0.99, 1.0, 1.6)]
    assert max_in_any_second(times) == 3


def test_two_workers_share_one_rate_limit(make_settings: Callable[..., Any], database_url: str,
                                          tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir=data_dir, database={"url": database_url},
                             outbound={"max_per_second": RATE, "max_per_day": 0},
                             guard={"compromise_checks": False})  # made-up recipients who never wrote in
    runtime = wiring.build(settings)
    total = RATE * 4
    # Each send takes 50 ms after its handoff, as a provider's API call does. A catcher send is a few
    # ms, and then SQLite's busy handler, which sleeps between its tries, could let one process take
    # every send of every second while the other slept. Alone, each can still send about 18 a second,
    # so a limit kept per process would show twice RATE in a second.
    env = server_env(data_dir, WAYPOST_DATABASE__URL=database_url, WAYPOST_OUTBOUND__MAX_PER_SECOND=str(RATE),
                     WAYPOST_OUTBOUND__MAX_PER_DAY="0", WAYPOST_GUARD__COMPROMISE_CHECKS="false",
                     WAYPOST_FAILPOINTS="outbox.after_handoff=delay:0.05")
    workers = [start_process(waypost_command("worker"), env) for _ in range(2)]
    outputs: list[list[str]] = [[], []]
    try:
        for process, lines in zip(workers, outputs, strict=True):
            drain_output(process, lines)
        # the messages come once both are past their start (the warm-up takes a second of CPU each),
        # so that neither can take them all while the other is still loading
        wait_until(lambda: all(any("warmed up in" in line for line in lines) for lines in outputs), timeout=60,
                   message=f"both workers warmed up: {outputs}")
        with runtime.engine.begin() as conn:
            for index in range(total):
                runtime.outbox.queue_message(conn, OutboundMessage(
                    f"rate-{index}", "journeys", f"person{index}@example.org", "journeys@waypost.test", "s",
                    f"<rate-{index}@waypost.test>", b"Subject: s\r\n\r\nbody\r\n"))

        def all_sent() -> bool:
            with runtime.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).where(outbound_messages.c.state == "sent")
                                    ).scalar_one() == total
        wait_until(all_sent, timeout=60, message=f"{total} messages sent")
    finally:
        for process in workers:
            stop_process(process)
    with runtime.engine.connect() as conn:
        admitted, handed_over = zip(*conn.execute(
            sa.select(outbound_messages.c.admitted_at, outbound_messages.c.handoff_at)).all(), strict=True)
        senders = [owner.split(":")[1] for owner in conn.execute(
            sa.select(jobs.c.locked_by).where(jobs.c.kind == "send").order_by(jobs.c.updated_at)).scalars()]
    runtime.close()

    assert max_in_any_second(list(admitted)) == RATE  # the limit was reached, and never passed
    assert max_in_any_second(list(handed_over)) <= RATE  # nor where the bytes started to leave
    assert (max(admitted) - min(admitted)).total_seconds() >= total / RATE - 1
    assert len(set(senders)) == 2, f"one process sent all ({senders}): {outputs}"  # the limit really was shared
    failed = [line for lines in outputs for line in lines if "failed" in line]
    assert failed == []  # and every send went on its first attempt (two handoffs in a new minute once collided)
