"""ImagePool: photos processed on worker processes, checked against processing them inline.

Worker processes are real (started by the fork server); the tests that kill them use
SIGKILL, as the OOM killer does, and wait on conditions with deadlines.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import wait_until
from waypost.apps.journeys import imagepool
from waypost.apps.journeys.imagepool import MAX_DEFAULT_WORKERS, ImagePool, default_workers
from waypost.apps.journeys.images import ImageError, ProcessedPhoto, process_photo
from waypost.apps.journeys.samples import DEMO_TRIP, make_photo
from waypost.mail.bodies import StoredBody
from waypost.mail.parse import parse_message

CORRUPT = b"\xff\xd8\xff\xe0" + b"\x13" * 300
SIZES = {"thumb_px": 160, "display_px": 480}


def _photos(count: int, size: tuple[int, int] = (640, 480)) -> list[bytes]:
    return [make_photo(DEMO_TRIP[index % len(DEMO_TRIP)], size=size, seed=index) for index in range(count)]


def _reencoded(data: bytes, image_format: str) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.save(buffer, image_format, exif=image.info["exif"])
        return buffer.getvalue()


def _inline(photos: list[bytes], **sizes: int) -> list[Any]:
    return [_comparable(_process_inline(data, **sizes)) for data in photos]


def _process_inline(data: bytes, **sizes: int) -> ProcessedPhoto | ImageError:
    try:
        return process_photo(data, **sizes)
    except ImageError as err:
        return err


def _comparable(result: ProcessedPhoto | ImageError) -> Any:
    """Results as values: photos compare field by field (the JPEG bytes included);
    exceptions only compare by identity, so an error becomes its type and message."""
    if isinstance(result, ImageError):
        return ImageError, str(result)
    assert isinstance(result, ProcessedPhoto), result
    return result


@pytest.fixture
def pool() -> Iterator[ImagePool]:
    with ImagePool(2) as running:
        yield running


# --- how many workers -----------------------------------------------------------------


def test_default_workers_counts_usable_cpus_up_to_four(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_workers() == MAX_DEFAULT_WORKERS == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert default_workers() == 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert default_workers() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_workers() == 1


def test_one_worker_runs_inline_in_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_processes(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a one-worker pool must not start processes")

    threads: list[int] = []

    def recording(data: bytes, **sizes: int) -> ProcessedPhoto:
        threads.append(threading.get_ident())
        return process_photo(data, **sizes)

    photos = _photos(3)
    expected = _inline(photos, **SIZES)
    monkeypatch.setattr(imagepool, "ProcessPoolExecutor", no_processes)
    monkeypatch.setattr(imagepool, "process_photo", recording)
    for workers in (1, 0, -1):
        with ImagePool(workers) as inline:
            assert [_comparable(result) for result in inline.process(photos, **SIZES)] == expected
    assert set(threads) == {threading.get_ident()}


# --- results --------------------------------------------------------------------------


def test_workers_return_the_inline_results_in_order(pool: ImagePool) -> None:
    jpegs = _photos(4, size=(900, 600))
    photos = [*jpegs, *(_reencoded(jpegs[0], fmt) for fmt in ("PNG", "WEBP", "TIFF", "HEIF", "AVIF"))]
    results = pool.process(photos, **SIZES)
    assert [_comparable(result) for result in results] == _inline(photos, **SIZES)
    assert [result.sha256 for result in results] == [_process_inline(data).sha256 for data in photos]  # type: ignore[union-attr]


def test_corrupt_photo_in_the_middle_comes_back_as_its_error(pool: ImagePool) -> None:
    photos = _photos(5)
    batch = [*photos[:2], CORRUPT, *photos[2:]]
    results = pool.process(batch, **SIZES)
    assert [_comparable(result) for result in results] == _inline(batch, **SIZES)
    assert isinstance(results[2], ImageError) and "corrupt" in str(results[2])
    assert all(isinstance(result, ProcessedPhoto) for index, result in enumerate(results) if index != 2)


def _stored_photos(photos: list[bytes], path: Path) -> list[StoredBody]:
    """The photos as a stored mail's bodies, each named by its place in the file."""
    mail = EmailMessage()
    mail["From"], mail["Subject"] = "ann@example.org", "photos"
    mail.set_content("Our trip.")
    for index, photo in enumerate(photos):
        mail.add_attachment(photo, maintype="image", subtype="jpeg", filename=f"IMG_{index}.jpg")
    path.write_bytes(mail.as_bytes())
    with path.open("rb") as handle:
        places = [attachment.body.stored() for attachment in parse_message(handle).attachments]
    assert all(isinstance(place, StoredBody) for place in places)
    return places  # type: ignore[return-value]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_photo_named_by_its_place_in_a_stored_mail_is_read_by_the_worker(workers: int, tmp_path: Path) -> None:
    photos = [*_photos(2), CORRUPT * 100, *_photos(1)]  # each long enough to stay in the file
    places = _stored_photos(photos, tmp_path / "mail.eml")
    with ImagePool(workers) as pool:
        mixed = pool.process([places[0], photos[1], *places[2:]], **SIZES)
        named = pool.process(places, **SIZES)
    assert [_comparable(result) for result in mixed] == [_comparable(result) for result in named] == _inline(
        photos, **SIZES)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_photo_its_worker_cannot_read_ends_the_batch_with_that_error(workers: int, tmp_path: Path) -> None:
    path = tmp_path / "mail.eml"
    places = _stored_photos(_photos(3), path)
    path.unlink()  # purged meanwhile: no photo is refused for it, the job that asked fails and is retried
    with ImagePool(workers) as pool:
        with pytest.raises(FileNotFoundError):
            pool.process(places, **SIZES)
        assert len(pool.process(_photos(2), **SIZES)) == 2  # the pool goes on


def test_empty_batch_and_bad_sizes(pool: ImagePool) -> None:
    assert pool.process([]) == []
    for sizes in ({"thumb_px": 0}, {"display_px": -1}):
        with pytest.raises(ValueError, match="positive"):
            pool.process(_photos(1), **sizes)
        with pytest.raises(ValueError, match="positive"):
            ImagePool(1).process(_photos(1), **sizes)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_result_is_handed_on_as_it_comes_in_once(workers: int) -> None:
    photos = [*_photos(3), CORRUPT, *_photos(2)]
    seen: list[tuple[int, Any]] = []
    with ImagePool(workers) as pool:
        results = pool.process(photos, **SIZES, on_result=lambda index, result: seen.append((index, result)))
    assert sorted(index for index, _ in seen) == list(range(len(photos)))
    assert all(result is results[index] for index, result in seen)  # before process returned


def test_what_on_result_raises_ends_the_batch(pool: ImagePool) -> None:
    def refuse(index: int, result: Any) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        pool.process(_photos(3), **SIZES, on_result=refuse)
    assert len(pool.process(_photos(2), **SIZES)) == 2  # the pool goes on


def test_start_runs_the_workers_before_the_first_batch() -> None:
    with ImagePool(2) as pool:
        pool.start()
        workers = list(pool._executor._processes.values())  # type: ignore[union-attr]
        assert len(workers) == 2 and all(worker.is_alive() for worker in workers)
        pool.process(_photos(2), **SIZES)
        assert list(pool._executor._processes.values()) == workers  # type: ignore[union-attr]
    ImagePool(1).start()  # inline: nothing to start
    closed = ImagePool(2)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.start()


def _resident_after_freeing(megabytes: int) -> tuple[int, int]:
    """In a worker: resident kB before and after a block of ``megabytes`` is filled and freed."""
    def resident() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    before = resident()
    block = bytearray(megabytes << 20)
    del block
    return before, resident()


def test_a_worker_keeps_freed_photo_memory_for_the_next_photo() -> None:
    """A worker's heap keeps a photo's worth of freed memory, so the next photo does not fault
    it in again; a process without the setting gives a block that size back at once."""
    with ImagePool(2) as pool:
        pool.start()
        before, after = pool._running_executor().submit(_resident_after_freeing, 24).result()
    assert after - before > 20 << 10
    with ProcessPoolExecutor(1, mp_context=imagepool._process_context()) as plain:
        before, after = plain.submit(_resident_after_freeing, 24).result()
    assert after - before < 4 << 10


# --- the executor ---------------------------------------------------------------------


class _RecordingExecutor(ProcessPoolExecutor):
    """A real executor that notes its start method and how many photos it holds at once."""

    started: list[_RecordingExecutor] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start_method = kwargs["mp_context"].get_start_method()
        self.futures: list[Future[Any]] = []
        self.most_unfinished = 0
        _RecordingExecutor.started.append(self)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        # A future is done before whoever waits on it wakes up, so this counts only
        # photos handed over whose results are not back yet.
        self.most_unfinished = max(self.most_unfinished, sum(not f.done() for f in self.futures))
        return future


def test_executor_starts_lazily_never_forks_and_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_RecordingExecutor, "started", [])
    monkeypatch.setattr(imagepool, "ProcessPoolExecutor", _RecordingExecutor)
    with ImagePool(2) as pool:
        assert _RecordingExecutor.started == []
        pool.process(_photos(2), **SIZES)
        pool.process(_photos(3), **SIZES)
    assert len(_RecordingExecutor.started) == 1
    assert _RecordingExecutor.started[0].start_method in ("forkserver", "spawn")


def test_at_most_two_photos_per_worker_are_handed_over_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_RecordingExecutor, "started", [])
    monkeypatch.setattr(imagepool, "ProcessPoolExecutor", _RecordingExecutor)
    photos = _photos(8, size=(320, 240)) * 5  # a 40-photo mail
    with ImagePool(2) as pool:
        results = pool.process(photos, **SIZES)
    (executor,) = _RecordingExecutor.started
    assert len(executor.futures) == 40
    assert executor.most_unfinished == 4
    assert [_comparable(result) for result in results] == _inline(photos, **SIZES)


def test_close_is_idempotent_and_stops_the_workers() -> None:
    ImagePool(2).close()  # never started
    pool = ImagePool(2)
    pool.process(_photos(2), **SIZES)
    workers = list(pool._executor._processes.values())  # type: ignore[union-attr]
    assert workers and all(worker.is_alive() for worker in workers)
    pool.close()
    pool.close()
    assert not any(worker.is_alive() for worker in workers)
    with pytest.raises(RuntimeError, match="closed"):
        pool.process(_photos(1))


# --- workers that die -----------------------------------------------------------------


def _kill(workers: list[Any]) -> None:
    for worker in workers:
        os.kill(worker.pid, signal.SIGKILL)


def test_pool_recovers_when_its_idle_workers_are_killed(pool: ImagePool, caplog: pytest.LogCaptureFixture) -> None:
    photos = _photos(4)
    pool.process(photos[:1], **SIZES)
    broken = pool._executor
    assert broken is not None
    workers = list(broken._processes.values())  # type: ignore[attr-defined]
    _kill(workers)
    wait_until(lambda: not any(worker.is_alive() for worker in workers), message="the workers to die")
    with caplog.at_level(logging.WARNING, logger=imagepool.__name__):
        assert [_comparable(result) for result in pool.process(photos, **SIZES)] == _inline(photos, **SIZES)
    assert "image worker died" in caplog.text
    assert pool._executor is not broken
    # The next batch gets a new executor with live workers.
    assert [_comparable(result) for result in pool.process(photos, **SIZES)] == _inline(photos, **SIZES)
    fresh = pool._executor
    assert fresh is not None and fresh is not broken
    assert all(worker.is_alive() for worker in fresh._processes.values())  # type: ignore[attr-defined]


def test_batch_is_finished_on_fresh_workers_when_its_workers_die_mid_batch(pool: ImagePool) -> None:
    photos = [*_photos(6, size=(1200, 900)), CORRUPT, *_photos(5, size=(1200, 900))]
    expected = _inline(photos, **SIZES)
    outcome: list[list[ProcessedPhoto | ImageError]] = []
    runner = threading.Thread(target=lambda: outcome.append(pool.process(photos, **SIZES)))
    runner.start()
    executor = wait_until(lambda: pool._executor, message="the executor to start")
    # Workers are started as photos are handed over; kill them as soon as they exist,
    # long before one of them has finished a 1 MP photo.
    _kill(wait_until(lambda: list(executor._processes.values()), message="worker processes"))
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert [_comparable(result) for result in outcome[0]] == expected
    assert pool._executor is not executor  # the broken executor was dropped
    assert [_comparable(result) for result in pool.process(photos[:3], **SIZES)] == expected[:3]


_OWNER_KILLED = """
import os, signal
from waypost.apps.journeys.imagepool import ImagePool
from waypost.apps.journeys.samples import DEMO_TRIP, make_photo

pool = ImagePool(2)
pool.process([make_photo(DEMO_TRIP[0], size=(64, 48))] * 4, thumb_px=32, display_px=64)
print(*pool._executor._processes, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_workers_end_when_the_process_owning_the_pool_is_killed() -> None:
    # run() reads the owner's stdout to the end: it returns only once no worker and no
    # fork server holds that pipe open any more (this is what hung the server's e2e tests).
    owner = subprocess.run([sys.executable, "-c", _OWNER_KILLED], capture_output=True, text=True, timeout=60)
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    workers = [int(pid) for pid in owner.stdout.split()]
    assert len(workers) == 2
    wait_until(lambda: not any(_running(pid) for pid in workers), message="the orphaned workers to exit")


_CRASHING_DECODER = """
import os
from waypost.apps.journeys.imagepool import ImagePool
from waypost.apps.journeys.images import ImageError
from waypost.apps.journeys.samples import DEMO_TRIP, make_photo

with ImagePool(2) as pool:
    results = pool.process([make_photo(shot, size=(64, 48)) for shot in DEMO_TRIP[:3]], thumb_px=32, display_px=64)
print([str(r) if isinstance(r, ImageError) else "ok" for r in results], os.getpid())
"""


def test_a_photo_that_crashes_the_decoder_is_refused_and_never_decoded_in_the_owner() -> None:
    # every decode kills its worker (as a segfault on hostile data would): each photo is
    # tried once more alone, then refused; the owning process itself survives
    env = {**os.environ, "WAYPOST_FAILPOINTS": "imagepool.decode=crash"}
    owner = subprocess.run([sys.executable, "-c", _CRASHING_DECODER], capture_output=True, text=True,
                           timeout=120, env=env)

    assert owner.returncode == 0, owner.stderr
    results = owner.stdout.rsplit(" ", 1)[0]
    assert results.count("the image decoder crashed on this photo") == 3 and "ok" not in results


def test_a_photo_gets_a_spare_core_only_when_the_batch_leaves_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer photos than workers: each photo may use a second thread. As many or more: every
    worker is busy, so each photo runs on its own thread alone."""
    from concurrent.futures import ThreadPoolExecutor

    asked: list[bool] = []

    def recording(data: bytes, *, thumb_px: int, display_px: int, spare_core: bool) -> ProcessedPhoto:
        asked.append(spare_core)
        return process_photo(data, thumb_px=thumb_px, display_px=display_px, spare_core=spare_core)

    monkeypatch.setattr(imagepool, "process_photo", recording)
    photo = make_photo(DEMO_TRIP[0], size=(320, 240))
    with ThreadPoolExecutor(max_workers=2) as threads:
        pool = ImagePool(2)
        monkeypatch.setattr(pool, "_running_executor", lambda: threads)
        assert all(isinstance(result, ProcessedPhoto) for result in pool.process([photo]))
        assert asked == [True]
        asked.clear()
        assert len(pool.process([photo, photo, photo])) == 3
        assert asked == [False, False, False]
