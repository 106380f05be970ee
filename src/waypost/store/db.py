"""Database port: one SQLAlchemy engine for SQLite (embedded) or PostgreSQL (scale-out).

SQLite runs in WAL mode and every transaction starts with ``BEGIN IMMEDIATE``: a deferred
transaction that reads and then writes can fail at once with SQLITE_BUSY when another writer
committed in between, whereas an immediate one waits out ``busy_timeout`` like PostgreSQL's
row locks would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return sa.create_engine(url, pool_pre_ping=True, future=True)


def _sqlite_engine(url: str) -> Engine:
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable before acknowledged
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_postgres(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


def conflict_insert(conn: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` in the connection's own dialect, which can say ``ON CONFLICT``
    (both databases spell it the same way: ``on_conflict_do_nothing`` / ``_do_update``)."""
    return postgresql.insert(table) if is_postgres(conn) else sqlite.insert(table)


def inserted_id(result: CursorResult[Any]) -> int:
    """The integer primary key an INSERT of one row created."""
    key = result.inserted_primary_key
    if key is None:
        raise ValueError("the statement inserted no row with a primary key")
    return int(key[0])


def ping(engine: Engine) -> None:
    """Return when the database answers a query; raise SQLAlchemy's error when it does not."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


IN_CHUNK = 500  # values per IN (...) list: well under every driver's bound-parameter limit


def in_chunks(items: Sequence[T]) -> Iterator[list[T]]:
    """``items`` in slices small enough for one ``IN (...)`` each."""
    for start in range(0, len(items), IN_CHUNK):
        yield list(items[start:start + IN_CHUNK])
