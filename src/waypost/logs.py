"""Logging for every `waypost` command: lines for people (``text``, the default) or one JSON
object per line for log collectors (``json``, rendered by structlog).

All of Waypost logs through the standard library; structlog's ProcessorFormatter turns each
record into JSON with ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` (the
message), ``process`` and, for errors, ``exception``. Extra fields passed with
``log.info(..., extra={...})`` become keys of their own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# loggers that talk too much at INFO for an operator
QUIET = ("mail.log", "alembic", "flufl.bounce")
# attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
                _extra_fields,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        ))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def _extra_fields(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event.get("_record")
    if record is not None:
        event["process"] = record.process
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                event.setdefault(key, value)
    return event
