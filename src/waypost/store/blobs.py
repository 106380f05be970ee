"""BlobStore port and its embedded adapter: a local directory with atomic, fsynced writes."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from waypost.errors import StorageError

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class BlobStore(Protocol):
    """Opaque bytes under slash-separated keys.

    ``put`` returns only once the bytes are durable (an acknowledged SMTP transaction relies
    on it) and raises StorageError otherwise; ``put_stream`` does the same for bytes read from a
    binary file in chunks (a mail streamed from S3), never holding them whole, and returns how
    many it stored. ``get`` raises KeyError for a missing key;
    ``open`` does too, and gives a binary file to read a large blob without holding it whole.
    ``iter_keys`` yields, lazily and in no set order, every key under a prefix with the time its
    blob was last written (aware UTC), so a sweep can walk any number of blobs in bounded memory."""

    def put(self, key: str, data: bytes) -> None: ...
    def put_stream(self, key: str, stream: BinaryIO) -> int: ...
    def get(self, key: str) -> bytes: ...
    def open(self, key: str) -> BinaryIO: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def iter_keys(self, prefix: str) -> Iterator[tuple[str, datetime]]: ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class LocalBlobStore:
    def __init__(self, root: Path, *, sync_directory: bool = True) -> None:
        """``sync_directory`` False: see ``deferring_directory_sync``."""
        self.root = Path(root)
        self.sync_directory = sync_directory

    def deferring_directory_sync(self) -> LocalBlobStore:
        """The same directory, but ``put`` and ``put_stream`` return once the blob's bytes are
        durable and renamed into place, before the fsync of its directory: the name survives a
        power cut only once ``sync_directories`` returned for its key. For a caller that makes
        many blobs durable at once (the ingest's group commit): one directory fsync for them all
        instead of one per blob."""
        return LocalBlobStore(self.root, sync_directory=False)

    def sync_directories(self, keys: Iterable[str]) -> None:
        """Make the names of blobs put by a ``deferring_directory_sync`` store durable: fsync
        each of their directories once. Raises StorageError."""
        for directory in {self._path(key).parent for key in keys}:
            try:
                fsync_directory(directory)
            except OSError as err:
                raise StorageError(f"cannot sync blob directory {directory}: {err}") from err

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def put_stream(self, key: str, stream: BinaryIO) -> int:
        return self._put(key, stream)

    def _put(self, key: str, data: bytes | BinaryIO) -> int:
        try:
            return write_atomically(self._path(key), data, sync_directory=self.sync_directory, make_folder=True)
        except OSError as err:
            raise StorageError(f"cannot store blob {key}: {err}") from err

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def iter_keys(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Keys under the folder ``prefix`` ("inbound", "photos"); ``put``'s temporary files
        are not keys and are left out."""
        return _walk(self.root, self._path(prefix.strip("/")))


def _walk(root: Path, directory: Path) -> Iterator[tuple[str, datetime]]:
    """Depth first, entering a folder as soon as it is met: one open listing per level, so
    memory stays bounded however many blobs (or photo folders) there are."""
    try:
        entries = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(root, Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and (found := _found(root, entry)) is not None:
                yield found


def _found(root: Path, entry: os.DirEntry[str]) -> tuple[str, datetime] | None:
    """The key and write time of a file; None for a name no key can have, or a file gone
    since it was listed (a concurrent delete)."""
    key = Path(entry.path).relative_to(root).as_posix()
    if not _KEY.match(key):
        return None
    try:
        return key, datetime.fromtimestamp(entry.stat(follow_symlinks=False).st_mtime, UTC)
    except FileNotFoundError:
        return None


CHUNK = 64 * 1024


def write_atomically(path: Path, data: bytes | BinaryIO, *, sync_directory: bool = True,
                     make_folder: bool = False) -> int:
    """Write ``data`` (bytes, or a binary file read in chunks) to a temporary file beside
    ``path``, fsync it, rename it over ``path``, then fsync the directory so the rename itself
    survives a power cut (unless ``sync_directory`` is False: the caller does that later with
    ``fsync_directory``). ``make_folder``: create ``path``'s folder when it is missing. Returns
    the number of bytes written."""
    fd, tmp = _temporary_beside(path, make_folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            size = handle.write(data) if isinstance(data, bytes) else _copy(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_directory:
        fsync_directory(path.parent)
    return size


def _temporary_beside(path: Path, make_folder: bool) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    except FileNotFoundError:  # a new folder (one a day for mail): made once, not tried each time
        if not make_folder:
            raise
    _make_folder(path.parent)
    return tempfile.mkstemp(prefix=".tmp-", dir=path.parent)


def _make_folder(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each durable in its parent (fsynced)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)  # exist_ok: another thread may make it at the same moment
        fsync_directory(made.parent)


def fsync_directory(directory: Path) -> None:
    """fsync a folder, so the names created or renamed in it survive a power cut."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _copy(source: BinaryIO, target: BinaryIO) -> int:
    size = 0
    while chunk := source.read(CHUNK):
        target.write(chunk)
        size += len(chunk)
    return size
