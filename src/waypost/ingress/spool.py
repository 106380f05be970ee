"""Message data as it arrives, and how much of it may sit in memory at once.

A session never gathers a message in a list of lines the way aiosmtpd does: each line goes
into a ``MessageSpool`` as it is read. The spool keeps the data in memory while the shared
``InflightBudget`` lends it room and the message is no bigger than ``FILE_OVER``, and moves it
to an anonymous file in the spool directory as soon as the budget has none or the message
outgrows that (the file is unlinked from the start, so a crash leaves nothing behind). Small
mail, the usual case, never touches the disk; a big message or a flood of them costs disk
space, not memory.

After the final dot a message in memory is used in place (``load``, ``prepend``): authenticated
and stored. A message on disk stays there (``spooled``): authentication reads its header
section and streams its body, and the inbox streams it into the blob store behind the trace
lines, so it is never held whole in memory (``mail/spooled.py``). The bytes of message data in
memory over all sessions thus stay near the budget whatever clients send at once.

The line and header limits of ``SessionLimits`` are checked here, line by line, so the data
never has to be scanned again.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from waypost.ingress.limits import SessionLimits, line_too_long
from waypost.mail.spooled import SpooledMessage

# how much of the budget a spool in memory takes at a time
LOAN = 64 * 1024
# a message bigger than this goes to a file whatever the budget: kept whole in memory it would
# cost its size again in every copy authentication and storing make
FILE_OVER = 4 * 1024 * 1024


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

    def __init__(self, budget: InflightBudget, limits: SessionLimits, directory: Path | None = None,
                 file_over: int = FILE_OVER) -> None:
        self.budget = budget
        self.limits = limits
        self.directory = directory
        self.file_over = file_over
        self.size = 0  # octets of message data
        self.held = 0  # octets of the budget this spool holds
        # a bytearray: grown in place as data arrives, handed out by ``load`` without a copy, and
        # the trace header can be put in front of it in place (``prepend``)
        self._memory: bytearray | None = bytearray()
        self._file: BinaryIO | None = None
        self._header = bytearray()
        self._in_header = True
        self._fields = 0
        self._long_line = False
        self._header_too_large = False
        self._closed = False

    # -- while the data arrives --------------------------------------------------------

    def write(self, block: bytes) -> None:
        """Complete lines of message data, dot-stuffing undone, each with its CRLF (a bare CR or
        LF inside a line is kept as sent)."""
        self.size += len(block)
        if not self._long_line and len(block) > self.limits.max_line_length - 2:
            self._long_line = _long_line(self.limits.max_line_length).search(block) is not None
        if self._in_header:
            self._read_header(block)
        if self._file is not None:
            self._file.write(block)
            return
        assert self._memory is not None
        if self.size > self.file_over or (self.size > self.held and not self._borrow()):
            self._to_disk()
            assert self._file is not None
            self._file.write(block)
            return
        self._memory += block

    def _read_header(self, block: bytes) -> None:
        start = 0
        while self._in_header and start < len(block):
            end = block.find(b"\r\n", start)
            end = len(block) if end == -1 else end + 2
            line, start = block[start:end], end
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
        self._file.write(self._memory)
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

    def spooled(self) -> SpooledMessage:
        """The message on disk, to be read in pieces from any thread, through a descriptor of
        its own (``close`` may run while a thread still reads it)."""
        assert self._file is not None, "only a message on disk"
        self._file.flush()
        body_at = None if self._in_header else len(self._header) + 2
        return SpooledMessage.of_file(self._file, self.size, self.header, body_at)

    def load(self) -> bytearray:
        """The whole message held in memory, in one buffer, this spool's own (no copy is made):
        a message on disk is read in pieces with ``spooled`` instead, never whole. Put a header
        in front with ``prepend``, which moves the data in place."""
        assert self._file is None and self._memory is not None, "only a message in memory; on disk: spooled()"
        return self._memory

    def prepend(self, head: bytes) -> bytearray:
        """The loaded message with ``head`` in front, in the same buffer: a 40 MB message costs
        no second 40 MB for the Received and Authentication-Results lines."""
        assert self._memory is not None, "load() first"
        self._memory[0:0] = head
        return self._memory

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


# the end of message data (RFC 5321 §4.1.1.4): a line holding a single dot
END_OF_DATA = b"\r\n.\r\n"
# what aiosmtpd's own line reader answered for a line past its limit (GuardedSMTP rewrites it)
WIRE_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH_DATA = "552 Error: Too much mail data"


async def read_data(reader: asyncio.StreamReader, feed: Callable[[bytes], None]) -> None:
    """Read DATA's content up to its end marker in large pieces, passing on every byte before the
    final ".\r\n" (the CRLF before it ends the last line) as it arrives, still dot-stuffed.
    Whatever follows the marker (pipelined commands) stays in ``reader``. Raises
    asyncio.IncompleteReadError when the client goes away first.

    ``StreamReader.readuntil`` finds the marker within what it holds, and when it holds more
    than its limit without one it says how much can be taken safely (no marker can start in
    it). The one place it cannot see is a marker that starts in bytes already taken: at the
    very start of the data (a first line of ".") and after settling such a case. There the
    bytes are read one at a time until they cannot begin the marker."""
    matched = 2  # the data begins at a line start, as if a CRLF had just been read
    while True:
        if matched:
            matched, data = _step(matched, await reader.readexactly(1))
            if matched == len(END_OF_DATA):
                return
            if data:
                feed(data)
            continue
        try:
            chunk = await reader.readuntil(END_OF_DATA)
        except asyncio.LimitOverrunError as err:
            feed(await reader.read(err.consumed))
            continue
        feed(chunk[:-3])
        return


def _step(matched: int, byte: bytes) -> tuple[int, bytes]:
    """How much of END_OF_DATA the bytes read so far end with, after ``byte``, and which bytes are
    now known to be data. Only the "." and the CR after a CRLF are held back: the CRLF before
    the dot is data either way (the last line's end)."""
    if matched == 3:  # "\r\n." with the dot held
        return (4, b"") if byte == b"\r" else (0, b"." + byte)
    if matched == 4:  # "\r\n.\r" with ".\r" held
        if byte == b"\n":
            return 5, b""
        return (1 if byte == b"\r" else 0), b".\r" + byte
    if matched == 2 and byte == b".":
        return 3, b""
    if matched == 1 and byte == b"\n":
        return 2, byte
    return (1 if byte == b"\r" else 0), byte


class WireData:
    """Turns data as it comes off the wire (dot-stuffed, in pieces of any size) into complete
    lines with the transparency dots removed (RFC 5321 §4.5.2), for a ``MessageSpool``; past
    the size limit or in a line longer than the wire limit it keeps reading and keeps nothing."""

    def __init__(self, spool: MessageSpool, *, size_limit: int | None, line_limit: int) -> None:
        self.spool = spool
        self.size_limit = size_limit
        self.line_limit = line_limit  # octets of one line as sent, CRLF and a stuffed dot included
        self.received = 0
        self.refusal: str | None = None
        self._partial = b""  # the start of a line whose end has not arrived yet

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.refusal is None and self.size_limit and self.received > self.size_limit:
            self.refusal, self._partial = TOO_MUCH_DATA, b""
        if self.refusal is not None:
            return
        data = self._partial + chunk
        cut = data.rfind(b"\r\n") + 2  # 1 when there is no line end
        if cut == 1:
            self._partial = data
        else:
            self._partial = data[cut:]
            # lines start the block: a dot starting any line is a transparency dot
            self.spool.write((b"\r\n" + data[:cut]).replace(b"\r\n.", b"\r\n")[2:])
        if len(self._partial) > self.line_limit:
            self.refusal, self._partial = WIRE_LINE_TOO_LONG, b""


@lru_cache(maxsize=8)
def _long_line(limit: int) -> re.Pattern[bytes]:
    # a line start followed by limit-1 octets that are not a line end: with CRLF, over the
    # limit. Anchored at line starts (after a CR or LF) so the scan stays linear in the size.
    return re.compile(rb"(?:^|(?<=[\r\n]))[^\r\n]{%d}" % (limit - 1))


def spool_directory(data_dir: Path) -> Path:
    return data_dir / "spool"

