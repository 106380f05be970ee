"""A separate worker on PostgreSQL (`waypost worker`) takes a job committed by another connection
at once: the commit notifies (LISTEN/NOTIFY) and the worker's listener rings its doorbell, long
before an hourly poll would have found the job. PostgreSQL only: SQLite has no notifications."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.test_pipeline import caught, inbound, photo_mail
from waypost.pipeline.inbox import Inbox, ReceivedMail
from waypost.store.db import create_engine
from waypost.store.queue import Doorbell, JobNotices, enqueue

AN_HOUR = 3600.0
ON_POSTGRES = pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                      indirect=True)


def notices_of(worker: Any) -> JobNotices:
    return next(loop.__self__ for loop in worker.companions if isinstance(getattr(loop, "__self__", None), JobNotices))


@pytest.fixture
def listening(database_url: str) -> Iterator[tuple[JobNotices, Doorbell]]:
    """A JobNotices listening on the test's schema, on a thread until the test ends."""
    engine = create_engine(database_url)
    from waypost.store import migrate

    migrate.upgrade(engine)
    bell, stop = Doorbell(), threading.Event()
    notices = JobNotices(engine, bell)
    thread = threading.Thread(target=notices.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert notices.listening.wait(20), "the listener connected"
        assert bell.wait(stop, 20), "the first ring on connecting (jobs committed while nobody listened)"
        yield notices, bell
    finally:
        stop.set()
        thread.join(20)
        engine.dispose()
    assert not thread.is_alive(), "the listener stops with its worker"


@ON_POSTGRES
def test_a_separate_worker_polling_hourly_is_woken_by_a_commit_on_another_connection(
        make_settings: Callable[..., Any], database_url: str, allowing_runtime: Callable[..., Any]) -> None:
    runtime = allowing_runtime(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                             worker={"poll_interval": AN_HOUR},
                                             retention={"sweep_interval_minutes": 60}))
    worker = runtime.worker()
    notices = notices_of(worker)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    other = create_engine(database_url)  # another connection pool, and no doorbell of this worker's
    try:
        assert notices.listening.wait(20), "the worker listens for job notifications"
        inbox = Inbox(other, runtime.blobs, max_attempts=3)
        message_id = inbox.accept(ReceivedMail(raw=photo_mail().as_bytes(), mail_from="ann@example.org",
                                               rcpt_tos=("journeys@waypost.test",), peer_ip="127.0.0.1"))
        wait_until(lambda: inbound(runtime, message_id).status == "processed", timeout=60,
                   message="the mail processed without waiting out the hourly poll")
        wait_until(lambda: caught(runtime), timeout=60, message="the reply in the catcher")
        assert notices.heard >= 1, "the notification is what woke the worker"
    finally:
        stop.set()
        thread.join(30)
        other.dispose()
    assert not thread.is_alive(), "a stopped worker returns promptly, its listener too"


@ON_POSTGRES
def test_a_job_committed_on_another_connection_rings_the_listener(listening: tuple[JobNotices, Doorbell],
                                                                  database_url: str) -> None:
    notices, bell = listening
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            enqueue(conn, "inbound", {"message_id": "committed"}, max_attempts=1)
            assert not bell.wait(threading.Event(), 0.2), "nothing rings before the commit"
    finally:
        engine.dispose()
    assert bell.wait(threading.Event(), 20), "the commit rang the bell"
    assert notices.heard == 1
