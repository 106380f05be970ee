"""What the benchmark's own processes and everyone else's are doing, from Linux's /proc.

A benchmark cannot stop other work on a shared machine, but it can say how much there
was: ``CpuWatch`` reports how many CPUs other processes kept busy while a section ran,
so a ratio taken on a busy machine is read as such.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal in /proc/stat's "cpu" line
_PPID, _UTIME, _STIME = 0, 10, 11  # in the list _all_stats gives for a process (proc(5) fields 4, 14, 15)


def status_kib(pid: int | str, field: str) -> int:
    """A ``/proc/PID/status`` figure such as VmRSS or VmHWM, in KiB (0 once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((line for line in text.splitlines() if line.startswith(f"{field}:")), f"{field}: 0 kB")
    return int(line.split()[1])


def reset_peak(pid: int | str) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def descendants(root: int) -> list[int]:
    """Every live process below ``root``: with a pool, the fork server, the resource tracker
    and the workers (the fork server's children)."""
    parents = {pid: fields[_PPID] for pid, fields in _all_stats().items()}
    found, frontier = [], {root}
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = set(children)
    return found


def _all_stats() -> dict[int, list[int]]:
    """Each live process's /proc/PID/stat fields from ppid to stime (proc(5) fields 4-15), as ints."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # the command name is in parentheses and may hold anything: split after the last ")"
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1:]
                stats[int(entry.name)] = [int(value) for value in fields[:12]]
            except (OSError, IndexError, ValueError):
                continue
    return stats


def machine_busy_seconds() -> float:
    """CPU-seconds all CPUs have spent busy since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return sum(int(first[index]) for index in _BUSY_FIELDS) / _CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU-seconds used by this process, its waited-for children, and its live descendants."""
    times = os.times()
    stats = _all_stats()
    live = sum(stats[pid][_UTIME] + stats[pid][_STIME] for pid in descendants(os.getpid()) if pid in stats)
    return times.user + times.system + times.children_user + times.children_system + live / _CLOCK_TICKS


class CpuWatch:
    """How many CPUs, on average, processes other than ours kept busy since ``start``."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self._wall, self._machine, self._own = time.monotonic(), machine_busy_seconds(), own_cpu_seconds()

    def others(self) -> float:
        wall = max(time.monotonic() - self._wall, 1e-9)
        machine = machine_busy_seconds() - self._machine
        own = own_cpu_seconds() - self._own
        return max(0.0, (machine - own) / wall)
