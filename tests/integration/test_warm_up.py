"""A starting worker loads what the first mail would otherwise wait for (issue 19): the place
index, the time zone boundaries, the image workers and the mail templates, in a thread of its own."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from waypost.apps.journeys.places import PlaceIndex
from waypost.config import Settings


@contextmanager
def _running(runtime: Any) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=runtime.worker().run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def _image_workers(runtime: Any) -> int:
    executor = runtime.images._executor
    return 0 if executor is None else sum(process.is_alive() for process in executor._processes.values())


def test_a_starting_worker_loads_the_place_index_and_starts_the_image_workers(
        make_settings: Callable[..., Settings], allowing_runtime: Callable[[Settings], Any]) -> None:
    built = allowing_runtime(make_settings(journeys={"image_workers": 2}))
    places = PlaceIndex()  # not the process's shared one: this test sees it loaded
    runtime = dataclasses.replace(built, places=places)
    assert places._tables is None and _image_workers(runtime) == 0
    with _running(runtime):
        wait_until(lambda: places._tables is not None, timeout=60, message="the place index to load")
        wait_until(lambda: _image_workers(runtime) == 2, timeout=60, message="the image workers to start")


def test_a_part_that_cannot_load_is_logged_and_the_rest_still_loads(
        make_settings: Callable[..., Settings], allowing_runtime: Callable[[Settings], Any], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    built = allowing_runtime(make_settings(journeys={"image_workers": 2}))
    runtime = dataclasses.replace(built, places=PlaceIndex(tmp_path / "no-such-places.tsv"))
    with caplog.at_level(logging.ERROR, logger="waypost.runtime"):
        runtime.warm_up()
    assert "could not load the place index at start" in caplog.text
    assert _image_workers(runtime) == 2


def _compiled(env: Any) -> set[str]:
    return {name for (_, name) in env.cache} if env.cache is not None else set()


def test_the_warm_up_compiles_every_mail_template_as_text_and_as_html(
        make_settings: Callable[..., Settings], allowing_runtime: Callable[[Settings], Any]) -> None:
    runtime = allowing_runtime(make_settings())
    composer = runtime.composer
    assert "journeys/journey_ready.jinja" not in _compiled(composer.text_env)
    runtime.warm_up()
    names = {name for name in composer.text_env.list_templates() if name.endswith(".jinja")}
    assert {"journeys/journey_ready.jinja", "journeys/journey_updated.jinja"} <= names
    assert names <= _compiled(composer.text_env)
    assert names <= _compiled(composer.html_env)
