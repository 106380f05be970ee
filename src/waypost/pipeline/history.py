"""What the gate asks the database about a sender: how much they wrote lately, and whether
they left (steps 4 and 5 of the gate's decision, ``gate.py``)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from waypost.mail.addresses import address_key
from waypost.outbound import suppression
from waypost.store.models import InboundStatus, inbound_messages, utcnow

_LEFT = {suppression.Reason.UNSUBSCRIBE: "unsubscribed", suppression.Reason.COMPLAINT: "complained about our mail"}


class SenderHistory:
    def __init__(self, engine: Engine, window: timedelta) -> None:
        self.engine = engine
        self.window = window

    def recent_count(self, address: str) -> int:
        """Messages from ``address`` (any case) processed within the window."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                sa.func.lower(inbound_messages.c.from_address) == address.lower(),
                inbound_messages.c.status == InboundStatus.PROCESSED,
                inbound_messages.c.received_at > utcnow() - self.window)).scalar_one())

    def has_left(self, address: str) -> str | None:
        """Why ``address`` left (unsubscribed, complained), or None while they have not."""
        with self.engine.connect() as conn:
            # leaving as ann@ covers ann+trips@ too: the gate compares senders without +tags
            entry = suppression.lookup(conn, address) or suppression.lookup(conn, address_key(address))
        return _LEFT.get(entry.reason) if entry is not None else None

    def stopped_by_self(self, address: str) -> bool:
        """Whether ``address`` left by their own ``stop`` by mail, which they alone may undo
        (``start``): not an operator's removal, a complaint or a bounce."""
        with self.engine.connect() as conn:
            entry = suppression.lookup(conn, address) or suppression.lookup(conn, address_key(address))
        return entry is not None and suppression.left_by_self(entry)
