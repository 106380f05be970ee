"""The state machines of the tables in ``models.py``, one enum each (the stored values are
these strings). Kept apart from the table definitions so that code which only names a state
(the CLI's choices) does not load SQLAlchemy."""

from __future__ import annotations

from enum import StrEnum


class InboundStatus(StrEnum):
    """An inbound message: ``queued`` → ``processed`` (handled by an app, or kept for the
    operator) | ``refused`` (failed the gate) | ``dead`` (its job was dead-lettered)."""

    QUEUED = "queued"
    PROCESSED = "processed"
    REFUSED = "refused"
    DEAD = "dead"


class JobState(StrEnum):
    """A job: ``queued`` → ``running`` → ``done``; from ``running`` back to ``queued`` (a retry
    or a deferral) or ``dead`` (a permanent failure, or no attempts left)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


class OutboundState(StrEnum):
    """An outbound message: ``queued`` → ``sending`` (admitted) → ``sent`` | ``failed``;
    ``queued`` → ``suppressed``; ``queued`` ↔ ``paused``; a transient error puts ``sending``
    back to ``queued``."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    PAUSED = "paused"
