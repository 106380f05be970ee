"""The service's clock: every time Waypost stores or compares is an aware UTC datetime
(invariant 8). The edges (web, CLI) read it here rather than from the store."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as an aware datetime in UTC."""
    return datetime.now(UTC)
