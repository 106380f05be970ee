"""Accept errors (a process out of descriptors) are logged once per interval with a count:
asyncio reports each one with a traceback, and a flood turned that into megabytes a minute."""

from __future__ import annotations

import errno
import logging
import os
import re
from typing import Any

import pytest

from waypost.server import AcceptErrorLog


def out_of_descriptors() -> dict[str, Any]:
    # what asyncio's selector loop passes its exception handler when accept() fails
    return {"message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, os.strerror(errno.EMFILE))}


def test_accept_errors_are_logged_once_per_interval_with_their_count(caplog: pytest.LogCaptureFixture) -> None:
    ticks = [0]  # hundredths of a second: an exact clock
    passed: list[dict[str, Any]] = []
    handler = AcceptErrorLog(lambda loop, context: passed.append(context), interval=60.0,
                             clock=lambda: ticks[0] / 100)
    with caplog.at_level(logging.INFO, logger="waypost.server"):
        for tick in range(180 * 100):  # 100 failures a second for three minutes
            ticks[0] = tick
            handler(None, out_of_descriptors())  # type: ignore[arg-type]
    lines = [record for record in caplog.records if record.name == "waypost.server"]
    counts = [int(re.search(r"\((\d+) time", record.getMessage())[1]) for record in lines]  # type: ignore[index]
    assert counts == [1, 6000, 6000], [record.getMessage() for record in lines]
    assert all("Too many open files" in record.getMessage() and record.exc_info is None for record in lines)
    assert passed == [], "none reached the default handler, with its traceback"


@pytest.mark.parametrize("context", [
    {"message": "Task exception was never retrieved", "exception": RuntimeError("boom")},
    {"message": "socket.accept() failed", "exception": OSError(errno.ECONNABORTED, "aborted")},
    {"message": "Fatal error on transport", "exception": OSError(errno.EMFILE, "Too many open files")},
])
def test_every_other_report_is_passed_on_unchanged(context: dict[str, Any]) -> None:
    passed: list[dict[str, Any]] = []
    handler = AcceptErrorLog(lambda loop, context: passed.append(context), clock=lambda: 0.0)
    handler(None, context)  # type: ignore[arg-type]
    handler(None, context)  # type: ignore[arg-type]
    assert passed == [context, context]
