"""The spool that receives message data and the budget that bounds what of it is in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.loops import run_apart, until
from waypost.ingress.limits import SessionLimits
from waypost.ingress.spool import (
    LOAN,
    TOO_MUCH_DATA,
    WIRE_LINE_TOO_LONG,
    InflightBudget,
    MessageSpool,
    WireData,
    read_data,
)


def lines(count: int, width: int = 76) -> list[bytes]:
    return [(b"%06d" % n).ljust(width - 2, b"x") + b"\r\n" for n in range(count)]


def message(body_lines: int) -> list[bytes]:
    return [b"From: ann@example.org\r\n", b"Subject: big\r\n", b"\r\n", *lines(body_lines)]


def spooled(data: list[bytes], budget: InflightBudget, directory: Path | None = None,
            limits: SessionLimits | None = None) -> MessageSpool:
    spool = MessageSpool(budget, limits or SessionLimits(), directory)
    for line in data:
        spool.write(line)
    return spool


def test_small_mail_stays_in_memory_and_holds_part_of_the_budget(tmp_path: Path) -> None:
    budget = InflightBudget(1024 * 1024)
    data = message(10)
    spool = spooled(data, budget, tmp_path)
    assert not spool.on_disk and not list(tmp_path.iterdir())
    assert budget.used == spool.held >= spool.size == sum(map(len, data))
    assert spool.load() == b"".join(data)
    spool.close()
    assert budget.used == 0


def test_data_moves_to_disk_when_the_budget_has_no_room_and_nothing_stays_behind(tmp_path: Path) -> None:
    budget = InflightBudget(LOAN * 2)
    data = message(20_000)  # about 1.5 MB, far over the budget
    spool = spooled(data, budget, tmp_path)
    assert spool.on_disk and spool.held == 0 and budget.used == 0
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # the file has no name to leave behind

    assert b"".join(spool.spooled().pieces(piece=4096)) == b"".join(data)  # read back in pieces, never whole
    assert budget.used == 0
    assert spool.header == b"From: ann@example.org\r\nSubject: big\r\n"
    spool.close()
    assert budget.used == 0


def test_the_limits_are_read_while_the_data_arrives() -> None:
    limits = SessionLimits(max_line_length=1000, max_header_bytes=2048, max_header_count=10)
    budget = InflightBudget(1024 * 1024)

    def refusal(data: list[bytes]) -> str | None:
        spool = spooled(data, budget, limits=limits)
        try:
            return spool.refusal()
        finally:
            spool.close()

    ok = [b"Subject: x\r\n", b"\r\n", b"a" * 998 + b"\r\n"]  # 1000 octets with CRLF: at the limit
    assert refusal(ok) is None
    assert (refusal([*ok, b"a" * 999 + b"\r\n"]) or "").startswith("500 5.5.2")  # one octet more
    # a bare LF ends a line too: two runs of 600 are two short lines
    assert refusal([*ok, b"a" * 600 + b"\n" + b"b" * 600 + b"\r\n"]) is None
    assert (refusal([b"X-Pad: " + b"p" * 990 + b"\r\n"] * 3 + [b"\r\n"]) or "").startswith("552 5.3.4 Header section")
    fields = [b"X-%d: v\r\n" % n for n in range(11)]
    assert (refusal([*fields, b"\r\n"]) or "").startswith("552 5.3.4 Too many header fields")
    folded = [b"X-Long: v\r\n", *[b" continued\r\n"] * 20, b"\r\n"]  # one field, many lines
    assert refusal(folded) is None
    assert budget.used == 0


def test_a_message_without_a_body_is_all_header() -> None:
    budget = InflightBudget(1024 * 1024)
    spool = spooled([b"From: ann@example.org\r\n", b"Subject: no body\r\n"], budget)
    assert spool.header == b"From: ann@example.org\r\nSubject: no body\r\n" and spool.refusal() is None
    spool.close()


def test_the_budget_serves_in_arrival_order_and_lets_a_giant_through_alone() -> None:
    async def scenario() -> list[str]:
        budget = InflightBudget(100)
        order: list[str] = []
        await budget.take(60)

        async def wants(name: str, size: int) -> None:
            await budget.take(size)
            order.append(name)

        first = asyncio.create_task(wants("giant", 500))  # more than the whole budget
        await until(lambda: len(budget._waiting) == 1, what="the giant waiting")
        second = asyncio.create_task(wants("small", 10))  # would fit now, but waits its turn
        await until(lambda: len(budget._waiting) == 2, what="the small one waiting behind it")
        assert order == [] and not budget.try_take(1)  # nobody jumps the queue
        budget.give(60)
        await first
        assert order == ["giant"] and budget.used == 500
        # the small one waits until the giant is done
        assert not second.done() and [size for size, _ in budget._waiting] == [10]
        budget.give(500)
        await second
        assert budget.used == 10 and budget.peak == 500
        return order

    assert run_apart(scenario()) == ["giant", "small"]


def test_a_session_that_goes_away_while_waiting_leaves_the_budget_whole() -> None:
    async def scenario() -> InflightBudget:
        budget = InflightBudget(100)
        await budget.take(100)
        waiting = asyncio.create_task(budget.take(50))
        behind = asyncio.create_task(budget.take(50))
        await until(lambda: len(budget._waiting) == 2, what="both waiting")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        budget.give(100)
        await behind  # the one behind the cancelled waiter is served
        budget.give(50)
        return budget

    budget = run_apart(scenario())
    assert budget.used == 0 and not budget._waiting


def test_a_budget_needs_room_for_something() -> None:
    with pytest.raises(ValueError):
        InflightBudget(0)


# -- reading DATA off the wire in large pieces --------------------------------------------------

PIECES = [b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n.", b".\r\n", b"..", b"x" * 70]


def line_by_line(wire: bytes) -> tuple[bytes, bytes]:
    """What RFC 5321 §4.1.1.4 and §4.5.2 make of ``wire``, one CRLF line at a time (as aiosmtpd
    reads): the message data, and what follows the line holding a single dot."""
    data, position = [], 0
    while True:
        end = wire.index(b"\r\n", position) + 2
        line, position = wire[position:end], end
        if line == b".\r\n":
            return b"".join(data), wire[position:]
        data.append(line[1:] if line.startswith(b".") else line)


async def chunked(wire: bytes, pieces: list[int], reader_limit: int) -> tuple[bytes, bytes, str | None]:
    reader = asyncio.StreamReader(limit=reader_limit)
    spool = MessageSpool(InflightBudget(1 << 30), SessionLimits(max_header_bytes=1 << 20, max_header_count=1 << 20))
    wire_data = WireData(spool, size_limit=None, line_limit=1 << 20)
    reading = asyncio.create_task(read_data(reader, wire_data.feed))
    position = 0
    for size in pieces:  # the client's bytes arrive in pieces of any size
        reader.feed_data(wire[position:position + size])
        position += size
        # until the reader has taken what it can and waits for more (StreamReader's own waiter)
        await until(lambda: reading.done() or reader._waiter is not None, what="the reader waiting for data")
    reader.feed_data(wire[position:])
    reader.feed_eof()
    await reading
    try:
        return spool.load(), await reader.read(), wire_data.refusal
    finally:
        spool.close()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60), st.lists(st.integers(1, 9), max_size=12),
       st.sampled_from([16, 64, 10_001]))
def test_data_read_in_pieces_is_what_reading_line_by_line_gives(parts: list[bytes], pieces: list[int],
                                                                reader_limit: int) -> None:
    body = b"".join(parts)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    wire = body + b".\r\nQUIT\r\n"  # a pipelined command after the data stays unread
    expected, rest = line_by_line(wire)
    assert run_apart(chunked(wire, pieces, reader_limit)) == (expected, rest, None)


def test_an_empty_message_and_a_lone_dot_line_inside_a_line() -> None:
    assert run_apart(chunked(b".\r\nQUIT\r\n", [1, 1, 1], 16)) == (b"", b"QUIT\r\n", None)
    wire = b"a.\r\n..\r\n.x\r\n.\r\nNOOP\r\n"
    assert run_apart(chunked(wire, [2, 3], 16)) == (b"a.\r\n.\r\nx\r\n", b"NOOP\r\n", None)


def test_wire_limits_are_answered_after_the_final_dot_and_nothing_is_kept() -> None:
    budget = InflightBudget(1 << 20)
    spool = MessageSpool(budget, SessionLimits())
    too_much = WireData(spool, size_limit=100, line_limit=1000)
    too_much.feed(b"x" * 60 + b"\r\n")
    too_much.feed(b"y" * 60 + b"\r\n")
    assert too_much.refusal == TOO_MUCH_DATA and spool.size == 62
    long_line = WireData(MessageSpool(budget, SessionLimits()), size_limit=None, line_limit=1000)
    long_line.feed(b"z" * 999)
    assert long_line.refusal is None
    long_line.feed(b"z" * 2)
    assert long_line.refusal == WIRE_LINE_TOO_LONG
    spool.close()


def test_the_trace_goes_in_front_of_the_loaded_message_in_its_own_buffer(tmp_path: Path) -> None:
    data = message(20_000)  # about 1.5 MB
    spool = spooled(data, InflightBudget(1 << 30), tmp_path)
    assert not spool.on_disk
    loaded = spool.load()
    traced = spool.prepend(b"Received: from client\r\n")
    assert traced is loaded, "the header is put in front in place, not in a copy"
    assert traced == b"Received: from client\r\n" + b"".join(data)
    spool.close()


# -- a big message stays in its file -------------------------------------------------------------

def test_a_message_past_the_file_threshold_goes_to_disk_whatever_room_the_budget_has(tmp_path: Path) -> None:
    budget = InflightBudget(1 << 30)
    data = message(20_000)  # about 1.5 MB
    spool = MessageSpool(budget, SessionLimits(), tmp_path, file_over=1024 * 1024)
    for line in data:
        spool.write(line)
    assert spool.on_disk and budget.used == 0 and 1024 * 1024 <= budget.peak <= 1024 * 1024 + LOAN
    small = spooled(message(10), budget, tmp_path)
    assert not small.on_disk  # under the threshold and with room: memory, as before
    small.close()
    spool.close()


def test_a_spooled_message_is_read_in_pieces_and_outlives_the_spool(tmp_path: Path) -> None:
    data = message(20_000)
    spool = spooled(data, InflightBudget(LOAN), tmp_path)
    whole = b"".join(data)
    stored = spool.spooled().with_head(b"Received: from client\r\n")
    spool.close()  # the session is done with it; a thread storing the message is not
    assert (stored.header, stored.body_at) == (b"From: ann@example.org\r\nSubject: big\r\n", 39)
    assert whole[stored.body_at:].startswith(b"000000x")
    assert len(stored) == len(whole) + 23 and b"".join(stored.pieces(start=5, piece=4096)) == whole[5:]
    with stored.stream() as stream:
        assert stream.read() == b"Received: from client\r\n" + whole
    stored.close()
    with pytest.raises(OSError):
        stored.read(0, 10)


def test_a_spooled_message_without_a_body_says_so(tmp_path: Path) -> None:
    spool = MessageSpool(InflightBudget(LOAN), SessionLimits(), tmp_path, file_over=0)
    spool.write(b"From: ann@example.org\r\nSubject: no body\r\n")
    assert spool.spooled().body_at is None and spool.spooled().read(0, 1 << 20) == spool.header
    spool.close()
