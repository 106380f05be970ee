"""Issue 16's policy on a real database: a bounce that blames our sending never suppresses the
recipient, counts toward the "sending setup and reputation" signal, and after
``feedback.setup_alarm_count`` of them in a day fires the ``sending_setup`` alarm, which says
what to check. A smarthost's refusal at RCPT gets the same reasons."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_feedback_policy import entry, events, send
from tests.integration.test_outbox import Recorder
from waypost import runtime as wiring
from waypost.feedback import log as feedback_log
from waypost.feedback.events import BounceType, FeedbackEvent, Kind, Source
from waypost.outbound.senders.base import RecipientRefusedError
from waypost.reputation.alarms import evaluate
from waypost.store.models import outbound_messages, utcnow

GMAIL_DMARC = ("smtp; 550-5.7.26 Unauthenticated email from waypost.test is not accepted due to domain's DMARC "
               "policy. Please contact the administrator of waypost.test domain")


@pytest.fixture
def build(make_settings: Callable[..., Any], database_url: str) -> Iterator[Callable[..., Any]]:
    built: list[Any] = []

    def make(**overrides: Any) -> Any:
        runtime = wiring.build(make_settings(database={"url": database_url}, **overrides), sender=Recorder())
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


def ses_bounce(recipient: str, diagnostic: str, *, feedback_id: str, status: str = "5.7.26") -> FeedbackEvent:
    """An SES Permanent/General bounce: SES hides every cause behind General, the diagnostic tells."""
    from waypost.feedback.reasons import classify_ses

    return FeedbackEvent(Kind.BOUNCE, Source.SES, recipient, utcnow(), provider_message_id=f"ses-{feedback_id}",
                         feedback_id=feedback_id, bounce_type=BounceType.PERMANENT, bounce_subtype="General",
                         status=status, diagnostic=diagnostic, raw="{}",
                         reason=classify_ses("Permanent", "General", status, diagnostic))


def _setup_alarm(runtime: Any) -> Any:
    [alarm] = [a for a in evaluate(runtime.snapshot(), runtime.settings.alarms) if a.name == "sending_setup"]
    return alarm


def test_bounces_about_our_sending_never_suppress_and_raise_the_setup_alarm(build: Any) -> None:
    runtime = build()
    friends = ["ann@example.org", "bob@example.org", "cy@example.org"]

    applied = runtime.intake.apply([ses_bounce(a, GMAIL_DMARC, feedback_id=f"f{n}") for n, a in enumerate(friends)])

    assert applied.outcomes["review"] == 3 and not applied.suppressed
    assert all(entry(runtime, address) is None for address in friends)
    rows = events(runtime)
    assert {(row.outcome, row.counts_as) for row in rows} == {("review", "setup")}
    assert all(row.note.startswith("authfailure:") for row in rows)
    assert {row.reason for row in rows} == {"authfailure"}  # kept with each event (migration 0008)
    with runtime.engine.connect() as conn:
        assert {record.reason for record in feedback_log.recent(conn, limit=10)} == {"authfailure"}
    alarm = _setup_alarm(runtime)
    assert alarm.firing and alarm.value == 3 and alarm.threshold == 3
    assert "3 authfailure" in alarm.detail and "DMARC" in alarm.advice


def test_fewer_than_the_setting_leave_the_alarm_quiet(build: Any) -> None:
    runtime = build(feedback={"setup_alarm_count": 5})
    runtime.intake.apply([ses_bounce(f"p{n}@example.org", GMAIL_DMARC, feedback_id=f"g{n}") for n in range(4)])
    alarm = _setup_alarm(runtime)
    assert not alarm.firing and alarm.value == 4 and alarm.threshold == 5


def test_a_dead_address_is_still_suppressed_at_once(build: Any) -> None:
    runtime = build()
    runtime.intake.apply([ses_bounce("gone@example.org", "smtp; 550 5.1.1 <gone@example.org>: user unknown",
                                     feedback_id="d1", status="5.1.1")])
    found = entry(runtime, "gone@example.org")
    assert found is not None and found.expires_at is None
    assert [(row.outcome, row.reason) for row in events(runtime)] == [("suppressed", "userunknown")]
    assert not _setup_alarm(runtime).firing


@pytest.mark.parametrize(("reply", "suppressed", "outcome"), [
    ("5.1.1 <ann@example.org>: Recipient address rejected: User unknown in local recipient table", True,
     "suppressed"),
    ("no such user here", True, "suppressed"),  # the refusal answered RCPT TO: that is proof
    ("5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org", False, "review"),
])
def test_a_smarthost_refusal_at_rcpt_gets_the_same_reasons(build: Any, reply: str, suppressed: bool,
                                                          outcome: str) -> None:
    runtime = build()
    row_id = send(runtime, "ann@example.org", "refused-1")
    with runtime.engine.connect() as conn:
        row = conn.execute(sa.select(outbound_messages).where(outbound_messages.c.id == row_id)).one()

    runtime.intake.recipient_refused(row, RecipientRefusedError("refused", code=550, reply=reply))

    assert (entry(runtime, "ann@example.org") is not None) is suppressed
    [event] = [r for r in events(runtime) if r.source == "smtp"]
    assert event.outcome == outcome
