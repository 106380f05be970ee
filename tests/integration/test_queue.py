"""The table-backed job queue on SQLite and PostgreSQL: leases, retries, dead letters."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import wait_until
from waypost.store import migrate
from waypost.store.db import create_engine
from waypost.store.models import jobs, utcnow
from waypost.store.queue import JobState, RetryPolicy, TableJobQueue, enqueue

DEAD, DONE, QUEUED = JobState.DEAD, JobState.DONE, JobState.QUEUED


@pytest.fixture
def make_queue(database_url: str) -> Iterator[Callable[..., TableJobQueue]]:
    engine = create_engine(database_url)
    migrate.upgrade(engine)

    def make(*, visibility: float = 30.0) -> TableJobQueue:
        return TableJobQueue(engine, visibility_timeout=visibility, retry=RetryPolicy(0.01, 0.02))

    yield make
    engine.dispose()


def add(queue: TableJobQueue, n: int = 1, *, max_attempts: int = 3) -> list[int]:
    with queue.engine.begin() as conn:
        return [enqueue(conn, "t", {"n": i}, max_attempts=max_attempts) for i in range(n)]


def state_of(queue: TableJobQueue, job_id: int) -> sa.Row:
    with queue.engine.connect() as conn:
        return conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()


def test_claim_complete(make_queue: Callable[..., TableJobQueue]) -> None:
    queue = make_queue()
    (job_id,) = add(queue)
    job = queue.claim("w1")
    assert job is not None and job.id == job_id and job.attempts == 1 and job.payload == {"n": 0}
    assert queue.claim("w2") is None, "a leased job must not be handed out twice"
    with queue.engine.begin() as conn:
        queue.complete(conn, job)
    assert state_of(queue, job_id).state == DONE
    assert queue.claim("w1") is None


def test_enqueue_rolls_back_with_its_transaction(make_queue: Callable[..., TableJobQueue]) -> None:
    queue = make_queue()
    try:
        with queue.engine.begin() as conn:
            enqueue(conn, "t", {}, max_attempts=1)
            raise RuntimeError("the caller's work failed")
    except RuntimeError:
        pass
    assert queue.depth() == {}


def test_retry_then_dead_letter(make_queue: Callable[..., TableJobQueue]) -> None:
    queue = make_queue()
    (job_id,) = add(queue, max_attempts=2)
    first = queue.claim("w")
    assert first is not None
    assert queue.fail(first, "boom 1") is False
    row = state_of(queue, job_id)
    assert row.state == QUEUED and row.last_error == "boom 1" and row.run_after > utcnow() - timedelta(seconds=1)
    with queue.engine.begin() as conn:  # make it due now instead of waiting out the backoff
        conn.execute(jobs.update().values(run_after=utcnow()))
    second = queue.claim("w")
    assert second is not None and second.attempts == 2
    assert queue.fail(second, "boom 2") is True
    row = state_of(queue, job_id)
    assert row.state == DEAD and row.last_error == "boom 2"
    assert queue.retry_dead(job_id) is True
    assert state_of(queue, job_id).state == QUEUED


def test_permanent_failure_dead_letters_at_once(make_queue: Callable[..., TableJobQueue]) -> None:
    queue = make_queue()
    (job_id,) = add(queue, max_attempts=5)
    job = queue.claim("w")
    assert job is not None
    assert queue.fail(job, "malformed", permanent=True) is True
    assert state_of(queue, job_id).state == DEAD


def test_expired_lease_is_claimed_again(make_queue: Callable[..., TableJobQueue]) -> None:
    queue = make_queue(visibility=0.2)
    (job_id,) = add(queue, max_attempts=2)
    assert queue.claim("crashed-worker") is not None
    again = _wait_for_claim(queue, "w2")
    assert again.id == job_id and again.attempts == 2 and again.lease_owner == "w2"


def test_expired_lease_without_attempts_left_is_dead_lettered(make_queue: Callable[..., TableJobQueue]) -> None:
    queue = make_queue(visibility=0.2)
    (job_id,) = add(queue, max_attempts=1)
    assert queue.claim("crashed-worker") is not None
    buried = wait_until(lambda: queue.claim("w2"), message="the expired lease to be noticed")
    assert buried.id == job_id and "lease expired" in (buried.dead_reason or "")
    assert state_of(queue, job_id).state == DEAD and "lease expired" in state_of(queue, job_id).last_error
    assert queue.claim("w2") is None


def test_concurrent_claims_hand_out_each_job_once(make_queue: Callable[..., TableJobQueue]) -> None:
    queue = make_queue()
    ids = set(add(queue, 40))
    claimed: list[int] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (job := queue.claim(name)) is not None:
            with lock:
                claimed.append(job.id)
            with queue.engine.begin() as conn:
                queue.complete(conn, job)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(claimed) == sorted(ids), "every job exactly once"


def _wait_for_claim(queue: TableJobQueue, owner: str):  # type: ignore[no-untyped-def]
    return wait_until(lambda: queue.claim(owner), message="the expired lease to be claimable")
