"""What people told Waypost that the operator must hear, and the digest mail that says it.

Four kinds of notice, read from what the pipeline and the feedback path already record (no table
of their own): a complaint (``feedback_events``), a report to ``abuse@`` and a removal request
to ``unsubscribe@`` without a token (the inbound messages' recorded outcomes, whose reasons start
with ``OPERATOR_INBOX_NOTE`` and ``REMOVAL_REQUEST_NOTE``), and a new suppression for any reason
but a person's own stop or a complaint (listed already) (``suppression_log``).

The digest goes through the outbox on the operator stream (no unsubscribe link, never
suppressed), at most once per ``alarms.digest_interval_minutes``, and only when there is
something to say. Its window starts where the last digest's ended, kept in the
``alarm_states`` row ``operator_digest`` (``mailed_at``), locked so two workers send one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.outbound.compose import Composer, Draft
from waypost.outbound.control import OPERATOR_STREAM
from waypost.outbound.outbox import OutboundMessage, Outbox
from waypost.outbound.suppression import Reason
from waypost.store.db import conflict_insert, is_postgres
from waypost.store.models import InboundStatus, alarm_states, feedback_events, inbound_messages, suppression_log, utcnow

log = logging.getLogger(__name__)

# the recorded outcome of mail kept in the operator inbox: "kept for the operator (abuse@…)"
OPERATOR_INBOX_NOTE = "kept for the operator"
# the recorded outcome of mail to unsubscribe@ that carries no token
REMOVAL_REQUEST_NOTE = "no valid unsubscribe token"
DIGEST_STATE = "operator_digest"
FIRST_WINDOW = timedelta(days=1)  # the first digest looks this far back
LIMIT = 200  # notices of one kind in one digest; the console lists them all

# kind -> heading, in the order the digest and the console show them
KINDS = (("complaint", "Complaints (marked as spam)"), ("abuse-report", "Reports to abuse@"),
         ("removal-request", "Removal requests without a token (act on them: `waypost suppression add`)"),
         ("suppression", "New suppressions"))


@dataclass(frozen=True)
class Notice:
    at: datetime
    kind: str  # one of KINDS
    address: str  # who it is about
    detail: str


def notices(conn: Connection, since: datetime, until: datetime | None = None, *, limit: int = LIMIT) -> list[Notice]:
    """Every notice in (since, until], oldest first within each kind, in the order of KINDS."""
    until = until or utcnow()
    return [*_complaints(conn, since, until, limit), *_abuse_reports(conn, since, until, limit),
            *_removal_requests(conn, since, until, limit), *_suppressions(conn, since, until, limit)]


def recent_notices(engine: Engine, within: timedelta) -> list[Notice]:
    """The notices of the last ``within``, for the console and `waypost inbox notices`."""
    with engine.connect() as conn:
        return notices(conn, utcnow() - within)


def _complaints(conn: Connection, since: datetime, until: datetime, limit: int) -> list[Notice]:
    e = feedback_events.c
    rows = conn.execute(sa.select(e.received_at, e.recipient, e.feedback_type, e.source, e.stream).where(
        e.kind == "complaint", e.received_at > since, e.received_at <= until).order_by(e.received_at).limit(limit))
    return [Notice(r.received_at, "complaint", r.recipient or "(unknown recipient)",
                   f"{r.feedback_type or 'complaint'} via {r.source}" + (f" about {r.stream} mail" if r.stream else ""))
            for r in rows]


def _inbound(conn: Connection, since: datetime, until: datetime, limit: int, prefix: str) -> list[sa.Row]:
    m = inbound_messages.c
    return list(conn.execute(sa.select(m.id, m.received_at, m.from_address, m.mail_from, m.subject).where(
        m.status == InboundStatus.PROCESSED, m.reason.startswith(prefix, autoescape=True),
        m.received_at > since, m.received_at <= until).order_by(m.received_at).limit(limit)))


def _abuse_reports(conn: Connection, since: datetime, until: datetime, limit: int) -> list[Notice]:
    rows = _inbound(conn, since, until, limit, f"{OPERATOR_INBOX_NOTE} (abuse@")
    return [Notice(r.received_at, "abuse-report", r.from_address or r.mail_from or "(no sender)",
                   f"“{(r.subject or '')[:120]}” (inbox {r.id})") for r in rows]


def _removal_requests(conn: Connection, since: datetime, until: datetime, limit: int) -> list[Notice]:
    rows = _inbound(conn, since, until, limit, REMOVAL_REQUEST_NOTE)
    return [Notice(r.received_at, "removal-request", r.from_address or r.mail_from or "(no sender)",
                   f"“{(r.subject or '')[:120]}” (message {r.id})") for r in rows]


def _suppressions(conn: Connection, since: datetime, until: datetime, limit: int) -> list[Notice]:
    s = suppression_log.c
    rows = conn.execute(sa.select(s.at, s.address, s.reason, s.by, s.note).where(
        s.action == "add", s.reason.not_in([Reason.UNSUBSCRIBE.value, Reason.COMPLAINT.value]),
        s.at > since, s.at <= until).order_by(s.at).limit(limit))
    return [Notice(r.at, "suppression", r.address, f"{r.reason} by {r.by}" + (f": {r.note[:160]}" if r.note else ""))
            for r in rows]


class OperatorDigest:
    def __init__(self, engine: Engine, composer: Composer, outbox: Outbox, *, operator: str, envelope_sender: str,
                 interval: timedelta) -> None:
        self.engine = engine
        self.composer = composer
        self.outbox = outbox
        self.operator = operator
        self.envelope_sender = envelope_sender
        self.interval = interval

    def run(self, now: datetime | None = None) -> int:
        """Queue a digest when one is due and there is news; return how many notices it carries.
        ``now``: the moment to judge by (default: the clock)."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            last = self._lock_state(conn, now)
            if last is not None and now - last < self.interval:
                return 0
            since = last or now - FIRST_WINDOW
            found = notices(conn, since, now)
            if not found:
                return 0  # the window stays open: the next digest starts where the last one ended
            self._queue(conn, found, since, now)
            conn.execute(alarm_states.update().where(alarm_states.c.name == DIGEST_STATE).values(mailed_at=now))
        log.info("operator digest queued: %d notices since %s", len(found), since)
        return len(found)

    def _queue(self, conn: Connection, found: list[Notice], since: datetime, now: datetime) -> None:
        minutes = self.interval.total_seconds() / 60
        draft = Draft(template="operator/digest", to=self.operator, stream=OPERATOR_STREAM,
                      subject=f"Waypost: {len(found)} thing{'s' if len(found) != 1 else ''} people told us",
                      context={"notices": found, "since": since, "kinds": KINDS, "interval_minutes": f"{minutes:g}"})
        composed = self.composer.compose(draft)
        self.outbox.queue_message(conn, OutboundMessage(
            idempotency_key=f"operator-digest-{now:%Y%m%dT%H%M%S%f}", stream=OPERATOR_STREAM, recipient=self.operator,
            envelope_sender=self.envelope_sender, subject=composed.subject, message_id=composed.message_id,
            raw=composed.raw))

    @staticmethod
    def _lock_state(conn: Connection, now: datetime) -> datetime | None:
        """When the last digest's window ended (None: never), with its row locked."""
        insert = conflict_insert(conn, alarm_states)
        conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]),
                     [{"name": DIGEST_STATE, "firing": False, "since": now}])
        query = sa.select(alarm_states.c.mailed_at).where(alarm_states.c.name == DIGEST_STATE)
        return conn.execute(query.with_for_update() if is_postgres(conn) else query).scalar()
