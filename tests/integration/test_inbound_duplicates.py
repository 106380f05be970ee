"""A mail that arrives twice (same sender, same Message-ID) is answered once, on SQLite and
PostgreSQL: in turn, and when two workers handle the two copies at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_pipeline import caught, count, deliver, drain, inbound, photo_mail
from waypost import failpoints
from waypost import runtime as wiring
from waypost.pipeline.duplicates import dedupe_key
from waypost.store.models import inbound_dedupe, journeys, outbound_messages


def test_the_same_mail_twice_gets_one_journey_and_one_reply(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message = photo_mail()
    first = deliver(runtime, message)
    drain(runtime)
    del message["From"]
    message["From"] = "Ann <ANN@Example.ORG>"  # the same sender: addresses compare in any case
    second = deliver(runtime, message)
    drain(runtime)

    assert count(runtime, journeys) == 1 and count(runtime, outbound_messages) == 1
    assert len(caught(runtime)) == 1
    assert inbound(runtime, first).reason == "handled by journeys"
    again = inbound(runtime, second)
    assert again.status == "processed"
    assert again.reason == f"duplicate of {first} (same sender and Message-ID)"


def test_another_sender_with_the_same_message_id_is_answered(runtime: Any) -> None:
    runtime.allowlist.add("example.org")
    deliver(runtime, photo_mail(sender="ann@example.org"))
    deliver(runtime, photo_mail(sender="bob@example.org"))  # photo_mail's Message-ID is the same
    drain(runtime)
    assert count(runtime, journeys) == 2 and len(caught(runtime)) == 2


def test_a_mail_without_message_id_is_never_a_duplicate(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message = photo_mail()
    del message["Message-ID"]
    for _ in range(2):
        deliver(runtime, message)
    drain(runtime)
    assert count(runtime, journeys) == 2 and len(caught(runtime)) == 2


def test_the_same_mail_after_the_window_is_answered_again(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    deliver(runtime, photo_mail())
    drain(runtime)
    window = timedelta(days=runtime.settings.gate.duplicate_window_days)
    with runtime.engine.begin() as conn:  # the first copy arrived a window and a minute before
        arrived = conn.execute(sa.select(inbound_dedupe.c.received_at)).scalar_one()
        conn.execute(inbound_dedupe.update().values(received_at=arrived - window - timedelta(minutes=1)))
    second = deliver(runtime, photo_mail())
    drain(runtime)
    assert count(runtime, journeys) == 2 and len(caught(runtime)) == 2
    assert inbound(runtime, second).reason == "handled by journeys"
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(inbound_dedupe.c.inbound_id)).scalar_one() == second


def test_a_window_of_zero_turns_the_check_off(make_settings: Callable[..., Any], database_url: str) -> None:
    built = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                       gate={"duplicate_window_days": 0}))
    try:
        built.allowlist.add("ann@example.org")
        for _ in range(2):
            deliver(built, photo_mail())
        drain(built)
        assert count(built, journeys) == 2 and len(caught(built)) == 2
    finally:
        built.close()


def test_two_workers_handling_both_copies_at_once_answer_one(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both copies pass the early look (nothing is claimed yet) and do their slow work; only the
    claim taken in the committing transaction can keep the second from answering."""
    runtime.allowlist.add("ann@example.org")
    ids = [deliver(runtime, photo_mail()) for _ in range(2)]
    both_handled = threading.Barrier(2, timeout=30)
    real_hit = failpoints.hit

    def meet(name: str) -> None:
        if name == "processor.before_commit":
            both_handled.wait()  # neither commits before both finished their slow work
        real_hit(name)

    monkeypatch.setattr(failpoints, "hit", meet)
    other = wiring.build(runtime.settings)  # a second worker's processor on the same database
    try:
        jobs = [runtime.queue.claim("worker-1"), runtime.queue.claim("worker-2")]
        errors = _run_at_once([lambda: runtime.processor.process(jobs[0]),
                               lambda: other.processor.process(jobs[1])])
    finally:
        other.close()
    assert errors == []
    drain(runtime)
    assert count(runtime, journeys) == 1 and count(runtime, outbound_messages) == 1
    assert len(caught(runtime)) == 1
    duplicate, handled = sorted(inbound(runtime, message_id).reason for message_id in ids)
    assert handled == "handled by journeys" and duplicate.startswith("duplicate of ")


def test_the_key_is_the_sender_in_any_case_and_the_message_id() -> None:
    assert dedupe_key("Ann@Example.org", "<a@b>") == dedupe_key("ann@example.org ", " <a@b>")
    assert dedupe_key("ann@example.org", "<a@b>") != dedupe_key("bob@example.org", "<a@b>")
    assert dedupe_key("ann@example.org", "<a@b>") != dedupe_key("ann@example.org", "<A@b>")
    assert dedupe_key("ann@example.org", None) is None and dedupe_key("ann@example.org", " ") is None


def _run_at_once(actions: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(action: Callable[[], None]) -> None:
        try:
            action()
        except BaseException as err:  # reported by the test, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return errors
