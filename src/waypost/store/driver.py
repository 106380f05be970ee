"""Core statements run on the database driver's own cursor, inside the caller's transaction.

SQLAlchemy's work around each execution (the compiled-cache lookup, a parameter dictionary
per row, result metadata) costs about 12 µs a statement and about 5 µs a row of an
``executemany``: more than SQLite itself spends on a point lookup on a unique index, and more
than the insert of a batch of feedback events. ``DriverStatement`` compiles a statement once
per dialect, keeps each column's bind and result processors (so values go in and come out as
SQLAlchemy would convert them: ``UTCDateTime`` refuses a naive time either way), and hands the
rows to the driver in one call.

Only for the hot paths that measured it (feedback batches, the outbox's suppression check).
It runs only on a connection already in a transaction (``require_transaction``), so SQLite's
``BEGIN IMMEDIATE`` has been issued and the work commits or rolls back with the caller's; the
driver's errors are raised as SQLAlchemy's (``sqlalchemy.exc.DBAPIError`` and subclasses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.store.db import IN_CHUNK, in_chunks

Processor = Callable[[Any], Any]
Statement = sa.Select[Any] | sa.Insert | sa.Update | sa.Delete


class NoTransactionError(RuntimeError):
    """A ``DriverStatement`` was run on a connection outside a transaction."""


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # parameter names, in the order of the placeholders
    positional: bool  # qmark/format (a tuple per row) or pyformat/named (a dict per row)
    binds: tuple[tuple[int, Processor], ...]  # (index in names, converter) of the values to convert
    results: tuple[Processor | None, ...]  # per result column; () when the statement returns none
    # per placeholder, the index of its value in ``columns`` (None: the statement has no columns)
    order: tuple[int, ...] | None


class DriverStatement:
    """``statement`` compiled once per dialect and run with the driver's ``execute`` or
    ``executemany``. For an INSERT, ``columns`` names the columns every row gives (no
    RETURNING, no Python-side defaults: the rows must hold every value they need)."""

    def __init__(self, statement: Statement, columns: Sequence[str] | None = None) -> None:
        if columns is not None and isinstance(statement, sa.Insert):
            statement = statement.inline()
        self.statement: Statement = statement
        self.columns = list(columns) if columns is not None else None
        self._by_dialect: dict[tuple[type, str], _Compiled] = {}

    def insert_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per row, in one driver ``executemany``."""
        if not rows:
            return
        compiled = self._compiled(conn)
        params = self._bound(compiled, rows)
        with self._driver_cursor(conn, compiled, params) as cursor:
            cursor.executemany(compiled.sql, params)

    def insert_values(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """``insert_many`` with each row given as its values in ``columns`` order: no dictionary
        to build and read back per row (a feedback batch inserts hundreds)."""
        if not rows:
            return
        compiled = self._compiled(conn)
        order = compiled.order
        if order is None:
            raise TypeError("insert_values needs a statement built with its columns")
        width = len(self.columns or ())
        for values in rows:
            if len(values) != width:
                raise ValueError(f"a row of {len(values)} values for the {width} columns {self.columns}")
        if order == tuple(range(width)):
            lists = [list(values) for values in rows]
        else:
            lists = [[values[index] for index in order] for values in rows]
        params = self._bound_lists(compiled, lists)
        with self._driver_cursor(conn, compiled, params) as cursor:
            cursor.executemany(compiled.sql, params)

    def run(self, conn: Connection, params: Mapping[str, Any]) -> None:
        """Run the statement once, reading nothing back (a DELETE, an UPDATE)."""
        compiled = self._compiled(conn)
        (bound,) = self._bound(compiled, [params])
        with self._driver_cursor(conn, compiled, bound) as cursor:
            cursor.execute(compiled.sql, bound)

    def fetch(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run the statement once; its rows as tuples, converted as SQLAlchemy converts them."""
        compiled = self._compiled(conn)
        (bound,) = self._bound(compiled, [params])
        with self._driver_cursor(conn, compiled, bound) as cursor:
            cursor.execute(compiled.sql, bound)
            rows = cursor.fetchall()
        results = compiled.results
        if not any(results):
            return [tuple(row) for row in rows]
        return [tuple(value if convert is None or value is None else convert(value)
                      for convert, value in zip(results, row, strict=True)) for row in rows]

    # -- inside --------------------------------------------------------------------------

    def _compiled(self, conn: Connection) -> _Compiled:
        if not conn.in_transaction():
            raise NoTransactionError("a driver statement runs only inside the caller's transaction")
        dialect = conn.dialect
        key = (type(dialect), dialect.paramstyle)
        found = self._by_dialect.get(key)
        if found is None:
            found = self._by_dialect[key] = self._compile(dialect)
        return found

    def _compile(self, dialect: sa.Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect, column_keys=self.columns)
        positional = bool(compiled.positional)
        names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.binds)
        binds = []
        for index, name in enumerate(names):
            convert = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if convert is not None:
                binds.append((index, convert))
        columns = getattr(self.statement, "selected_columns", None)
        results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                        for column in columns) if columns is not None else ()
        order = None
        if self.columns is not None and set(names) <= set(self.columns):
            order = tuple(self.columns.index(name) for name in names)
        return _Compiled(compiled.string, names, positional, tuple(binds), results, order)

    @staticmethod
    def _bound(compiled: _Compiled, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The rows' parameters in the driver's style. A value its column's type refuses raises
        ``StatementError`` (as SQLAlchemy's own execution does), a missing one ``KeyError``."""
        names = compiled.names
        return DriverStatement._bound_lists(compiled, ([values[name] for name in names] for values in rows))

    @staticmethod
    def _bound_lists(compiled: _Compiled, rows: Iterable[list[Any]]) -> list[Any]:
        """``_bound`` for rows given as lists of their values in placeholder order (changed in place)."""
        names, binds, bound = compiled.names, compiled.binds, []
        # the last value converted per column, and what it became: a batch's rows share their times
        last: list[tuple[Any, Any]] = [(None, None)] * len(binds)
        try:
            for row in rows:
                for slot, (index, convert) in enumerate(binds):
                    value = row[index]
                    if value is None:
                        continue
                    before, after = last[slot]
                    if value is not before:
                        after = convert(value)
                        last[slot] = (value, after)
                    row[index] = after
                bound.append(tuple(row) if compiled.positional else dict(zip(names, row, strict=True)))
        except (ValueError, TypeError) as err:
            raise sa.exc.StatementError(f"({type(err).__name__}) {err}", compiled.sql, None, err) from err
        return bound

    @staticmethod
    @contextmanager
    def _driver_cursor(conn: Connection, compiled: _Compiled, params: Any) -> Iterator[Any]:
        dbapi_connection = conn.connection.dbapi_connection
        assert dbapi_connection is not None
        cursor = dbapi_connection.cursor()
        try:
            yield cursor
        except conn.dialect.loaded_dbapi.Error as err:
            invalid = conn.dialect.is_disconnect(err, dbapi_connection, cursor)
            if invalid:
                conn.invalidate(err)
            raise sa.exc.DBAPIError.instance(compiled.sql, params, err, conn.dialect.loaded_dbapi.Error,
                                             connection_invalidated=invalid, dialect=conn.dialect) from err
        finally:
            cursor.close()


EXACT_UP_TO = 16  # IN lists up to this long get a statement of their own length


class DriverInList:
    """A statement whose one ``IN (...)`` list takes a batch's values (dedupe keys, addresses),
    run on the driver. An expanding parameter makes SQLAlchemy render and bind the list anew
    on every execution, which cost more than the query; here the statement is built with a
    fixed number of parameters, compiled once per dialect: one per length up to
    ``EXACT_UP_TO`` (an SQS receive's), longer lists padded up to a power of two (at most
    ``IN_CHUNK``) with their last value repeated, which no ``IN`` reads differently. (Padding
    the short ones too made PostgreSQL's planner pick a sequential scan over a small table
    where the list's own length got the index.) ``build`` makes the statement from the condition ``column IN
    (...)``, whose parameters take ``column``'s type (PostgreSQL is told their type, as
    SQLAlchemy's own execution tells it; untyped, its plans compare them row by row)."""

    def __init__(self, column: sa.ColumnElement[Any], build: Callable[[sa.ColumnElement[bool]], Statement]) -> None:
        self.column = column
        self.build = build
        self._by_size: dict[int, tuple[DriverStatement, tuple[str, ...]]] = {}

    def fetch(self, conn: Connection, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows for all of ``values`` (a statement per ``IN_CHUNK`` of them), as tuples."""
        rows: list[tuple[Any, ...]] = []
        for statement, params in self._chunks(values):
            if conn.in_transaction():
                rows += statement.fetch(conn, params)
            else:  # a driver statement runs only in a transaction: let SQLAlchemy begin one, as it would
                rows += [tuple(row) for row in conn.execute(statement.statement, params)]
        return rows

    def run(self, conn: Connection, values: Sequence[Any]) -> None:
        """Run the statement for all of ``values`` (a DELETE), reading nothing back."""
        for statement, params in self._chunks(values):
            if conn.in_transaction():
                statement.run(conn, params)
            else:
                conn.execute(statement.statement, params)

    def _chunks(self, values: Sequence[Any]) -> Iterator[tuple[DriverStatement, dict[str, Any]]]:
        for chunk in in_chunks(values):
            size = len(chunk) if len(chunk) <= EXACT_UP_TO else min(1 << (len(chunk) - 1).bit_length(), IN_CHUNK)
            found = self._by_size.get(size)
            if found is None:
                names = tuple(f"v{i}" for i in range(size))
                among = self.column.in_([sa.bindparam(name, type_=self.column.type) for name in names])
                found = self._by_size[size] = (DriverStatement(self.build(among)), names)
            statement, names = found
            padded = [*chunk, *[chunk[-1]] * (size - len(chunk))]
            yield statement, dict(zip(names, padded, strict=True))
