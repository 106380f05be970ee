"""Where feedback comes in: every path (the SQS consumer, the SNS endpoint, bounce and
complaint mail, the `waypost feedback apply` command) hands its events here, and each batch
is applied in one transaction together with the reputation guard's verdict on it.

Queue-borne events get a transaction of their own (``FeedbackIntake.apply``); mail-borne
reports are applied inside the processing transaction of the mail that carried them
(``apply_on``), so that the report's effects and "mail processed" commit together. Both go
through ``FeedbackApplier.apply_on``, the one place that says when the guard judges."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.feedback.dsn import assess, effective_status
from waypost.feedback.events import FeedbackEvent, FeedbackFormatError, Source
from waypost.feedback.policy import Applied, FeedbackPolicy
from waypost.feedback.ses_events import parse_ses_notification
from waypost.outbound.senders.base import RecipientRefusedError
from waypost.reputation.guard import ReputationGuard
from waypost.store.models import feedback_unreadable, utcnow

log = logging.getLogger(__name__)

MAX_KEPT_BODY = 1024 * 1024  # an unreadable body is kept up to this many characters


class FeedbackApplier:
    """Applies feedback inside a transaction the caller holds."""

    def __init__(self, policy: FeedbackPolicy, guard: ReputationGuard) -> None:
        self.policy = policy
        self.guard = guard

    def apply_on(self, conn: Connection, events: Sequence[FeedbackEvent]) -> Applied:
        """Apply one batch on ``conn`` and let the guard judge the result there, so that
        both commit (or roll back) with the caller's transaction. Idempotent (the policy
        dedupes); raises on a database error."""
        applied = self.policy.apply(conn, events)
        if _moves_a_rate(applied):
            self.guard.enforce_if_due(conn)
        return applied


def _moves_a_rate(applied: Applied) -> bool:
    # a batch that neither suppressed nor scored an address gives the guard nothing new to judge
    return bool(applied.outcomes.get("suppressed") or applied.outcomes.get("scored"))


class FeedbackIntake(FeedbackApplier):
    def __init__(self, engine: Engine, policy: FeedbackPolicy, guard: ReputationGuard) -> None:
        super().__init__(policy, guard)
        self.engine = engine

    def apply(self, events: Sequence[FeedbackEvent]) -> Applied:
        """Apply one batch and let the guard judge the result, in one commit; raises on a
        database error (the caller's transport then redelivers, and dedupe makes that safe)."""
        with self.engine.begin() as conn:
            applied = self.apply_on(conn, events)
        if applied.received:
            log.info("feedback: %s", applied)
        return applied

    def apply_ses_message(self, message: str, source: str) -> Applied | None:
        """An SES notification as SNS delivered it; an unreadable one is kept, not raised."""
        try:
            events = parse_ses_notification(message)
        except FeedbackFormatError as err:
            self.keep_unreadable(message, str(err), source)
            return None
        return self.apply(events)

    def recipient_refused(self, row: sa.Row, err: RecipientRefusedError) -> None:
        """Our smarthost refused a recipient at RCPT (no DSN will follow): a bounce like any other."""
        status = effective_status(None, err.reply)
        diagnostic = f"smtp; {err.code} {err.reply}"
        # the refusal answered RCPT TO (RFC 5321 §4.1.1.3): an "unknown user" here is proof
        verdict = assess(status, "failed", diagnostic, permanent_hint=True, context="refused at RCPT TO")
        event = FeedbackEvent(verdict.kind, Source.SMTP, row.recipient, utcnow(), verp_address=row.envelope_sender,
                              message_id_header=row.message_id_header, feedback_id=f"rcpt-{row.id}",
                              bounce_type=verdict.bounce_type, bounce_subtype=verdict.subtype, action="failed",
                              status=status, diagnostic=diagnostic, raw=str(err), reason=verdict.reason,
                              reply_code=str(err.code))
        try:
            self.apply([event])
        except Exception:  # the message's own outcome is recorded; the suppression can wait for a DSN
            log.exception("could not apply the refusal of %s", row.recipient)

    def keep_unreadable(self, body: str, reason: str, source: str) -> None:
        log.warning("unreadable feedback from %s kept for the operator: %s", source, reason)
        with self.engine.begin() as conn:
            conn.execute(feedback_unreadable.insert().values(received_at=utcnow(), source=source[:16],
                                                             reason=reason[:2000], body=body[:MAX_KEPT_BODY]))
