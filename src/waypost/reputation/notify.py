"""Alarm mail to the operator, through the outbox like every other message (stream
``operator``: held by its own pause scope only, see ``outbound.control``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Connection

from waypost.outbound.compose import Composer, Draft
from waypost.outbound.control import OPERATOR_STREAM
from waypost.outbound.outbox import OutboundMessage, Outbox
from waypost.reputation.alarms import Alarm, Notify
from waypost.store.models import utcnow

TEMPLATES = Path(__file__).parent / "templates"


def alarm_mailer(composer: Composer, outbox: Outbox, *, operator: str, envelope_sender: str,
                 interval_hours: float) -> Notify:
    def notify(conn: Connection, alarm: Alarm, since: datetime) -> None:
        now = utcnow()
        draft = Draft(template="operator/alarm", to=operator, subject=f"Waypost alarm: {alarm.name}",
                      stream=OPERATOR_STREAM,
                      context={"alarm": alarm, "since": since, "interval_hours": f"{interval_hours:g}"})
        composed = composer.compose(draft)
        outbox.queue_message(conn, OutboundMessage(
            idempotency_key=f"alarm-{alarm.name}-{since:%Y%m%dT%H%M%S}-{now:%Y%m%dT%H%M%S}",
            stream=OPERATOR_STREAM, recipient=operator, envelope_sender=envelope_sender,
            subject=composed.subject, message_id=composed.message_id, raw=composed.raw))

    return notify
