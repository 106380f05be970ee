"""One drill: queue a message per scenario through the real outbox (pause switches, suppression,
reputation guard, rate and quota all apply), hand them over, wait with a deadline for what
each must produce, judge, record.

- SES mode: the configured SES transport mails the mailbox simulator; the events come back
  the configured way. With ``feedback.sqs_queue_url`` the drill reads the queue itself with the
  worker's consumer (another worker reading it too is fine: the policy dedupes); with the SNS
  endpoint the web process applies them. Either way the drill watches ``feedback_events``.
- SMTP and catcher mode: the same outbox hands the messages to a loopback MX started for the
  drill (``ingress.drill_mx``), DKIM-signed as the smarthost would get them in SMTP mode; the
  simulated provider's answers (``simulator``) enter through Waypost's own inbox.

The drill's sends are jobs of their own kind (``drill-send``), so a worker running elsewhere
never hands a drill message to the real transport; whatever is left when the drill ends is
failed and its jobs removed, so nothing lingers to raise a stale-job alarm.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from waypost.clock import utcnow
from waypost.drill import history, simulator
from waypost.drill.history import FAIL, PASS, DrillRun, Outcome
from waypost.drill.scenarios import SENT, Scenario, scenarios_for
from waypost.ingress.drill_mx import DrillMx
from waypost.outbound.outbox import OutboundMessage, Outbox
from waypost.outbound.senders.base import Sender
from waypost.pipeline.inbox import INBOUND_JOB
from waypost.pipeline.worker import Worker
from waypost.store.models import OutboundState, feedback_events, jobs, outbound_messages

if TYPE_CHECKING:
    from waypost.runtime import Runtime

log = logging.getLogger(__name__)

DRILL_STREAM = "drill"
DRILL_SEND_JOB = "drill-send"
WAITING = "waiting"
_ENDED = (OutboundState.FAILED, OutboundState.SUPPRESSED)


@dataclass(frozen=True)
class _Queued:
    scenario: Scenario
    address: str
    outbound_id: int


class Drill:
    """``Drill(runtime, timeout=...).run()``: one recorded run; raises only what stops the run
    from happening at all (it is recorded as failed first)."""

    def __init__(self, runtime: Runtime, *, timeout: float, poll_interval: float = 0.05,
                 stop: threading.Event | None = None) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.mode = runtime.settings.outbound.transport
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.stop = stop or threading.Event()

    def run(self) -> DrillRun:
        run = history.start(self.rt.engine, self.mode)
        queued: list[_Queued] = []
        try:
            outcomes = self._ses(run, queued) if self.mode == "ses" else self._local(run, queued)
        except BaseException as err:
            history.finish(self.rt.engine, run, FAIL, f"the drill could not run: {type(err).__name__}: {err}", ())
            raise
        finally:
            self._clear_leftovers(queued)
        verdict = PASS if outcomes and all(o.verdict == PASS for o in outcomes) else FAIL
        passed = sum(o.verdict == PASS for o in outcomes)
        detail = f"{passed} of {len(outcomes)} scenarios as expected"
        return history.finish(self.rt.engine, run, verdict, detail, outcomes)

    # -- the two modes ------------------------------------------------------------------

    def _local(self, run: DrillRun, queued: list[_Queued]) -> tuple[Outcome, ...]:
        complaints_to = f"{self.settings.feedback.complaints_mailbox}@{self.settings.mail_domain}"
        scenarios, domain = scenarios_for(self.mode)
        with DrillMx(domain) as mx:
            outbox = self._outbox(self._local_sender(mx))
            worker = self._worker(outbox, inbound=True)
            queued.extend(self._queue(outbox, run, scenarios, domain))

            def provider_answers() -> bool:
                answers = [reply for accepted in mx.take() for reply in simulator.replies(accepted, complaints_to)]
                for reply in answers:
                    self.rt.inbox.accept(reply)
                return bool(answers)

            return self._wait([worker.run_once, provider_answers], queued)

    def _ses(self, run: DrillRun, queued: list[_Queued]) -> tuple[Outcome, ...]:
        scenarios, domain = scenarios_for(self.mode)
        outbox = self._outbox(self.rt.outbox.sender)
        worker = self._worker(outbox, inbound=False)
        steps: list[Callable[[], bool]] = [worker.run_once]
        if self.settings.feedback.sqs_queue_url:
            consumer = self.rt.feedback_consumer()
            steps.append(lambda: consumer.poll_once() > 0)
        queued.extend(self._queue(outbox, run, scenarios, domain))
        return self._wait(steps, queued)

    # -- the parts ----------------------------------------------------------------------

    def _local_sender(self, mx: DrillMx) -> Sender:
        from waypost.outbound.senders.smtp import SmtpSender

        signer = None
        if self.mode == "smtp":  # sign as the smarthost gets it: the DSN and ARF then quote a signed message
            from waypost.mail.dkim_sign import DkimSigner

            signer = DkimSigner.from_settings(self.settings.dkim, domain=self.settings.dkim_domain)
        return SmtpSender(mx.host, mx.port, security="none", timeout=30.0, data_timeout=30.0,
                          local_hostname=self.settings.smtp_hostname, signer=signer)

    def _outbox(self, sender: Sender) -> Outbox:
        real = self.rt.outbox
        return Outbox(self.rt.engine, self.rt.queue, sender, max_attempts=real.max_attempts, limiter=real.limiter,
                      verp=self.rt.verp, paused_recheck=real.paused_recheck, guard=self.rt.guard,
                      on_refused=self.rt.intake.recipient_refused, send_job=DRILL_SEND_JOB,
                      recipient_domains=real.recipient_domains)

    def _worker(self, outbox: Outbox, *, inbound: bool) -> Worker:
        kinds = outbox.job_kinds()
        if inbound:
            kinds += [kind for kind in self.rt.processor.job_kinds() if kind.name == INBOUND_JOB]
        return Worker(self.rt.queue, kinds, poll_interval=self.poll_interval)

    def _queue(self, outbox: Outbox, run: DrillRun, scenarios: Sequence[Scenario], domain: str) -> list[_Queued]:
        token = f"d{run.id}-{secrets.token_hex(3)}"
        queued = []
        with self.rt.engine.begin() as conn:
            for scenario in scenarios:
                address = scenario.address(token, domain)
                message = self._message(address, scenario.name, run.id)
                queued.append(_Queued(scenario, address, outbox.queue_message(conn, message)))
        return queued

    def _message(self, address: str, scenario: str, run_id: int) -> OutboundMessage:
        message = EmailMessage(policy=SMTP)
        message["From"] = f"{self.settings.operator_name} <{self.settings.reply_address}>"
        message["To"] = address
        message["Subject"] = f"Waypost drill {run_id}: {scenario}"
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = make_msgid(domain=self.settings.mail_domain)
        message["X-Waypost-Drill"] = str(run_id)  # a test message: never a reply to a person
        message.set_content(f"A test of Waypost's bounce and complaint handling (drill {run_id}, scenario "
                            f"{scenario}).\nIt is addressed to a test address and reaches no person.\n")
        return OutboundMessage(f"drill:{run_id}:{address}", DRILL_STREAM, address, self.settings.reply_address,
                               str(message["Subject"]), str(message["Message-ID"]), message.as_bytes())

    def _wait(self, steps: Sequence[Callable[[], bool]], queued: list[_Queued]) -> tuple[Outcome, ...]:
        deadline = time.monotonic() + self.timeout
        while True:
            worked = [step() for step in steps]  # every step, every round
            final = time.monotonic() >= deadline or self.stop.is_set()
            outcomes = self._judge(queued, final)
            if all(o.verdict != WAITING for o in outcomes):
                return outcomes
            if not any(worked):
                self.stop.wait(self.poll_interval)

    def _judge(self, queued: list[_Queued], final: bool) -> tuple[Outcome, ...]:
        ids = [q.outbound_id for q in queued]
        addresses = [q.address.lower() for q in queued]
        with self.rt.engine.connect() as conn:
            rows = {row.id: row for row in conn.execute(sa.select(outbound_messages).where(
                outbound_messages.c.id.in_(ids)))}
            providers = [row.provider_message_id for row in rows.values() if row.provider_message_id]
            events = conn.execute(sa.select(feedback_events).where(sa.or_(
                feedback_events.c.outbound_id.in_(ids), sa.func.lower(feedback_events.c.recipient).in_(addresses),
                feedback_events.c.provider_message_id.in_(providers or [""]))).order_by(feedback_events.c.id)).all()
        return tuple(self._judge_one(q, rows[q.outbound_id], [dict(e._mapping) for e in events if _about(e, q, rows)],
                                     final) for q in queued)

    def _judge_one(self, q: _Queued, row: sa.Row, events: list[dict[str, Any]], final: bool) -> Outcome:
        expect = q.scenario.expect

        def outcome(verdict: str, why: str) -> Outcome:
            return Outcome(q.scenario.name, q.address, expect.describe(), verdict, why, q.outbound_id, row.state,
                           row.provider_message_id, tuple(_describe(e) for e in events))

        if row.state in _ENDED:
            return outcome(FAIL, f"the outbox ended it {row.state}: {row.last_error}")
        contradicting = [e for e in events if e["kind"] in q.scenario.contradicted_by]
        if contradicting:
            return outcome(FAIL, f"unexpected {_describe(contradicting[0])}")
        if expect.kind == SENT and row.state == OutboundState.SENT:
            return outcome(PASS, f"accepted by the receiving server ({row.provider_message_id})")
        matching = [e for e in events if expect.matches(e)]
        if matching:
            return outcome(PASS, f"came back as {_describe(matching[0])}, policy: {matching[0]['outcome']}")
        if not final:
            return outcome(WAITING, "waiting")
        if events:
            seen = ", ".join(_describe(e) for e in events)
            return outcome(FAIL, f"classified as {seen}; expected {expect.describe()}")
        waited = f"nothing came back within {self.timeout:g} s"
        if row.state != OutboundState.SENT:
            return outcome(FAIL, f"{waited}; the message is still {row.state}: {row.last_error or 'not sent yet'}")
        return outcome(FAIL, f"{waited} (sent {row.provider_message_id}); check the feedback path")

    def _clear_leftovers(self, queued: list[_Queued]) -> None:
        """Messages the drill did not get out are failed, and their jobs removed: no other
        process runs drill sends, so they would wait for ever and raise the stale-job alarm."""
        ids = {q.outbound_id for q in queued}
        if not ids:
            return
        with self.rt.engine.begin() as conn:
            left = [job.id for job in conn.execute(sa.select(jobs.c.id, jobs.c.payload).where(
                jobs.c.kind == DRILL_SEND_JOB)) if (job.payload or {}).get("outbound_id") in ids]
            if left:
                conn.execute(jobs.delete().where(jobs.c.id.in_(left)))
            conn.execute(outbound_messages.update().where(
                outbound_messages.c.id.in_(ids),
                outbound_messages.c.state.in_([OutboundState.QUEUED, OutboundState.PAUSED]),
            ).values(state=OutboundState.FAILED, last_error="the drill ended before this message was sent"))


def _about(event: sa.Row, q: _Queued, rows: dict[int, sa.Row]) -> bool:
    if event.outbound_id is not None:
        return bool(event.outbound_id == q.outbound_id)
    if event.recipient and event.recipient.lower() == q.address.lower():
        return True
    provider = rows[q.outbound_id].provider_message_id
    return bool(provider) and event.provider_message_id == provider


def _describe(event: dict[str, Any]) -> str:
    details = [str(event[k]) for k in ("bounce_type", "bounce_subtype", "feedback_type", "reason", "status")
               if event.get(k)]
    return f"{event['source']} {event['kind']}" + (f" ({', '.join(details)})" if details else "")
