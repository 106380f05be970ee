"""Work counted instead of timed: tests that a parser stops early or grows linearly compare
step counts, which unlike the clock do not depend on the machine or on what else runs on it.
(How long something takes is for a benchmark under benchmarks/, never for a test.)"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def steps_while(action: Callable[[], T]) -> tuple[int, T]:
    """Lines of Python run and C functions called while ``action`` runs (a Python loop shows in
    its lines, a C loop only through the calls it makes). An exception from ``action`` is
    returned as the result, so refusals can be measured too."""
    steps = 0

    def calls(frame: Any, event: str, arg: Any) -> None:
        nonlocal steps
        if event == "c_call":
            steps += 1

    def lines(frame: Any, event: str, arg: Any) -> Any:
        nonlocal steps
        steps += 1  # call, line, return and exception events of Python code
        return lines

    previous = sys.getprofile(), sys.gettrace()
    sys.setprofile(calls)
    sys.settrace(lines)
    try:
        result: Any = action()
    except Exception as err:  # noqa: BLE001 - the refusal is the result being measured
        result = err
    finally:
        sys.settrace(previous[1])
        sys.setprofile(previous[0])
    return steps, result
