"""Decode the photos of one mail side by side, on worker processes.

A HEIC from a current phone takes most of a second to decode, and one mail can carry
forty of them. ``ImagePool`` hands them to a few worker processes and returns each photo's
``ProcessedPhoto``, or the ``ImageError`` that refused it, in the order given.

The workers are started by a fork server (or spawned, where there is none), never forked
from the server itself: the server process runs threads (the SMTP listener, the web server,
the queue worker), and a fork copies whatever lock one of them holds at that moment.
A photo is handed over as its bytes, or as a ``PhotoSource`` the worker reads itself: a
photo in a stored mail goes as its place in the file (``mail.bodies.StoredBody``), so the
server decodes none of them and no photo is pickled down a pipe, where the next worker would
wait for the whole of the one before. At most two photos per worker are handed over at a
time, so a 40 MB mail is not copied into the workers all at once. A worker that dies (the
OOM killer, a decoder crash) breaks the whole executor; the photos it had not finished are
then tried one at a time on a fresh one, so a photo that crashes the decoder is refused as
an ``ImageError`` and never decoded inside the server process itself. Workers end
themselves when the process that owns the pool dies, even by SIGKILL.

As with any spawn or fork server pool, the main module must be safe to import again (its
work behind ``if __name__ == "__main__":``); ``python -m waypost`` and the ``waypost``
script are.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Protocol

from waypost import failpoints
from waypost.apps.journeys.images import ImageError, ProcessedPhoto, process_photo

log = logging.getLogger(__name__)

MAX_DEFAULT_WORKERS = 4
"""The most ``default_workers`` suggests: each worker is a process with its own decoders
and, while it decodes a large photo, a few hundred MB of pixels."""

_PHOTOS_PER_WORKER = 2  # in flight at once: one being decoded, one waiting to be

KEEP_FREED = 64 << 20
"""Freed memory a worker keeps at the top of its heap for the next photo (``_keep_freed_memory``)."""
_HEAP_UP_TO = 32 << 20  # blocks up to this size come from a worker's heap (glibc's most on 64 bits)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>

PhotoResult = ProcessedPhoto | ImageError

OnResult = Callable[[int, PhotoResult], object]


class PhotoSource(Protocol):
    """A photo a worker reads itself (picklable): ``read`` gives its bytes, or raises OSError
    when they cannot be read, which ends the batch with that error (nothing is refused for it)."""

    def read(self) -> bytes: ...


Photo = bytes | PhotoSource


def default_workers() -> int:
    """The CPUs this process may run on, at most ``MAX_DEFAULT_WORKERS``."""
    return max(1, min(_usable_cpus(), MAX_DEFAULT_WORKERS))


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ImagePool:
    """Runs ``process_photo`` for batches of photos on ``workers`` processes.

    With ``workers <= 1`` everything runs in the calling thread and no process is started.
    Otherwise the executor starts with the first batch (or ``start``) and is reused until
    ``close()``.
    Safe to share between threads.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False
        self._lock = threading.Lock()

    def process(self, photos: Sequence[Photo], *, thumb_px: int = 512, display_px: int = 1600,
                on_result: OnResult | None = None) -> list[PhotoResult]:
        """Each photo's ``ProcessedPhoto`` or ``ImageError``, in the order of ``photos`` (bytes,
        or ``PhotoSource`` that the worker reads).

        A bad image never raises; it comes back as its ``ImageError``. When a worker dies
        mid-batch, the photos still outstanding are tried again one at a time on fresh
        workers, so none is lost and the one that kills its worker again (a decoder crash
        on hostile data) comes back as an ``ImageError`` without ever running in this
        process. Raises ValueError for non-positive sizes, RuntimeError after ``close()``.

        ``on_result(index, result)`` is called in the calling thread for each photo as soon as
        its result is in, in the order they finish, each photo once, before ``process``
        returns: the caller can store the first photos while the others are still decoded.
        What it raises ends ``process`` with that error.
        """
        if thumb_px < 1 or display_px < 1:
            raise ValueError("thumb_px and display_px must be positive")
        if self._closed:
            raise RuntimeError("ImagePool is closed")
        results = _Results(on_result)
        if self.workers <= 1 or not photos:
            for index, data in enumerate(photos):
                results.add(index, _process_one(data, thumb_px, display_px, _usable_cpus() > 1))
            return results.in_order(len(photos))
        executor = self._running_executor()
        try:
            self._run_on(executor, photos, thumb_px, display_px, results)
        except BrokenProcessPool as err:
            log.warning("image worker died (%s); retrying %d photos one by one", err, len(photos) - len(results))
            self._discard(executor)
            for index, data in enumerate(photos):
                if index not in results:
                    results.add(index, self._isolated(data, thumb_px, display_px))
        return results.in_order(len(photos))

    def start(self) -> None:
        """Start the worker processes now, each with the decoders imported, so that the first
        mail does not wait for them (``waypost serve`` and ``waypost worker`` call this at
        start). Nothing to do with ``workers <= 1``. Raises RuntimeError after ``close()``."""
        if self.workers <= 1:
            return
        executor = self._running_executor()
        try:
            for started in [executor.submit(_ready) for _ in range(self.workers)]:
                started.result()
        except BrokenProcessPool as err:  # the next batch starts fresh workers
            log.warning("image workers did not start (%s); they will be started for the first photos", err)
            self._discard(executor)

    def _isolated(self, data: Photo, thumb_px: int, display_px: int) -> PhotoResult:
        """One photo alone on fresh workers: if it kills its worker again, it is the culprit."""
        executor = self._running_executor()
        try:
            return executor.submit(_process_one, data, thumb_px, display_px, True).result()
        except BrokenProcessPool:
            self._discard(executor)
            log.warning("a photo crashed the image decoder twice; it is refused")
            return ImageError("the image decoder crashed on this photo; it may be damaged or hostile")

    def close(self) -> None:
        """Stop the worker processes, waiting for them to exit. Idempotent."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImagePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run_on(
        self,
        executor: ProcessPoolExecutor,
        photos: Sequence[Photo],
        thumb_px: int,
        display_px: int,
        results: _Results,
    ) -> None:
        waiting: Iterator[tuple[int, Photo]] = iter(enumerate(photos))
        # fewer photos than workers leave a core free beside each photo (process_photo's helper thread)
        spare_core = len(photos) < self.workers
        in_flight: dict[Future[PhotoResult], int] = {}
        while True:
            for index, data in islice(waiting, self.workers * _PHOTOS_PER_WORKER - len(in_flight)):
                in_flight[executor.submit(_process_one, data, thumb_px, display_px, spare_core)] = index
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                index = in_flight.pop(future)
                results.add(index, future.result())

    def _running_executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("ImagePool is closed")
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=_process_context(), initializer=_die_with_owner, initargs=(os.getpid(),)
                )
            return self._executor

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        """Forget a broken executor so the next batch starts a new one."""
        with self._lock:
            if self._executor is broken:  # another thread may have replaced it already
                self._executor = None
        broken.shutdown(wait=True, cancel_futures=True)


def _process_context() -> multiprocessing.context.BaseContext:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _die_with_owner(owner: int) -> None:
    """Make a worker exit as soon as the process that owns the pool is gone.

    Workers are children of the fork server, not of the owner, and each holds the fork
    server's keep-alive pipe: if the owner is killed (SIGKILL, the OOM killer), neither the
    workers nor the fork server would notice, and they would keep their memory and the
    owner's stdout open for good. A daemon thread waits on the owner's pidfd (Linux) or,
    elsewhere, checks on it every second."""
    threading.Thread(target=_watch_owner, args=(owner,), name="owner-watch", daemon=True).start()
    _keep_freed_memory()


def _keep_freed_memory() -> None:
    """Let a worker reuse the memory of one photo for the next (glibc): a decode's 12 MB, the
    photo's bytes and the display pixels come from the heap and stay there when freed, up to
    ``KEEP_FREED`` at its top, instead of being handed back to the system and faulted in
    again, page by page, for the next photo. About 13 ms of CPU a photo on a VM that takes 4 µs
    a page; an idle worker holds what its largest photo needed. Nothing elsewhere (musl has no
    ``mallopt``); a glibc that refuses the threshold keeps its own adaptive one."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    if mallopt(_M_MMAP_THRESHOLD, _HEAP_UP_TO):  # setting the trim threshold alone would turn
        mallopt(_M_TRIM_THRESHOLD, KEEP_FREED)  # off glibc's adaptive mmap threshold: both or neither


def _watch_owner(owner: int) -> None:
    try:
        handle = os.pidfd_open(owner)
    except (AttributeError, OSError):
        handle = None
    if handle is not None:
        select.select([handle], [], [])  # readable once the owner has exited
    else:
        while _alive(owner):
            time.sleep(1.0)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Results:
    """The results of one batch by index, each passed to ``on_result`` as it comes in."""

    def __init__(self, on_result: OnResult | None) -> None:
        self._by_index: dict[int, PhotoResult] = {}
        self._on_result = on_result

    def add(self, index: int, result: PhotoResult) -> None:
        self._by_index[index] = result
        if self._on_result is not None:
            self._on_result(index, result)

    def __contains__(self, index: int) -> bool:
        return index in self._by_index

    def __len__(self) -> int:
        return len(self._by_index)

    def in_order(self, count: int) -> list[PhotoResult]:
        return [self._by_index[index] for index in range(count)]


def _ready() -> None:
    """Nothing: run on a fresh worker, it has imported this module and the decoders."""


def _process_one(photo: Photo, thumb_px: int, display_px: int, spare_core: bool) -> PhotoResult:
    """``process_photo`` with a refused image as a value, so it crosses back from a worker
    like any result (runs in the worker process, which reads a ``PhotoSource`` itself)."""
    failpoints.hit("imagepool.decode")
    data = photo if isinstance(photo, bytes) else photo.read()
    try:
        return process_photo(data, thumb_px=thumb_px, display_px=display_px, spare_core=spare_core)
    except ImageError as err:
        return err
