"""Units of work for the edges (web, CLI): one transaction shared by several domain
operations (an action and its audit entry), without the edges knowing the database library.

A ``Transaction`` is opaque to whoever holds it: it is only handed on to domain operations
that take one (their ``conn`` parameter). ``Database`` is the engine the runtime built.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:  # names only: a command that never opens the database need not load SQLAlchemy
    from sqlalchemy.engine import Connection, Engine

Database: TypeAlias = "Engine"
Transaction: TypeAlias = "Connection"


def transaction(database: Database) -> AbstractContextManager[Transaction]:
    """A transaction: everything done inside commits together when the block ends, or none
    of it when the block raises."""
    return database.begin()


def reading(database: Database) -> AbstractContextManager[Transaction]:
    """A connection for reads; nothing done inside is committed."""
    return database.connect()


def joined(database: Database, conn: Transaction | None) -> AbstractContextManager[Transaction]:
    """The caller's transaction when it gave one (its commit decides), else a new one."""
    return nullcontext(conn) if conn is not None else transaction(database)
