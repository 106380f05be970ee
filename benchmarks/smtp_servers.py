"""SMTP servers the benchmarks start as processes of their own on loopback: `waypost serve` or a
bare aiosmtpd script, each printing an `smtp: HOST:PORT` line once it listens."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from typing import TextIO


def start(command: list[str], env: dict[str, str], *, within: float = 60.0) -> tuple[subprocess.Popen[str], int]:
    """Start ``command`` and wait (at most ``within`` seconds) for its `smtp:` line; the process
    and its port. Its later output is read and dropped so the pipe never fills."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, start_new_session=True)
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if match := re.match(r"^smtp: .*:(\d+)$", line.strip()):
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return process, int(match.group(1))
    process.kill()
    raise SystemExit("the server did not report its SMTP port:\n" + "\n".join(seen))


def _drain(stream: TextIO) -> None:
    for _ in stream:  # keep the pipe from filling up; the lines are not needed
        pass


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
