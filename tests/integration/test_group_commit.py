"""Messages stored at the same moment share one commit, each waits for its own row, and a bad
row costs only its own message; the inbox writes a group's rows and jobs with one statement
each and syncs its blobs' folder once, before the commit. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tests.conftest import wait_until
from waypost.pipeline.inbox import GroupCommit
from waypost.store.db import create_engine

rows = sa.Table("group_commit_rows", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("tx", sa.Integer, nullable=False))


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    rows.drop(engine, checkfirst=True)
    rows.create(engine)
    yield engine
    rows.drop(engine, checkfirst=True)
    engine.dispose()


class Recorder:
    """Writes rows, numbering the transactions; the first write waits until released, so the
    rows arriving meanwhile queue up behind the first commit."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[object] = []
        self.first = True
        self._lock = threading.Lock()

    def write(self, conn: Connection, batch: list[dict[str, Any]]) -> None:
        if self.first:
            self.first = False
            self.release.wait(30)
        for row in batch:
            conn.execute(rows.insert().values(id=row["id"], tx=self._number(conn.get_transaction())))

    def _number(self, transaction: object) -> int:
        with self._lock:  # the transactions are kept, so no two share an id()
            for number, seen in enumerate(self.seen, start=1):
                if seen is transaction:
                    return number
            self.seen.append(transaction)
            return len(self.seen)


def commit_all(group: GroupCommit[dict[str, Any]], ids: list[int],
               recorder: Recorder) -> dict[int, BaseException | None]:
    outcome: dict[int, BaseException | None] = {}

    def one(row_id: int) -> None:
        try:
            group.commit({"id": row_id})
            outcome[row_id] = None
        except BaseException as err:  # noqa: BLE001  (what each caller hears is the result)
            outcome[row_id] = err

    first = threading.Thread(target=one, args=(ids[0],))
    first.start()
    wait_until(lambda: group._committing, message="the first commit under way")
    others = [threading.Thread(target=one, args=(row_id,)) for row_id in ids[1:]]
    for thread in others:
        thread.start()
    wait_until(lambda: len(group._waiting) == len(ids) - 1, message="the others waiting for it")
    recorder.release.set()
    for thread in [first, *others]:
        thread.join(30)
    return outcome


def test_rows_arriving_during_a_commit_share_the_next_one(engine: sa.Engine) -> None:
    recorder = Recorder()
    group = GroupCommit(engine, recorder.write)
    outcome = commit_all(group, list(range(1, 9)), recorder)
    assert outcome == {row_id: None for row_id in range(1, 9)}
    with engine.connect() as conn:
        committed = dict(conn.execute(sa.select(rows.c.id, rows.c.tx)).all())
    assert sorted(committed) == list(range(1, 9))
    assert committed[1] == 1 and {committed[row_id] for row_id in range(2, 9)} == {2}  # one commit for seven


def test_a_bad_row_fails_alone(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(rows.insert().values(id=5, tx=0))  # row 5 will collide
    recorder = Recorder()
    group = GroupCommit(engine, recorder.write)
    outcome = commit_all(group, list(range(1, 9)), recorder)
    assert isinstance(outcome.pop(5), IntegrityError)
    assert outcome == {row_id: None for row_id in (1, 2, 3, 4, 6, 7, 8)}
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(rows.c.id)).scalars()) == list(range(1, 9))


def test_prepare_runs_before_the_transaction_and_committed_once_after(engine: sa.Engine) -> None:
    recorder, seen = Recorder(), list[tuple[object, ...]]()

    def prepare(batch: list[dict[str, Any]]) -> None:
        ids = sorted(row["id"] for row in batch)
        with engine.connect() as conn:  # outside the transaction: nothing of the batch is there yet
            there = conn.execute(sa.select(sa.func.count()).select_from(rows).where(rows.c.id.in_(ids))).scalar()
        seen.append(("prepare", ids, there))

    def committed() -> None:
        with engine.connect() as conn:
            seen.append(("committed", sorted(conn.execute(sa.select(rows.c.id)).scalars())))

    group = GroupCommit(engine, recorder.write, prepare=prepare, committed=committed)
    outcome = commit_all(group, [1, 2, 3, 4], recorder)
    assert outcome == {1: None, 2: None, 3: None, 4: None}
    assert seen == [("prepare", [1], 0), ("committed", [1]), ("prepare", [2, 3, 4], 0), ("committed", [1, 2, 3, 4])]


def test_a_failing_prepare_costs_only_its_own_row(engine: sa.Engine) -> None:
    recorder = Recorder()

    def prepare(batch: list[dict[str, Any]]) -> None:
        if any(row["id"] == 3 for row in batch):
            raise OSError(5, "Input/output error (injected)")

    group = GroupCommit(engine, recorder.write, prepare=prepare)
    outcome = commit_all(group, [1, 2, 3, 4], recorder)
    assert isinstance(outcome.pop(3), OSError)
    assert outcome == {1: None, 2: None, 4: None}
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(rows.c.id)).scalars()) == [1, 2, 4]


def test_what_committed_raises_leaves_the_rows_committed(engine: sa.Engine) -> None:
    def committed() -> None:
        raise RuntimeError("a doorbell that fails (injected)")

    recorder = Recorder()
    recorder.first = False  # nothing to wait for: one row alone
    group = GroupCommit(engine, recorder.write, committed=committed)
    group.commit({"id": 1})  # no error: the row is committed
    with engine.connect() as conn:
        assert list(conn.execute(sa.select(rows.c.id)).scalars()) == [1]
