"""A received message that lives in a file rather than in memory: SMTP data past the spool's
memory threshold (``ingress/spool.py``). It is read in pieces by offset, from any thread, and
never whole: authentication reads its header section and streams its body
(``mail/dkim_body.py``), and the inbox streams it into the blob store behind the trace lines.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

PIECE = 1024 * 1024  # octets read from the file at a time


def read_at(fd: int, offset: int, count: int, what: str) -> bytes:
    """Exactly ``count`` octets of the file ``fd`` from ``offset`` (``os.pread``: any thread may
    read at once). Raises OSError, naming ``what``, when the file ends before them: it was cut
    after it was measured."""
    pieces = []
    while count > 0:
        piece = os.pread(fd, count, offset)
        if not piece:
            raise OSError(f"{what} ended {count} octets early")
        pieces.append(piece)
        offset += len(piece)
        count -= len(piece)
    return b"".join(pieces) if len(pieces) != 1 else pieces[0]


class _Descriptor:
    """An open file descriptor, closed when the last holder lets go of it: a session that goes
    away cannot close it under a thread still reading (a closed number may be reused at once by
    another file)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class SpooledMessage:
    """The message data (dot-stuffing undone) in octets ``[0, size)`` of a file of its own, with
    ``head`` (trace lines) in front of it when stored.

    ``header``: the header section as the spool read it, each line with its CRLF, without the
    empty line. ``body_at``: where the body starts in the data (after the empty line), or None
    when the message has no body (it is then all header, so no bigger than the header limit).
    Thread-safe: every read names its offset (``os.pread``)."""

    def __init__(self, descriptor: _Descriptor, size: int, header: bytes, body_at: int | None,
                 head: bytes = b"") -> None:
        self._descriptor = descriptor
        self.size = size
        self.header = header
        self.body_at = body_at
        self.head = head

    @classmethod
    def of_file(cls, file: BinaryIO, size: int, header: bytes, body_at: int | None) -> SpooledMessage:
        """Over a flushed ``file`` holding the data, through a descriptor of its own: the caller
        may close ``file`` whenever it likes."""
        return cls(_Descriptor(os.dup(file.fileno())), size, header, body_at)

    def __len__(self) -> int:
        return len(self.head) + self.size

    def with_head(self, head: bytes) -> SpooledMessage:
        """The same data with ``head`` in front, sharing the file."""
        return SpooledMessage(self._descriptor, self.size, self.header, self.body_at, head)

    def read(self, offset: int, count: int) -> bytes:
        """Up to ``count`` octets of the data from ``offset`` (fewer only at its end)."""
        return read_at(self._descriptor.fd, offset, max(0, min(count, self.size - offset)), "the spool file")

    def pieces(self, start: int = 0, piece: int = PIECE) -> Iterator[bytes]:
        """The data from ``start`` to its end, ``piece`` octets at a time."""
        for offset in range(start, self.size, piece):
            yield self.read(offset, piece)

    def stream(self) -> BinaryIO:
        """A binary file reading ``head`` then the data, for ``BlobStore.put_stream``."""
        return io.BufferedReader(_Reader(self), PIECE)

    def close(self) -> None:
        """Close the file now (it also closes once no one holds this message)."""
        self._descriptor.close()


class _Reader(io.RawIOBase):
    def __init__(self, message: SpooledMessage) -> None:
        self._message = message
        self._at = 0  # in head + data

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        head = self._message.head
        if self._at < len(head):
            count = min(len(target), len(head) - self._at)
            target[:count] = head[self._at:self._at + count]
        else:
            piece = self._message.read(self._at - len(head), len(target))
            count = len(piece)
            target[:count] = piece
        self._at += count
        return count
