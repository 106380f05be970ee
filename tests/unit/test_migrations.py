"""The Alembic migrations build exactly the schema ``waypost.store.models`` describes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from waypost.store import migrate, models
from waypost.store.db import create_engine


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh' / 'waypost.sqlite3'}")
    yield engine
    engine.dispose()


@pytest.fixture
def any_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), models.metadata))


def test_fresh_sqlite_file_has_no_revision(sqlite_engine: Engine) -> None:
    assert migrate.current_revision(sqlite_engine) is None
    assert migrate.head_revision() is not None


def test_models_and_migrations_agree_on_fresh_sqlite(sqlite_engine: Engine) -> None:
    migrate.upgrade(sqlite_engine)

    assert schema_differences(sqlite_engine) == []
    assert migrate.current_revision(sqlite_engine) == migrate.head_revision()


def test_models_and_migrations_agree(any_engine: Engine) -> None:
    """On SQLite and PostgreSQL (the ``database_url`` fixture runs both)."""
    migrate.upgrade(any_engine)

    assert schema_differences(any_engine) == []
    assert migrate.current_revision(any_engine) == migrate.head_revision()
    with any_engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert set(models.metadata.tables) <= tables


def test_upgrade_twice_is_a_no_op(sqlite_engine: Engine) -> None:
    migrate.upgrade(sqlite_engine)
    migrate.upgrade(sqlite_engine)

    assert migrate.current_revision(sqlite_engine) == migrate.head_revision()
    assert schema_differences(sqlite_engine) == []


def test_comparison_would_notice_a_missing_table(sqlite_engine: Engine) -> None:
    # guard against a vacuous pass: an unmigrated database must show every table missing
    differences = schema_differences(sqlite_engine)

    added = {diff[1].name for diff in differences if isinstance(diff, tuple) and diff[0] == "add_table"}
    assert added == set(models.metadata.tables)
