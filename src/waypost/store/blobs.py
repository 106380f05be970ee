"""BlobStore port and its embedded adapter: a local directory with atomic, fsynced writes."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
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
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
        except OSError as err:
            raise StorageError(f"cannot store blob {key}: {err}") from err

    def put_stream(self, key: str, stream: BinaryIO) -> int:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return write_atomically(path, stream)
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


def write_atomically(path: Path, data: bytes | BinaryIO) -> int:
    """Write ``data`` (bytes, or a binary file read in chunks) to a temporary file beside
    ``path``, fsync it, rename it over ``path``, then fsync the directory so the rename itself
    survives a power cut. Returns the number of bytes written."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            size = handle.write(data) if isinstance(data, bytes) else _copy(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return size


def _copy(source: BinaryIO, target: BinaryIO) -> int:
    size = 0
    while chunk := source.read(CHUNK):
        target.write(chunk)
        size += len(chunk)
    return size
