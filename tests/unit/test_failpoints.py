"""Failpoints as a process sees them: the actions, and a misspelt spec refused at start."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from waypost import failpoints


def run_hit(spec: str, name: str = "here") -> subprocess.CompletedProcess[str]:
    """``failpoints.hit(name)`` in a fresh interpreter with WAYPOST_FAILPOINTS set to ``spec``;
    it prints "after" once the hit returns."""
    code = f"from waypost import failpoints; failpoints.hit({name!r}); print('after')"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "WAYPOST_FAILPOINTS": spec},
                          capture_output=True, text=True, timeout=60)


def test_unset_and_other_names_do_nothing() -> None:
    assert run_hit("").stdout == "after\n"
    assert run_hit("elsewhere=error").stdout == "after\n"


def test_error_and_oserror_raise_there() -> None:
    assert "RuntimeError: failpoint here" in run_hit("here=error").stderr
    assert "OSError: failpoint here" in run_hit("here=oserror").stderr


def test_delay_waits_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float | None] = []
    monkeypatch.setattr(failpoints, "_ACTIVE", {"here": "delay:0.25"})
    monkeypatch.setattr(threading.Event, "wait", lambda self, timeout=None: waits.append(timeout))
    failpoints.hit("here")
    failpoints.hit("elsewhere")
    assert waits == [0.25]
    done = run_hit("here=delay:0.01, other=crash")
    assert (done.returncode, done.stdout) == (0, "after\n")


@pytest.mark.parametrize("spec", ["here=pasue", "here=delay", "here=delay:", "here=delay:soon", "here=delay:-1",
                                  "here=delay:nan", "here=delay:inf", "here=crash:now"])
def test_a_misspelt_action_stops_the_process_at_start(spec: str) -> None:
    done = run_hit(spec)
    assert done.returncode != 0
    assert "WAYPOST_FAILPOINTS" in done.stderr and "here=" in done.stderr
