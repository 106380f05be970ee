"""Named points where an operator or a test can make a process stop or fail on purpose.

``WAYPOST_FAILPOINTS="outbox.after_send=pause"`` makes the process write
``<WAYPOST_FAILPOINT_DIR>/<name>.hit`` when it reaches that point and then block, so a test
can SIGKILL it exactly there; ``=error`` raises RuntimeError; ``=oserror`` raises OSError;
``=crash`` kills the process on the spot (SIGKILL), as a segfaulting decoder would;
``=delay:0.05`` waits that many seconds and goes on, as a slow provider or disk would.
Unset (the normal case) a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path


def _configured() -> dict[str, str]:
    spec = os.environ.get("WAYPOST_FAILPOINTS", "")
    pairs = (item.split("=", 1) for item in spec.split(",") if "=" in item)
    return {name.strip(): action.strip() for name, action in pairs}


def _check(spec: dict[str, str]) -> dict[str, str]:
    """The spec, or ValueError naming the action nobody would otherwise notice was misspelt."""
    for name, action in spec.items():
        kind, _, argument = action.partition(":")
        if kind not in {"pause", "error", "oserror", "crash", "delay"} or (kind == "delay") != bool(argument):
            raise ValueError(f"WAYPOST_FAILPOINTS: {name}={action!r} is not pause, error, oserror, crash "
                             "or delay:SECONDS")
        if kind == "delay":
            try:
                seconds = float(argument)
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < float("inf"):
                raise ValueError(f"WAYPOST_FAILPOINTS: {name}={action!r}: the delay is not a number of seconds")
    return spec


_ACTIVE = _check(_configured())


def hit(name: str) -> None:
    action = _ACTIVE.get(name)
    if action is None:
        return
    if action == "pause":
        marker_dir = Path(os.environ.get("WAYPOST_FAILPOINT_DIR", "."))
        (marker_dir / f"{name}.hit").write_text(str(os.getpid()))
        threading.Event().wait()  # until the process is killed
    elif action == "error":
        raise RuntimeError(f"failpoint {name}")
    elif action == "oserror":
        raise OSError(f"failpoint {name}")
    elif action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("delay:"):
        threading.Event().wait(float(action[len("delay:"):]))
