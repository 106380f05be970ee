"""Message data as it arrives, and how much of it may sit in memory at once.

A session never gathers a message in a list of lines the way aiosmtpd does: each line goes
into a ``MessageSpool`` as it is read. The spool keeps the data in memory while the shared
``InflightBudget`` lends it room, and moves it to an anonymous file in the spool directory as
soon as the budget has none (the file is unlinked from the start, so a crash leaves nothing
behind). Small mail, the usual case, never touches the disk; a flood of big messages costs disk
space, not memory.

After the final dot the message is needed whole once, to authenticate and store it. A message
on disk is read back only when the budget can lend its full size; sessions wait their turn in
arrival order (a message bigger than the whole budget goes alone), so the bytes of message
data held in memory over all sessions stay near the budget whatever clients send at once.

The line and header limits of ``SessionLimits`` are checked here, line by line, so the data
never has to be scanned again.
"""

from __future__ import annotations

import asyncio
import io
import re
import tempfile
from collections import deque
from pathlib import Path
from typing import BinaryIO

from waypost.ingress.limits import SessionLimits, line_too_long

# how much of the budget a spool in memory takes at a time
LOAN = 64 * 1024
_LINE_END = re.compile(rb"[\r\n]")


class InflightBudget:
    """Bytes of message data held in memory at once, over every session sharing it. Used only on
    the listeners' event loop (``serve`` runs both listeners on one)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("an in-flight budget needs at least one byte")
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def try_take(self, size: int) -> bool:
        """Take ``size`` bytes if they are free now and nobody is waiting for room."""
        if self._waiting or self.used + size > self.limit:
            return False
        self._take(size)
        return True

    async def take(self, size: int) -> None:
        """Wait until ``size`` bytes are free (or, for more than the whole budget, until it is
        all free), behind those already waiting; then take them."""
        if not self._waiting and self._fits(size):
            self._take(size)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((size, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted just as the session went away
                self.give(size)
            elif (size, turn) in self._waiting:
                self._waiting.remove((size, turn))
                self._wake()  # those behind it may fit now
            raise

    def give(self, size: int) -> None:
        self.used -= size
        assert self.used >= 0, "gave back more than was taken"
        self._wake()

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    def _take(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            size, turn = self._waiting.popleft()
            if not turn.cancelled():
                self._take(size)
                turn.set_result(None)


class MessageSpool:
    """One message's data (dot-stuffing undone) while it arrives, with what the limits found.
    ``close`` gives back what it holds of the budget; call it once the message is done with."""

    def __init__(self, budget: InflightBudget, limits: SessionLimits, directory: Path | None = None) -> None:
        self.budget = budget
        self.limits = limits
        self.directory = directory
        self.size = 0  # octets of message data
        self.held = 0  # octets of the budget this spool holds
        self._memory: io.BytesIO | None = io.BytesIO()
        self._file: BinaryIO | None = None
        self._header = bytearray()
        self._in_header = True
        self._fields = 0
        self._long_line = False
        self._header_too_large = False
        self._closed = False

    # -- while the data arrives --------------------------------------------------------

    def write(self, line: bytes) -> None:
        """One line as read, its CRLF included (a bare CR or LF inside it is kept as sent)."""
        self.size += len(line)
        if len(line) > self.limits.max_line_length and not self._long_line:
            self._long_line = _longest_run(line) > self.limits.max_line_length - 2
        if self._in_header:
            self._read_header(line)
        if self._file is not None:
            self._file.write(line)
            return
        assert self._memory is not None
        if self.size > self.held and not self._borrow():
            self._to_disk()
            assert self._file is not None
            self._file.write(line)
            return
        self._memory.write(line)

    def _read_header(self, line: bytes) -> None:
        if line == b"\r\n":  # the empty line ending the header section (RFC 5322 §2.1)
            self._in_header = False
            return
        if line[:1] not in (b" ", b"\t"):  # a line starting with white space continues a field
            self._fields += 1
        if len(self._header) + len(line) > self.limits.max_header_bytes:
            self._header_too_large = True
            self._in_header = False
            return
        self._header += line

    def _borrow(self) -> bool:
        loan = max(LOAN, self.size - self.held)
        if not self.budget.try_take(loan):
            return False
        self.held += loan
        return True

    def _to_disk(self) -> None:
        assert self._memory is not None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        # unlinked at once where the platform allows: nothing is left after a crash
        self._file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115  (closed by close())
        self._file.write(self._memory.getbuffer())
        self._memory = None
        self._give_back()

    # -- after the final dot ---------------------------------------------------------------

    def refusal(self) -> str | None:
        """The reply refusing the data for a limit it broke, or None."""
        if self._long_line:
            return line_too_long(self.limits.max_line_length)
        if self._header_too_large:
            return self.limits.header_too_large()
        if self._fields > self.limits.max_header_count:
            return self.limits.too_many_fields()
        return None

    @property
    def header(self) -> bytes:
        """The header section with its line ends, without the empty line (the whole message
        when it has no body)."""
        return bytes(self._header)

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    async def load(self) -> bytes:
        """The whole message, in memory: for data on disk, once the budget lends its size (the
        loan lasts until ``close``)."""
        if self._file is not None:
            await self.budget.take(self.size)
            self.held = self.size
            self._file.seek(0)
            return self._file.read()
        assert self._memory is not None
        return self._memory.getvalue()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()
        self._memory = None
        self._give_back()

    def _give_back(self) -> None:
        if self.held:
            self.budget.give(self.held)
            self.held = 0


def _longest_run(line: bytes) -> int:
    """The longest stretch of ``line`` without CR or LF, counting the CRLF that ends it as two:
    a bare CR or LF ends a line for the limit too, as it does for most MTAs."""
    parts = _LINE_END.split(line[:-2] if line.endswith(b"\r\n") else line)
    return max(map(len, parts))


def spool_directory(data_dir: Path) -> Path:
    return data_dir / "spool"

