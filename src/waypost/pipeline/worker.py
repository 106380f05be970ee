"""The worker: claims jobs and runs them, retrying with backoff and dead-lettering after the
last attempt. Safe to run as several processes against one database."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from waypost.errors import PermanentError
from waypost.store.queue import Doorbell, Job, JobKind, JobQueue

log = logging.getLogger(__name__)

# While claims fail (the database cannot be written), the wait before the next try doubles from
# the poll interval up to this cap: a short poll interval must not hammer a database in trouble.
CLAIM_BACKOFF_FACTOR = 2.0
CLAIM_BACKOFF_CAP = 30.0  # seconds
# at most one log line per this many seconds while claims keep failing (85 MB of tracebacks
# in four minutes is what logging every poll did)
CLAIM_FAILURE_LOG_INTERVAL = 60.0  # seconds

Clock = Callable[[], float]
# waits up to the seconds given or until the event is set (returns early on stop)
Wait = Callable[[threading.Event, float], object]


class ClaimFailures:
    """Claims failing in a row: how long to wait before the next one, and what to log. The
    first failure is logged with its traceback, then at most one line per
    CLAIM_FAILURE_LOG_INTERVAL with the count since, and one line when claiming works again."""

    def __init__(self, poll_interval: float, clock: Clock) -> None:
        self.poll_interval = poll_interval
        self.clock = clock
        self.in_a_row = 0
        self.unreported = 0
        self.next_report = 0.0

    def failed(self, err: BaseException) -> float:
        """Record a failed claim; the seconds to wait before the next try."""
        self.in_a_row += 1
        delay = self.delay()
        now = self.clock()
        if self.in_a_row == 1:
            log.error("worker could not claim a job; retrying with backoff up to %.0f s", CLAIM_BACKOFF_CAP,
                      exc_info=err)
            self.next_report = now + CLAIM_FAILURE_LOG_INTERVAL
            return delay
        self.unreported += 1
        if now >= self.next_report:
            log.error("worker still cannot claim a job: %d failures since the last report (%s: %s); "
                      "next try in %.1f s", self.unreported, type(err).__name__, _first_line(err), delay)
            self.unreported, self.next_report = 0, now + CLAIM_FAILURE_LOG_INTERVAL
        return delay

    def delay(self) -> float:
        cap = max(CLAIM_BACKOFF_CAP, self.poll_interval)
        # the exponent stops growing long after the cap is reached: a float power would overflow
        return min(cap, self.poll_interval * CLAIM_BACKOFF_FACTOR ** min(self.in_a_row - 1, 64))

    def succeeded(self) -> None:
        """A claim worked (a job or none due): logged once after failures, backoff reset."""
        if self.in_a_row:
            log.warning("worker can claim jobs again after %d failed attempts", self.in_a_row)
        self.in_a_row = self.unreported = 0


def _first_line(err: BaseException) -> str:
    """The gist of a database error (SQLAlchemy's run to several lines with the SQL)."""
    lines = str(err).splitlines()
    return lines[0][:200] if lines else ""


class Worker:
    def __init__(self, queue: JobQueue, kinds: Sequence[JobKind], *, poll_interval: float,
                 periodic: Sequence[tuple[float, Callable[[], object]]] = (),
                 companions: Sequence[Callable[[threading.Event], None]] = (),
                 clock: Clock = time.monotonic, wait: Wait = threading.Event.wait,
                 doorbell: Doorbell | None = None) -> None:
        """``kinds``: the jobs this worker runs, as their owners declare them (the wiring
        collects them); ``periodic``: (seconds, task) run between jobs at that interval (the
        alarms); ``companions``: loops run in their own threads until ``stop`` (the SQS consumer).
        ``clock`` and ``wait`` are time as the worker sees it (tests pass their own).
        ``doorbell``: ends an idle wait as soon as a job is committed in this process."""
        self.clock = clock
        self.wait = wait
        self.doorbell = doorbell
        self.periodic: list[tuple[float, Callable[[], object]]] = []
        self._next_run: list[float] = []
        for interval, task in periodic:
            self.every(interval, task)
        self.companions = list(companions)
        self.queue = queue
        self.kinds = list(kinds)
        self.poll_interval = poll_interval
        self.claim_failures = ClaimFailures(poll_interval, clock)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.handlers: dict[str, Callable[[Job], None]] = {kind.name: kind.run for kind in self.kinds}
        self.on_dead: dict[str, Callable[[Job, str], None]] = {kind.name: kind.on_dead for kind in self.kinds}

    def run_once(self) -> bool:
        """Run one due job; False when none was due."""
        # a kind its owner holds back (sends, while the rate, the quota or a pause says wait) is not claimed
        kinds = tuple(kind.name for kind in self.kinds if kind.held_back() <= 0)
        job = self.queue.claim(self.owner, kinds) if kinds else None
        if job is None:
            return False
        if job.dead_reason is not None:
            self.on_dead[job.kind](job, job.dead_reason)
            return True
        try:
            self.handlers[job.kind](job)
        except Exception as err:  # every failure ends recorded, never raised out of the loop
            self._failed(job, err)
        return True

    def run(self, stop: threading.Event) -> None:
        log.info("worker %s started", self.owner)
        threads = [threading.Thread(target=loop, args=(stop,), name=f"worker-{getattr(loop, '__qualname__', 'loop')}",
                                    daemon=True) for loop in self.companions]
        for thread in threads:
            thread.start()
        try:
            while not stop.is_set():
                self.run_periodic()
                self._poll(stop)
        finally:
            for thread in threads:
                thread.join(timeout=30)

    def _poll(self, stop: threading.Event) -> None:
        """One job, or a wait: until the next is due, or the backoff while claims fail."""
        try:
            busy = self.run_once()
        except Exception as err:  # the database itself failed; wait longer each time and try again
            self.wait(stop, self.claim_failures.failed(err))
            return
        self.claim_failures.succeeded()
        if not busy:
            if self.doorbell is not None:
                self.doorbell.wait(stop, self._idle_wait())
            else:
                self.wait(stop, self._idle_wait())

    def every(self, interval: float, task: Callable[[], object]) -> None:
        """Run ``task`` between jobs, first at the next chance, then every ``interval`` seconds."""
        self.periodic.append((interval, task))
        self._next_run.append(0.0)

    def run_periodic(self) -> None:
        now = self.clock()
        for index, (interval, task) in enumerate(self.periodic):
            if now < self._next_run[index]:
                continue
            self._next_run[index] = now + interval
            try:
                task()
            except Exception:  # a failing check must not stop the jobs
                log.exception("periodic task %s failed", getattr(task, "__qualname__", task))

    def _idle_wait(self) -> float:
        """Sleep until the next job is due, at most ``poll_interval``: a send deferred by the
        rate limiter for 70 ms should go after 70 ms, not after a whole poll interval."""
        try:
            due = self.queue.next_due_in(tuple(self.handlers))
        except Exception:
            return self.poll_interval
        if due is None:
            return self.poll_interval
        if due == 0:  # what is due is held back by its owner: wait until the soonest is free
            due = min((held for held in (kind.held_back() for kind in self.kinds) if held > 0),
                      default=self.poll_interval)
        return min(self.poll_interval, max(due, 0.001))

    def _failed(self, job: Job, err: Exception) -> None:
        permanent = isinstance(err, PermanentError)
        reason = f"{type(err).__name__}: {err}"
        if not permanent:
            log.warning("job %s (%s) attempt %s failed: %s", job.id, job.kind, job.attempts, reason,
                        exc_info=not isinstance(err, OSError))
        dead = self.queue.fail(job, reason, permanent=permanent)
        if dead:
            log.error("job %s (%s) dead-lettered: %s", job.id, job.kind, reason)
            self.on_dead[job.kind](job, reason)
