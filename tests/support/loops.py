"""Running a coroutine from a synchronous test."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a thread of its own: the browser fixture's Playwright keeps an event loop
    running in the main thread for the whole session, and asyncio.run refuses to start beside it."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(coroutine))
        except BaseException as err:  # noqa: BLE001  (raised again in the caller's thread)
            failure.append(err)

    thread = threading.Thread(target=run, name="run-apart")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


async def until(condition: Callable[[], bool], *, within: float = 10.0, what: str = "condition") -> None:
    """Let the other tasks on this loop run until ``condition`` holds; fail at the deadline."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {within} s")
        await asyncio.sleep(0)  # one turn of the loop: the other tasks run, no time passes
