"""An idle worker takes mail stored by its own process at once, not after its poll interval:
the inbox rings the runtime's doorbell after each commit. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.conftest import wait_until
from tests.integration.test_pipeline import caught, deliver, inbound, photo_mail
from waypost.store.queue import Doorbell

AN_HOUR = 3600.0


def test_a_worker_polling_hourly_answers_mail_stored_in_its_process_at_once(
        make_settings: Callable[..., Any], database_url: str, allowing_runtime: Callable[..., Any]) -> None:
    runtime = allowing_runtime(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                             worker={"poll_interval": AN_HOUR},
                                             retention={"sweep_interval_minutes": 60}))
    worker = runtime.worker()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        # the worker found nothing at start and now waits up to an hour; the bell must end that
        message_id = deliver(runtime, photo_mail())
        wait_until(lambda: inbound(runtime, message_id).status == "processed", timeout=60,
                   message="the mail processed without waiting out the poll interval")
        wait_until(lambda: caught(runtime), timeout=60, message="the reply in the catcher")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "a stopped worker returns promptly even while waiting an hour"


def test_the_bell_ends_a_wait_once_and_stop_ends_it_too() -> None:
    bell, stop = Doorbell(), threading.Event()
    bell.ring()
    assert bell.wait(stop, AN_HOUR) is True  # rung before the wait: it returns at once
    assert bell.wait(stop, 0.01) is False  # the ring was used up
    ringer = threading.Timer(0.05, bell.ring)
    ringer.start()
    assert bell.wait(stop, AN_HOUR) is True
    stopper = threading.Timer(0.05, stop.set)
    stopper.start()
    assert bell.wait(stop, AN_HOUR) is False
    ringer.join()
    stopper.join()
