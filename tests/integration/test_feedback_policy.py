"""The feedback policy, the reputation guard and the alarms against a real database (SQLite
and PostgreSQL): what each kind of feedback does to the suppression list, the allowlist and
the pause switches. Tests taking ``source`` read SES JSON generated in code
(tests/support/ses_samples.py), and the shared corpus's real samples when it is present."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import corpus_dir
from tests.integration.test_outbox import Recorder, rows, run_jobs
from tests.support import ses_samples
from waypost import runtime as wiring
from waypost.feedback.events import BounceType, FeedbackEvent, Kind, Source
from waypost.feedback.ses_events import parse_ses_notification
from waypost.outbound import control, suppression
from waypost.outbound.outbox import OutboundMessage
from waypost.reputation import guard as guard_module
from waypost.store.models import (
    alarm_states,
    bounce_scores,
    feedback_events,
    inbound_messages,
    jobs,
    outbound_messages,
    utcnow,
)

SOURCES = ["generated", pytest.param("corpus", marks=pytest.mark.corpus)]


def ses_record(source: str, corpus_name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """An SES record: built in code, or read from the corpus."""
    return dict(json.loads((corpus_dir() / "ses" / corpus_name).read_text())) if source == "corpus" else build()


@pytest.fixture
def build(make_settings: Callable[..., Any], database_url: str) -> Iterator[Callable[..., Any]]:
    built: list[Any] = []

    def make(sender: Any = None, **overrides: Any) -> Any:
        overrides["guard"] = {"compromise_checks": False, "check_seconds": 0, **overrides.get("guard", {})}
        runtime = wiring.build(make_settings(database={"url": database_url}, **overrides), sender=sender or Recorder())
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


def ses_bounce(recipient: str, *, kind: BounceType = BounceType.PERMANENT, subtype: str = "General",
               message_id: str = "ses-1", feedback_id: str = "fb-1", status: str = "5.1.1") -> FeedbackEvent:
    return FeedbackEvent(Kind.BOUNCE, Source.SES, recipient, utcnow(), provider_message_id=message_id,
                         feedback_id=feedback_id, bounce_type=kind, bounce_subtype=subtype, status=status,
                         diagnostic=f"smtp; 550 {status} no such user", raw="{}")


def ses_complaint(recipient: str, feedback_type: str | None = "abuse", *, feedback_id: str = "c-1",
                  message_id: str = "ses-1") -> FeedbackEvent:
    return FeedbackEvent(Kind.COMPLAINT, Source.SES, recipient, utcnow(), provider_message_id=message_id,
                         feedback_id=feedback_id, feedback_type=feedback_type, raw="{}")


def entry(runtime: Any, address: str) -> suppression.Suppression | None:
    with runtime.engine.connect() as conn:
        return suppression.lookup(conn, address)


def events(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(feedback_events).order_by(feedback_events.c.id)))


def send(runtime: Any, recipient: str, key: str, stream: str = "journeys") -> int:
    with runtime.engine.begin() as conn:
        row_id = runtime.outbox.queue_message(conn, OutboundMessage(
            key, stream, recipient, "journeys@waypost.test", "subject", f"<{key}@waypost.test>",
            b"Subject: test\r\n\r\nbody\r\n"))
    run_jobs(runtime)
    return row_id


def test_a_permanent_bounce_suppresses_once_and_a_repeat_changes_nothing(build: Any) -> None:
    runtime = build()

    first = runtime.intake.apply([ses_bounce("Ann@Example.org")])
    again = runtime.intake.apply([ses_bounce("Ann@Example.org")])

    found = entry(runtime, "ann@example.org")
    assert found is not None and found.reason == suppression.Reason.BOUNCE and found.source == "ses"
    assert "5.1.1" in (found.detail or "") and found.expires_at is None
    assert first.outcomes["suppressed"] == 1 and first.suppressed == {"ann@example.org"}
    assert again.duplicates == 1 and not again.outcomes
    (row,) = events(runtime)
    assert row.counts_as == "bounce" and row.outcome == "suppressed"


@pytest.mark.parametrize("source", SOURCES)
def test_the_same_bounce_as_notification_and_as_event_is_applied_once(build: Any, source: str) -> None:
    runtime = build()
    body = ses_record(source, "relay_bounce_event_example_ses_body.json", lambda: ses_samples.as_event(
        ses_samples.bounce([ses_samples.dsn_recipient("ann@example.org"), "bob@example.org"], subtype="NoEmail")))
    as_notification = {"notificationType" if k == "eventType" else k: v for k, v in body.items()}

    runtime.intake.apply(parse_ses_notification(body))
    repeat = runtime.intake.apply(parse_ses_notification(as_notification))

    assert repeat.duplicates == len(repeat_events := parse_ses_notification(body)) and repeat_events
    assert len(events(runtime)) == len(repeat_events)
    assert all(entry(runtime, e.recipient) is not None for e in repeat_events)  # every recipient, once


@pytest.mark.parametrize("source", SOURCES)
def test_simulator_addresses_and_on_account_list_bounces_are_not_counted(build: Any, source: str) -> None:
    runtime = build()
    simulated = ses_record(source, "relay_bounce_notification_from_simulator_ses_body.json",
                           lambda: ses_samples.bounce([ses_samples.dsn_recipient("bounce@simulator.amazonses.com")]))

    runtime.intake.apply(parse_ses_notification(simulated))
    runtime.intake.apply([ses_bounce("bob@example.org", subtype="OnAccountSuppressionList", feedback_id="fb-2")])

    assert entry(runtime, "bounce@simulator.amazonses.com") is None
    assert entry(runtime, "bob@example.org") is not None  # mirrored locally, but not counted
    assert [r.counts_as for r in events(runtime)] == [None, None]


def days_pass(runtime: Any, days: float) -> None:
    """Move every recorded transient bounce ``days`` into the past."""
    with runtime.engine.begin() as conn:
        for row in conn.execute(sa.select(bounce_scores)).all():
            earlier = [(datetime.fromisoformat(at) - timedelta(days=days)).isoformat() for at in row.bounces]
            conn.execute(bounce_scores.update().where(bounce_scores.c.address == row.address)
                         .values(bounces=earlier, last_at=row.last_at - timedelta(days=days)))


def test_transient_bounces_suppress_for_a_while_after_the_limit_one_a_day(build: Any) -> None:
    runtime = build(feedback={"soft_bounce_limit": 3, "soft_bounce_window_days": 7, "soft_suppression_days": 14})

    def soft(n: int) -> Any:
        return runtime.intake.apply([ses_bounce("carol@example.org", kind=BounceType.TRANSIENT,
                                                subtype="MailboxFull", feedback_id=f"soft-{n}", status="4.2.2")])

    soft(1)
    soft(2)  # the same day: still one
    days_pass(runtime, 1)
    soft(3)
    assert entry(runtime, "carol@example.org") is None
    days_pass(runtime, 1)
    last = soft(4)

    found = entry(runtime, "carol@example.org")
    assert last.outcomes["suppressed"] == 1 and found is not None
    assert found.expires_at is not None and timedelta(days=13) < found.expires_at - utcnow() <= timedelta(days=14)
    assert [r.outcome for r in events(runtime)] == ["scored", "scored", "scored", "suppressed"]
    assert "transient bounce 3 of 3 within 7 days" in (found.detail or "")


def test_old_transient_bounces_stop_counting_and_a_delivery_clears_them(build: Any) -> None:
    runtime = build(feedback={"soft_bounce_limit": 3, "soft_bounce_window_days": 7})

    def soft(n: int) -> None:
        runtime.intake.apply([ses_bounce("dan@example.org", kind=BounceType.TRANSIENT, feedback_id=f"s{n}",
                                         status="4.0.0")])

    def score() -> int | None:
        with runtime.engine.connect() as conn:
            return conn.execute(sa.select(bounce_scores.c.score)).scalar()

    soft(1)
    days_pass(runtime, 6)
    soft(2)
    days_pass(runtime, 2)  # the first is now 8 days old: only the second still counts
    soft(3)
    assert score() == 2 and entry(runtime, "dan@example.org") is None
    runtime.intake.apply([FeedbackEvent(Kind.DELIVERY, Source.SES, "dan@example.org", utcnow(),
                                        provider_message_id="ses-2", raw="{}")])
    assert score() is None
    days_pass(runtime, 1)
    soft(4)
    assert score() == 1 and entry(runtime, "dan@example.org") is None


@pytest.mark.parametrize("feedback_type, outcome, reason", [
    ("abuse", "suppressed", suppression.Reason.COMPLAINT),
    (None, "suppressed", suppression.Reason.COMPLAINT),
    ("not-spam", "recorded", None),
    ("auth-failure", "review", None),
    ("opt-out", "suppressed", suppression.Reason.UNSUBSCRIBE),
])
def test_complaints_by_feedback_type(build: Any, feedback_type: str | None, outcome: str,
                                     reason: suppression.Reason | None) -> None:
    runtime = build()
    runtime.allowlist.add("erin@example.org")

    runtime.intake.apply([ses_complaint("erin@example.org", feedback_type)])

    (row,) = events(runtime)
    found = entry(runtime, "erin@example.org")
    assert row.outcome == outcome and (found.reason if found else None) == reason
    assert runtime.allowlist.allows("erin@example.org") is (reason is None)  # leaving takes them off
    assert row.counts_as == ("complaint" if reason == suppression.Reason.COMPLAINT else None)


def test_a_batch_of_complaints_runs_each_streams_leave_hook_once_for_all_of_its_addresses(build: Any) -> None:
    from waypost.feedback.policy import FeedbackPolicy
    from waypost.pipeline.allowlist import Allowlist

    runtime = build()
    for address in ("ann@example.org", "bob@example.org", "cat@example.org", "dan@example.org"):
        runtime.allowlist.add(address)
    called: list[str] = []  # a hook without ``many`` is still called once per address
    batches: list[list[str]] = []

    class Forget:  # the journeys hook, recording how it was called
        def __call__(self, conn: sa.Connection, address: str) -> bool:
            raise AssertionError("a batch hook is called with the batch")

        def many(self, conn: sa.Connection, addresses: list[str]) -> int:
            batches.append(list(addresses))
            return Allowlist.forget.many(conn, addresses)

    policy = FeedbackPolicy(runtime.settings.feedback, hooks={"journeys": Forget(),
                                                              "relay": lambda conn, address: called.append(address)})
    batch = [replace(ses_complaint(a, feedback_id=f"c-{a}"), stream=stream) for a, stream in (
        ("ANN@example.org", "journeys"), ("bob+trips@example.org", "journeys"), ("cat@example.org", "relay"),
        ("eve@example.org", "journeys"))]
    with runtime.engine.begin() as conn:
        applied = policy.apply(conn, batch)

    assert applied.outcomes["suppressed"] == 4
    assert [runtime.allowlist.allows(a) for a in ("ann@example.org", "bob@example.org", "cat@example.org",
                                                 "dan@example.org")] == [False, False, True, True]
    assert called == ["cat@example.org"]
    assert batches == [["ANN@example.org", "bob+trips@example.org", "eve@example.org"]]
    with runtime.engine.begin() as conn:  # the single-address form keeps its answer
        assert Allowlist.forget(conn, "dan@example.org") is True
        assert Allowlist.forget(conn, "dan@example.org") is False
        assert Allowlist.forget.many(conn, ["cat@example.org", "CAT@example.org", "nobody@example.org"]) == 1


def test_undetermined_bounces_wait_for_review(build: Any) -> None:
    runtime = build()
    runtime.intake.apply([ses_bounce("fay@example.org", kind=BounceType.UNDETERMINED, subtype="Undetermined")])

    assert entry(runtime, "fay@example.org") is None
    assert [r.outcome for r in events(runtime)] == ["review"]


def test_mail_borne_reports_act_only_through_our_own_rows(build: Any) -> None:
    runtime = build()
    row_id = send(runtime, "gus@example.org", "k-gus")
    verp = runtime.verp.address(row_id)
    forged = verp.replace(verp.split("-")[-1].split("@")[0], "aaaaaaaaaaaaa")

    def dsn(recipient: str, address: str | None, feedback_id: str) -> FeedbackEvent:
        return FeedbackEvent(Kind.BOUNCE, Source.DSN, recipient, None, verp_address=address,
                             feedback_id=feedback_id, bounce_type=BounceType.PERMANENT, bounce_subtype="NoEmail",
                             status="5.1.1", raw="Final-Recipient: rfc822; x")

    runtime.intake.apply([dsn("victim@example.org", forged, "<f1@mx>")])
    runtime.intake.apply([dsn("victim@example.org", None, "<f2@mx>")])
    assert entry(runtime, "victim@example.org") is None and entry(runtime, "gus@example.org") is None
    assert [r.outcome for r in events(runtime)] == ["review", "review"]

    # forwarded: the DSN names the final address, the row names ours; ours is suppressed
    runtime.intake.apply([dsn("gus@forwarded.example", verp, "<f3@mx>")])

    assert entry(runtime, "gus@example.org") is not None
    assert entry(runtime, "gus@forwarded.example") is None
    assert events(runtime)[-1].outbound_id == row_id


def test_a_complaint_rate_over_the_threshold_pauses_until_an_operator_resumes(build: Any) -> None:
    runtime = build(guard={"compromise_checks": False, "min_sends": 10, "complaint_pause": 0.05})
    for n in range(10):
        send(runtime, f"p{n}@example.org", f"k-{n}")

    runtime.intake.apply([ses_complaint("p0@example.org")])

    with runtime.engine.connect() as conn:
        pause = control.paused(conn, "journeys")
    assert pause is not None and pause.scope == control.ALL and pause.paused_by == guard_module.GUARD
    assert "complaint rate 10.00%" in pause.reason
    send(runtime, "p11@example.org", "k-11")
    assert rows(runtime)[-1].state == "paused"

    with runtime.engine.begin() as conn:
        control.resume(conn, control.ALL)
    runtime.intake.apply([ses_complaint("p1@example.org", feedback_id="c-2")])  # evidence from before the resume
    run_jobs(runtime, include_deferred=True)

    assert rows(runtime)[-1].state == "sent"
    with runtime.engine.connect() as conn:
        assert control.paused(conn, "journeys") is None
        assert [r.action for r in control.history(conn)] == ["resume", "pause"]


def test_a_send_to_someone_who_never_wrote_in_pauses_the_stream(build: Any) -> None:
    runtime = build(guard={"compromise_checks": True})
    with runtime.engine.begin() as conn:
        conn.execute(inbound_messages.insert().values(
            id="m1", received_at=utcnow(), rcpt_tos=["journeys@waypost.test"], blob_key="x", size=1, ingress="smtp",
            status="processed", from_address="known@example.org"))

    send(runtime, "known@example.org", "k-known")
    send(runtime, "stranger@example.org", "k-stranger")

    assert [r.state for r in rows(runtime)] == ["sent", "paused"]
    with runtime.engine.connect() as conn:
        pause = control.paused(conn, "journeys")
    assert pause is not None and pause.scope == "journeys" and "stranger@example.org" in pause.reason


def test_a_volume_spike_pauses_all_sending(build: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "SPIKE_CACHE_SECONDS", 0.0)
    runtime = build(guard={"compromise_checks": True, "known_recipients_only": [], "spike_min_per_hour": 3})
    for n in range(5):
        send(runtime, f"v{n}@example.org", f"k-v{n}")

    assert [r.state for r in rows(runtime)] == ["sent"] * 4 + ["paused"]
    with runtime.engine.connect() as conn:
        pause = control.paused(conn, "journeys")
    assert pause is not None and pause.scope == control.ALL and "4 sends in the last hour" in pause.reason


def test_alarms_fire_mail_the_operator_once_and_clear(build: Any) -> None:
    sender = Recorder()
    runtime = build(sender, operator_email="ops@example.net", alarms={"dead_letters": 0})
    with runtime.engine.begin() as conn:
        conn.execute(jobs.insert().values(kind="inbound", payload={"message_id": "x"}, state="dead", attempts=5,
                                          max_attempts=5, run_after=utcnow(), created_at=utcnow(),
                                          updated_at=utcnow(), last_error="boom"))
        control.pause(conn, control.ALL, "testing the alarm path", by="operator")

    fired = {a.name for a in runtime.alarms.check() if a.firing}
    runtime.alarms.check()
    run_jobs(runtime)

    assert fired == {"dead_letters", "sending_paused"}
    mails = [r for r in rows(runtime) if r.stream == "operator"]
    # a global pause holds user mail, never the operator's alarms
    assert len(mails) == 2 and {m.state for m in mails} == {"sent"}
    assert {m.recipient for m in mails} == {"ops@example.net"}
    assert b"dead_letters" in b"".join(m.raw for m in mails)
    with runtime.engine.begin() as conn:
        conn.execute(jobs.delete().where(jobs.c.state == "dead"))
        control.resume(conn, control.ALL)
    runtime.alarms.check()
    with runtime.engine.connect() as conn:
        states = {r.name: r.firing for r in conn.execute(sa.select(alarm_states))}
        assert conn.execute(sa.select(sa.func.count()).where(outbound_messages.c.stream == "operator")).scalar() == 2
    assert states["dead_letters"] is False and states["sending_paused"] is False


def test_status_snapshot_counts_what_the_guard_counts(build: Any) -> None:
    runtime = build(guard={"compromise_checks": False, "min_sends": 2})
    for n in range(4):
        send(runtime, f"s{n}@example.org", f"k-s{n}")
    runtime.intake.apply([ses_bounce("s0@example.org")])

    snapshot = runtime.snapshot()

    day = next(w for w in snapshot.assessment.windows if w.stream is None and w.name == "24 hours")
    assert (day.sends, day.bounces, day.judged) == (4, 1, True)
    assert snapshot.suppressions == {"BOUNCE": 1}
    assert snapshot.outbound["sent"] == 4


def deliver_to(runtime: Any, raw: bytes, recipient: str, mail_from: str = "") -> str:
    from waypost.ingress.smtp import ReceivedMail

    return runtime.inbox.accept(ReceivedMail(raw=raw, mail_from=mail_from, rcpt_tos=(recipient,),
                                             peer_ip="192.0.2.7"))


def arf_report(original_message_id: str, complainant: str) -> bytes:
    return ("From: Feedback Loop <fbl@isp.example>\r\nTo: fbl@waypost.test\r\nSubject: Abuse report\r\n"
            "Message-ID: <arf-1@isp.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
            "--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
            "User-Agent: ISP-FBL/1.0\r\nVersion: 1\r\nArrival-Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"Original-Rcpt-To: {complainant}\r\n"
            f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original_message_id}\r\n"
            f"To: {complainant}\r\nSubject: Your journey\r\n\r\n--b--\r\n").encode()


def test_an_arf_complaint_by_mail_suppresses_and_takes_the_sender_off_the_allowlist(build: Any) -> None:
    runtime = build()
    runtime.allowlist.add("hal@example.org")
    row_id = send(runtime, "hal@example.org", "k-hal")
    header = next(r for r in rows(runtime) if r.id == row_id).message_id_header

    deliver_to(runtime, arf_report(header, "hal@example.org"), "fbl@waypost.test", mail_from="fbl@isp.example")
    run_jobs(runtime)

    found = entry(runtime, "hal@example.org")
    assert found is not None and found.reason == suppression.Reason.COMPLAINT and found.source == "arf"
    assert not runtime.allowlist.allows("hal@example.org")
    (row,) = events(runtime)
    assert (row.kind, row.source, row.outbound_id, row.counts_as) == ("complaint", "arf", row_id, "complaint")


def test_mail_to_the_bounce_address_that_is_no_report_changes_nothing(build: Any) -> None:
    runtime = build(outbound={"bounce_domain": "bounces.waypost.test"})
    row_id = send(runtime, "ivy@example.org", "k-ivy")
    verp = runtime.verp.address(row_id)
    assert verp.endswith("@bounces.waypost.test") and runtime.router.accepts(verp)

    message_id = deliver_to(runtime, b"Subject: hello\r\nFrom: someone@example.net\r\n\r\njust a note\r\n", verp)
    empty_id = deliver_to(runtime, b"X-Nothing: here\r\n\r\n", "bounces@bounces.waypost.test")
    run_jobs(runtime)

    with runtime.engine.connect() as conn:
        outcomes = {r.id: (r.status, r.reason) for r in conn.execute(sa.select(inbound_messages))}
    assert outcomes[message_id][0] == "processed" and "unknown" in outcomes[message_id][1]
    assert outcomes[empty_id][0] == "processed"
    assert events(runtime) == [] and entry(runtime, "ivy@example.org") is None


def test_the_worker_checks_alarms_on_its_own_and_survives_a_failing_check(build: Any) -> None:
    runtime = build(alarms={"dead_letters": 0, "mail_operator": False})
    worker = runtime.worker()
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("a check that fails")

    worker.every(3600.0, broken)
    worker.run_periodic()
    worker.run_periodic()  # within the interval: nothing runs again

    assert calls == ["broken"]
    with runtime.engine.connect() as conn:
        names = {r.name for r in conn.execute(sa.select(alarm_states))}
    assert {"dead_letters", "oldest_job", "stale_jobs", "sending_paused"} <= names


def test_a_busy_feedback_path_leaves_judging_to_the_next_alarm_check(build: Any) -> None:
    runtime = build(guard={"min_sends": 10, "complaint_pause": 0.05, "check_seconds": 3600},
                    alarms={"mail_operator": False})
    runtime.intake.apply([ses_bounce("early@example.org")])  # judged now: too few sends to act on
    for n in range(10):
        send(runtime, f"q{n}@example.org", f"k-q{n}")

    runtime.intake.apply([ses_complaint("q0@example.org")])
    with runtime.engine.connect() as conn:
        assert control.paused(conn, "journeys") is None  # judged less than an hour ago: not yet
    runtime.alarms.check()

    with runtime.engine.connect() as conn:
        pause = control.paused(conn, "journeys")
    assert pause is not None and pause.paused_by == guard_module.GUARD


def test_workers_checking_alarms_at_once_neither_collide_nor_mail_twice(build: Any) -> None:
    runtime = build(operator_email="ops@example.net", alarms={"dead_letters": 0})
    with runtime.engine.begin() as conn:
        conn.execute(jobs.insert().values(kind="inbound", payload={"message_id": "x"}, state="dead", attempts=5,
                                          max_attempts=5, run_after=utcnow(), created_at=utcnow(),
                                          updated_at=utcnow(), last_error="boom"))
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def check() -> None:
        start.wait(timeout=30)
        try:
            runtime.alarms.check()
        except BaseException as err:  # reported below
            failures.append(err)

    threads = [threading.Thread(target=check) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    with runtime.engine.connect() as conn:
        mails = conn.execute(sa.select(sa.func.count()).where(outbound_messages.c.stream == "operator")).scalar()
    assert mails == 1
