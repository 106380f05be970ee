"""SES mode: suppressions added or removed here are pushed to SES's account-level list by a job
that runs after the commit, against a loopback stub of the SES v2 suppression calls (moto has
none of them; tests/support/ses_suppression_stub.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_outbox import Recorder
from tests.support.moto_server import use_fake_aws
from tests.support.ses_suppression_stub import SuppressionListStub, running_suppression_stub
from waypost import runtime as wiring
from waypost.feedback.ses_sync import SesSuppressionPush
from waypost.outbound import suppression
from waypost.outbound.suppression import Reason
from waypost.store.models import jobs, utcnow


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, SuppressionListStub]]:
    with running_suppression_stub() as (url, listing):
        use_fake_aws(monkeypatch, url)
        yield url, listing


@pytest.fixture
def ses_runtime(make_settings: Callable[..., Any], database_url: str,
                stub: tuple[str, SuppressionListStub]) -> Iterator[Callable[..., Any]]:
    built: list[Any] = []

    def build(transport: str = "ses") -> Any:
        settings = make_settings(database={"url": database_url}, ses={"endpoint_url": stub[0]},
                                 outbound={"transport": transport}, base_url="https://waypost.example")
        runtime = wiring.build(settings, sender=Recorder())
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.close()


def push_jobs(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(jobs).where(jobs.c.kind == suppression.SES_PUSH_JOB).order_by(jobs.c.id)))


def run_pushes(runtime: Any, rounds: int = 50) -> None:
    """Run push jobs until none is left, making retries due at once (the test stands in for time)."""
    worker = runtime.worker()
    for _ in range(rounds):
        with runtime.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.state == "queued").values(run_after=utcnow()))
        if not worker.run_once() and all(job.state in ("done", "dead") for job in push_jobs(runtime)):
            return
    raise AssertionError("the push jobs did not finish")


def test_a_bounce_and_a_complaint_are_put_after_the_commit(ses_runtime: Any, stub: Any) -> None:
    _, listing = stub
    runtime = ses_runtime()
    with runtime.engine.begin() as conn:
        suppression.add(conn, "Ann@Example.org", Reason.BOUNCE, "test")
        suppression.add(conn, "bob@example.org", Reason.COMPLAINT, "test")
    assert listing.calls == []  # nothing leaves inside the transaction

    run_pushes(runtime)

    assert listing.listed == {"ann@example.org": "BOUNCE", "bob@example.org": "COMPLAINT"}
    assert [job.state for job in push_jobs(runtime)] == ["done", "done"]


def test_unsubscribes_manual_entries_and_ses_copies_are_not_pushed(ses_runtime: Any, stub: Any) -> None:
    _, listing = stub
    runtime = ses_runtime()
    with runtime.engine.begin() as conn:
        suppression.add(conn, "ann@example.org", Reason.UNSUBSCRIBE, "test")
        suppression.add(conn, "bob@example.org", Reason.MANUAL, "test")
        suppression.add(conn, "cy@example.org", Reason.BOUNCE, suppression.SES_SYNC_SOURCE)

    assert push_jobs(runtime) == [] and listing.calls == []


def test_a_removal_deletes_from_ses_and_an_absent_address_is_fine(ses_runtime: Any, stub: Any) -> None:
    _, listing = stub
    runtime = ses_runtime()
    with runtime.engine.begin() as conn:
        suppression.add(conn, "ann@example.org", Reason.BOUNCE, "test")
    run_pushes(runtime)
    listing.listed["dee@example.org"] = "BOUNCE"
    with runtime.engine.begin() as conn:
        suppression.remove(conn, "ann@example.org", by="test")
        suppression.add(conn, "eve@example.org", Reason.UNSUBSCRIBE, "test")
        suppression.remove(conn, "eve@example.org", by="test")  # SES never had it: NotFound
    run_pushes(runtime)

    assert listing.listed == {"dee@example.org": "BOUNCE"}
    assert ("DELETE", "eve@example.org") in listing.calls
    assert all(job.state == "done" for job in push_jobs(runtime))


def test_an_ses_failure_keeps_our_entry_and_is_retried(ses_runtime: Any, stub: Any) -> None:
    _, listing = stub
    listing.failing = 2
    runtime = ses_runtime()
    with runtime.engine.begin() as conn:
        assert suppression.add(conn, "ann@example.org", Reason.BOUNCE, "test")

    run_pushes(runtime)

    with runtime.engine.connect() as conn:
        assert suppression.lookup(conn, "ann@example.org") is not None
    assert listing.calls == [("PUT", "ann@example.org")] * 3
    assert listing.listed == {"ann@example.org": "BOUNCE"}
    (job,) = push_jobs(runtime)
    assert job.state == "done" and job.attempts == 3


def test_a_late_push_sends_our_latest_state(ses_runtime: Any, stub: Any) -> None:
    _, listing = stub
    runtime = ses_runtime()
    with runtime.engine.begin() as conn:
        suppression.add(conn, "ann@example.org", Reason.BOUNCE, "test")
        suppression.remove(conn, "ann@example.org", by="test")

    run_pushes(runtime)

    assert listing.listed == {} and ("PUT", "ann@example.org") not in listing.calls


def test_other_transports_queue_no_push(ses_runtime: Any, stub: Any) -> None:
    runtime = ses_runtime("smtp")
    with runtime.engine.begin() as conn:
        suppression.add(conn, "ann@example.org", Reason.BOUNCE, "test")
        suppression.remove(conn, "ann@example.org", by="test")

    assert push_jobs(runtime) == []
    assert not any(kind.name == suppression.SES_PUSH_JOB for kind in runtime._ses_push_kinds())
    assert SesSuppressionPush(runtime.engine, runtime.queue, runtime.settings).job_kinds()[0].name \
        == suppression.SES_PUSH_JOB
