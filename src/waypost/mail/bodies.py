"""Large base64 bodies kept out of the stdlib parser, and decoded only when asked for.

The stdlib's feed parser reads a body line by line in Python: a 20 MB mail of photos is
250,000 base64 lines, most of the time it takes to read the mail, and every decoded body
ends up in memory at once. ``ElidingFeed`` keeps the mail in a spool (memory, then an
unnamed file; or, for a mail read from a local file or given as ``bytes``, those bytes where
they are: ``Spool.of``) and hands the parser the same text with each long run of base64 lines
replaced by one line naming it; regular expressions find the runs, so the scan runs at C
speed. The structure the parser builds is the same either way: such lines hold no colon,
no leading white space and no ``--``, so they can be neither a header, nor a continuation,
nor a boundary. ``claim_bodies`` then checks that every run became the whole body of a
base64 part, and attaches a ``Body`` to that part: its size is known without decoding, and
``read`` decodes it with pybase64's SIMD decoder, as ``Message.get_payload(decode=True)`` would
(same bytes; only runs that method decodes with no defect are replaced): a photo's body in one
call, a longer one in large chunks. A run found
anywhere else (a preamble, a text part, a delivery-status block) makes ``claim_bodies``
answer False, and the caller parses the spooled mail again the plain way. A body of a mail read
from a named file also gives its place there (``Body.stored``, a picklable ``StoredBody``), so
another process (the image pool's worker) reads and decodes it itself, after checking that the
file is still the one parsed.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Protocol

import pybase64

from waypost.mail.spooled import read_at

__all__ = ["Body", "ElidingFeed", "HeldBody", "PartBody", "Spool", "StoredBody", "claim_bodies"]

ELIDE_FROM = 16 * 1024  # encoded bytes; shorter runs go to the parser as they are
_READ = 1024 * 1024
_WHOLE = 8 * 1024 * 1024  # encoded bytes: a body up to this long is decoded in one call
_IN_MEMORY = 1024 * 1024  # the spool moves to an unnamed file past this
_LONGEST_HELD_LINE = 1024 * 1024  # a longer line without its end is fed on, not held
# a line of the base64 alphabet; '=' only at its end (RFC 2045 §6.8: padding ends the data)
_FIRST_LINE = re.compile(rb"^[A-Za-z0-9+/]+={0,2}\r?\n", re.MULTILINE)
_FULL_LINES = re.compile(rb"(?:[A-Za-z0-9+/]+\r?\n)*")
_PADDED_LINE = re.compile(rb"[A-Za-z0-9+/]*={1,2}\r?\n")
_EOLS = b"\r\n"
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


class Spool:
    """Every byte of one mail, written once and read back by range; thread-safe. Closed by
    ``close``, or when the last body read from it is gone."""

    size: int
    close: Callable[[], object]

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY)  # noqa: SIM115 - lives with the bodies
        self._lock = threading.Lock()
        self.size = 0
        self.close = weakref.finalize(self, self._file.close)

    def write(self, data: bytes) -> None:
        with self._lock:
            self._file.seek(self.size)
            self._file.write(data)
            self.size += len(data)

    def read(self, start: int, end: int) -> bytes:
        with self._lock:
            self._file.seek(start)
            return self._file.read(max(0, end - start))

    def chunks(self, start: int = 0, end: int | None = None, size: int = _READ) -> Iterator[bytes]:
        end = self.size if end is None else end
        for offset in range(start, end, size):
            yield self.read(offset, min(end, offset + size))

    @staticmethod
    def of(source: object, origin: int = 0) -> Spool:
        """A spool for a mail read from ``source`` from octet ``origin`` on: where its bytes
        already stay put (``bytes``, or a regular file such as a stored blob), one that reads
        them there instead of copying them (a 20 MB mail is not written out a second time);
        otherwise a fresh ``Spool`` that keeps what ``write`` is given."""
        if isinstance(source, bytes):
            return _HeldSpool(source, origin)
        if not isinstance(source, io.BufferedReader | io.BufferedRandom | io.FileIO):
            return Spool()  # a network stream's fileno() may raise anything, or name a socket
        try:
            fd = source.fileno()
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode):
                return _FileSpool(fd, origin, _named(source, info))
        except (OSError, ValueError):  # io.UnsupportedOperation is both; a closed file: ValueError
            pass
        return Spool()

    def stored(self, start: int, end: int, size: int) -> StoredBody | None:
        """The body of ``size`` decoded bytes at ``start:end``, as a ``StoredBody`` another
        process can read: only where the mail is a file it can open by name."""
        return None


class _HeldSpool(Spool):
    """The spool of a mail given as ``bytes``: ``write`` only counts, since the bytes written
    are ``data[origin:]``, in order (an immutable object: they cannot change meanwhile)."""

    def __init__(self, data: bytes, origin: int) -> None:
        self._data = memoryview(data)
        self._origin = origin
        self.size = 0
        self.close = lambda: None

    def write(self, data: bytes) -> None:
        self.size += len(data)

    def read(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        return bytes(self._data[self._origin + start:self._origin + max(start, end)])


class _FileSpool(Spool):
    """The spool of a mail read from a regular file (the blob store's, which is replaced by
    renaming, never changed in place): ``write`` only counts, since the bytes written are the
    file's from ``origin`` on, in order; ``read`` reads them from the file through a
    descriptor of its own (``os.pread``: thread-safe), closed by ``close`` or when the last
    body is gone, so the caller may close its file once parsed."""

    def __init__(self, fd: int, origin: int, name: tuple[str, int, int] | None = None) -> None:
        own = os.dup(fd)
        self._fd = own
        self._origin = origin
        self._name = name
        self.size = 0
        self.close = weakref.finalize(self, os.close, own)

    def stored(self, start: int, end: int, size: int) -> StoredBody | None:
        if self._name is None:
            return None
        return StoredBody(*self._name, origin=self._origin, start=start, end=min(end, self.size), size=size)

    def write(self, data: bytes) -> None:
        self.size += len(data)

    def read(self, start: int, end: int) -> bytes:
        return read_at(self._fd, self._origin + start, max(0, min(end, self.size) - start), "the stored mail")


def _named(source: object, info: os.stat_result) -> tuple[str, int, int] | None:
    """(path, device, inode): the path by which another process opens the very file ``source``
    is, checked by device and inode; or None: a file with no name, or one renamed or replaced
    since it was opened."""
    path = getattr(source, "name", None)
    if not isinstance(path, str):  # an int: opened from a descriptor
        return None
    path = os.path.abspath(path)  # what another process, in another directory, can open
    try:
        now = os.stat(path)
    except OSError:
        return None
    if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
        return None
    return path, info.st_dev, info.st_ino


@dataclass(frozen=True)
class StoredBody:
    """A base64 body of a stored mail, named by where it lies, for another process to read and
    decode itself: the image pool hands its workers this instead of the photo's bytes, so a
    photo crosses no pipe and the server decodes none of them. Picklable."""

    path: str
    device: int
    inode: int
    origin: int
    start: int
    end: int
    size: int

    def read(self) -> bytes:
        """The decoded bytes, as ``Body.read`` gives them. Raises OSError when the file is
        gone, shorter than it was, or no longer the one that was parsed."""
        fd = os.open(self.path, os.O_RDONLY)  # not inherited by children (PEP 446)
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != (self.device, self.inode):
                raise OSError(f"{self.path} is no longer the stored mail that was parsed")
            spool = _FileSpool(fd, self.origin)
            spool.size = self.end
            try:
                return Body(spool, self.start, self.end, self.size).read()
            finally:
                spool.close()
        finally:
            os.close(fd)


class PartBody(Protocol):
    """The decoded bytes of one part: ``size`` of them, ``read`` gives them (or their first
    ``limit``), ``stored`` says where another process can read them itself (or None)."""

    @property
    def size(self) -> int: ...

    def read(self, limit: int | None = None) -> bytes: ...

    def stored(self) -> StoredBody | None: ...


@dataclass(frozen=True)
class HeldBody:
    """A body the stdlib decoded, held as bytes."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, limit: int | None = None) -> bytes:
        return self.data if limit is None else self.data[:limit]

    def stored(self) -> StoredBody | None:
        return None  # in this process's memory alone


@dataclass(frozen=True)
class Body:
    """One base64 body, still encoded in the spool: ``size`` decoded bytes, known without decoding."""

    spool: Spool
    start: int
    end: int
    size: int

    def read(self, limit: int | None = None) -> bytes:
        """The decoded bytes (at most ``limit`` of them, read only that far)."""
        wanted = self.size if limit is None else min(limit, self.size)
        if wanted == self.size and self.end - self.start <= _WHOLE:
            # The whole run at once: the non-validating decoder skips the line ends itself
            # (the run holds nothing else), five times faster than binascii after a translate.
            return pybase64.b64decode(self.spool.read(self.start, self.end))
        pieces: list[bytes] = []
        got, carry = 0, b""
        for chunk in self.spool.chunks(self.start, self.end):
            if got >= wanted:
                break
            text = carry + chunk.translate(None, _EOLS)
            whole = len(text) - len(text) % 4
            carry = text[whole:]
            piece = pybase64.b64decode(text[:whole], validate=True)
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)[:wanted]

    def stored(self) -> StoredBody | None:
        """Where another process can read this body itself: when the mail is a named file."""
        return self.spool.stored(self.start, self.end, self.size)


@dataclass
class _Run:
    start: int  # offset in the spool of its first line
    end: int = 0
    characters: int = 0  # line ends not counted
    padding: int = 0
    eol: bytes = b"\n"


class ElidingFeed:
    """Feeds ``feed`` (the stdlib parser's) the mail given to ``write``, chunk by chunk, with
    long base64 runs replaced by a line naming each; ``runs`` lists them in order."""

    def __init__(self, feed: Callable[[bytes], None], elide_from: int | None = None, *,
                 spool: Spool | None = None) -> None:
        """``spool``: where the mail's bytes are kept for the bodies (default: a fresh ``Spool``;
        see ``Spool.of``)."""
        self._feed = feed
        self.elide_from = ELIDE_FROM if elide_from is None else elide_from
        self.spool = spool or Spool()
        self.token = f"WaypostBody{secrets.token_hex(8)}N"
        self.runs: list[_Run] = []
        self._held = b""  # an unfinished line
        self._run: _Run | None = None

    def write(self, chunk: bytes) -> None:
        self.spool.write(chunk)
        data = self._held + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0 and self._run is None and len(data) > _LONGEST_HELD_LINE:
            self._feed(data)  # no line end in sight: no run starts here
            self._held = b""
            return
        self._held = data[cut:]
        self._scan(data[:cut], self.spool.size - len(data))

    def close(self) -> None:
        if self._run is not None:
            end = self.spool.size - len(self._held)
            self._end_run(end, b"", end)
        if self._held:
            self._feed(self._held)
            self._held = b""

    def _scan(self, lines: bytes, base: int) -> None:
        """``lines``: whole lines, the first at offset ``base`` of the spool."""
        position = 0
        while position < len(lines):
            if self._run is None:
                found = _FIRST_LINE.search(lines, position)
                if found is None:
                    self._feed(lines[position:])
                    return
                self._feed(lines[position:found.start()])
                self._run = _Run(base + found.start())
                position = found.start()
            position = self._extend(lines, position, base)

    def _extend(self, lines: bytes, position: int, base: int) -> int:
        run = self._run
        assert run is not None
        uniform = _uniform_lines(lines) if position == 0 else None
        if uniform is not None:  # most chunks of a long run: no regex needed
            run.characters += len(lines) - uniform[0]
            run.eol = uniform[1]
            return len(lines)  # the run goes on in the next chunk
        full = _FULL_LINES.match(lines, position)
        assert full is not None  # it matches the empty string
        self._count(run, lines, position, full.end())
        if full.end() == len(lines):
            return full.end()
        padded = _PADDED_LINE.match(lines, full.end())
        end = full.end()
        if padded is not None:
            self._count(run, lines, end, padded.end())
            run.padding = padded.group(0).rstrip(_EOLS).count(b"=")
            end = padded.end()
        self._end_run(base + end, lines, base)
        return end

    @staticmethod
    def _count(run: _Run, lines: bytes, start: int, end: int) -> None:
        if end > start:
            piece = lines[start:end]
            run.characters += len(piece) - piece.count(b"\n") - piece.count(b"\r")
            run.eol = b"\r\n" if piece.endswith(b"\r\n") else b"\n"

    def _end_run(self, end: int, lines: bytes, base: int) -> None:
        run, self._run = self._run, None
        assert run is not None
        run.end = end
        if end - run.start >= self.elide_from and run.characters % 4 == 0:
            self.runs.append(run)
            self._feed(f"{self.token}{len(self.runs) - 1}".encode() + run.eol)
        elif run.start >= base:
            self._feed(lines[run.start - base:end - base])
        else:  # begun in an earlier chunk: short, or not decodable without a defect
            for chunk in self.spool.chunks(run.start, end):
                self._feed(chunk)

    def bodies(self) -> list[Body]:
        return [Body(self.spool, run.start, run.end, run.characters // 4 * 3 - run.padding) for run in self.runs]


def _uniform_lines(lines: bytes) -> tuple[int, bytes] | None:
    """(bytes of line ends, the line end) when ``_FULL_LINES`` would match all of ``lines``
    (whole lines) and every line has the same length, tested with one C pass: between the
    alphabet there is nothing but line ends, each at the same column (so no line is empty
    and no CR stands alone). None otherwise."""
    ends = lines.translate(None, _ALPHABET)
    eol = b"\r\n" if ends.startswith(b"\r") else b"\n"
    count = len(ends) // len(eol)
    if not count or len(lines) % count or ends != eol * count:
        return None
    width = len(lines) // count
    if width <= len(eol) or any(lines[width - len(eol) + i::width] != eol[i:i + 1] * count for i in range(len(eol))):
        return None
    return len(ends), eol


def claim_bodies(message: Message, feed: ElidingFeed) -> dict[int, Body] | None:
    """``{id(part): Body}`` for the parts whose whole body is one run, or None when some
    run is anywhere else (then the message must be parsed again, the plain way)."""
    if not feed.runs:
        return {}
    bodies = feed.bodies()
    found: dict[int, Body] = {}
    named = re.compile(re.escape(feed.token) + r"(\d+)[\r\n]*")
    for part in message.walk():
        try:
            payload = part.get_payload()
        except (LookupError, UnicodeError):  # a text part in a charset that cannot decode (idna): no run
            continue
        if not isinstance(payload, str) or part.get_content_maintype() in ("multipart", "message"):
            continue
        match = named.fullmatch(payload)
        if match is None or str(part.get("content-transfer-encoding", "")).lower() != "base64":
            continue
        index = int(match.group(1))
        if index < len(bodies):
            found[id(part)] = bodies[index]
    return found if len(found) == len(bodies) else None
