"""Inbound de-duplication: one mail that arrives twice is handled once.

Invariant 1 answers 250 only after the commit, so a crash between the two leaves a stored mail
whose sender never heard back and sends it again: two rows, two jobs, and without this check two
journeys and two replies. A copy is recognised by its sender (the From address, any case; the
envelope sender when there is no From) and its Message-ID header; a mail without a Message-ID is
never a duplicate.

The decision is a claim on ``inbound_dedupe`` taken inside the transaction that records the
message processed (``claim``), so it commits with the app's effects or not at all. Its key is the
primary key: on PostgreSQL a second claimer's insert waits for the first transaction and then
finds its row (locked ``FOR UPDATE`` before it is read); on SQLite ``BEGIN IMMEDIATE`` lets one
writer in at a time. Either way two workers handling both copies at once answer one of them.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.store.db import conflict_insert, is_postgres
from waypost.store.models import InboundStatus, inbound_dedupe, inbound_messages

# a claim holds while its message is handled or being handled; a dead or vanished one is taken over
_HOLDING = (InboundStatus.QUEUED, InboundStatus.PROCESSED)


def dedupe_key(sender: str | None, message_id: str | None) -> str | None:
    """The claim key of a mail, or None when it has no Message-ID (then it is never a duplicate)."""
    message_id = (message_id or "").strip()
    if not message_id:
        return None
    return hashlib.sha256(f"{(sender or '').strip().lower()}\n{message_id}".encode()).hexdigest()


def duplicate_reason(earlier_id: str) -> str:
    return f"duplicate of {earlier_id} (same sender and Message-ID)"


class DuplicateGuard:
    def __init__(self, window: timedelta) -> None:
        self.window = window

    def earlier_copy(self, conn: Connection, key: str, message_id: str, received_at: datetime) -> str | None:
        """The id of another copy that holds ``key`` within the window, or None. Only a hint when
        read outside ``claim`` (it saves the slow work of a copy already answered)."""
        return self._holder(conn, key, message_id, received_at, lock=False)

    def claim(self, conn: Connection, key: str, message_id: str, received_at: datetime) -> str | None:
        """In the transaction that records ``message_id`` processed: claim ``key`` for it and
        return None, or return the id of the earlier copy that holds it (then this one must
        have no effects). A claim older than the window, or whose message ended dead or is gone,
        passes to this message."""
        insert = conflict_insert(conn, inbound_dedupe)
        conn.execute(insert.values(key=key, inbound_id=message_id, received_at=received_at)
                     .on_conflict_do_nothing(index_elements=["key"]))
        earlier = self._holder(conn, key, message_id, received_at, lock=True)
        if earlier is None:  # ours already, or taken over
            conn.execute(inbound_dedupe.update().where(inbound_dedupe.c.key == key)
                         .values(inbound_id=message_id, received_at=received_at))
        return earlier

    def _holder(self, conn: Connection, key: str, message_id: str, received_at: datetime, *,
                lock: bool) -> str | None:
        query = sa.select(inbound_dedupe).where(inbound_dedupe.c.key == key)
        if lock and is_postgres(conn):  # SQLite: BEGIN IMMEDIATE already serialises writers
            query = query.with_for_update()
        claim = conn.execute(query).first()
        if claim is None or claim.inbound_id == message_id or claim.received_at <= received_at - self.window:
            return None
        status = conn.execute(sa.select(inbound_messages.c.status)
                              .where(inbound_messages.c.id == claim.inbound_id)).scalar_one_or_none()
        return claim.inbound_id if status in _HOLDING else None
