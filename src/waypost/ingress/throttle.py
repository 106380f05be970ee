"""One log line per interval for an event that can repeat thousands of times a second (a
connection flood, a process out of file descriptors): a line per event would fill the disk
and bury everything else in the log, and the count says as much as the lines would."""

from __future__ import annotations

import time
from collections.abc import Callable


class LogThrottle:
    """Counts events; lets the first through at once, then at most one per ``interval``
    seconds, each carrying how many happened since the last one let through. ``clock`` is
    injectable so tests need not wait."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._count = 0
        self._last: float | None = None

    def note(self) -> int | None:
        """Count one event: the events counted since the last report (this one included) when
        a report is due now, else None."""
        self._count += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return None
        count, self._count, self._last = self._count, 0, now
        return count
