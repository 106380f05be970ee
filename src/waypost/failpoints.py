"""Named points where an operator or a test can make a process stop or fail on purpose.

``WAYPOST_FAILPOINTS="outbox.after_send=pause"`` makes the process write
``<WAYPOST_FAILPOINT_DIR>/<name>.hit`` when it reaches that point and then block, so a test
can SIGKILL it exactly there; ``=error`` raises RuntimeError; ``=oserror`` raises OSError;
``=crash`` kills the process on the spot (SIGKILL), as a segfaulting decoder would.
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


_ACTIVE = _configured()


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
