"""The Alembic migrations build exactly the schema ``waypost.store.models`` describes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
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


def test_downgrade_then_upgrade_again(any_engine: Engine) -> None:
    """Downgrades keep added columns (dropping one rebuilds a SQLite table); upgrading again
    must find them and carry on."""
    migrate.upgrade(any_engine)
    migrate.downgrade(any_engine, "0001")
    assert migrate.current_revision(any_engine) == "0001"

    migrate.upgrade(any_engine)

    assert migrate.current_revision(any_engine) == migrate.head_revision()
    assert schema_differences(any_engine) == []


def test_comparison_would_notice_a_missing_table(sqlite_engine: Engine) -> None:
    # guard against a vacuous pass: an unmigrated database must show every table missing
    differences = schema_differences(sqlite_engine)

    added = {diff[1].name for diff in differences if isinstance(diff, tuple) and diff[0] == "add_table"}
    assert added == set(models.metadata.tables)


def test_0002_gives_existing_journeys_a_reply_token_and_their_thread(any_engine: Engine) -> None:
    """Data made under 0001 (say, by an earlier demo) survives the upgrade and can be replied to."""
    migrate.upgrade(any_engine, "0001")
    now = datetime(2024, 7, 13, 20, 0, tzinfo=UTC)
    # the models' tables, with only columns that 0001 has: SQLAlchemy writes just those given
    inbound, journey_table, outbound = models.inbound_messages, models.journeys, models.outbound_messages
    with any_engine.begin() as conn:
        for number in (1, 2):
            message_id = f"{number:032x}"
            conn.execute(inbound.insert().values(
                id=message_id, received_at=now, rcpt_tos=["journeys@waypost.test"],
                blob_key=f"inbound/{message_id}.eml", size=10, ingress="smtp", status="processed",
                message_id_header=f"<trip-{number}@example.org>"))
            conn.execute(journey_table.insert().values(
                id=number, token=f"token-{number:020d}", title=f"Trip {number}", owner_address="ann@example.org",
                source_message_id=message_id, created_at=now, updated_at=now))
        conn.execute(models.photos.insert().values(
            journey_id=1, content_sha256="ab" * 32, public_id="photo-1", mail_position=0))
        conn.execute(outbound.insert().values(
            idempotency_key=f"journeys-reply-{1:032x}", stream="journeys", recipient="ann@example.org",
            envelope_sender="journeys@waypost.test", subject="Your journey", message_id_header="<reply-1@waypost.test>",
            raw=b"raw", state="sent", created_at=now))

    migrate.upgrade(any_engine)

    with any_engine.connect() as conn:
        tokens = conn.execute(sa.select(models.journeys.c.reply_token)).scalars().all()
        links = conn.execute(sa.select(models.journey_messages.c.journey_id, models.journey_messages.c.direction,
                                       models.journey_messages.c.message_id_header)
                             .order_by(models.journey_messages.c.journey_id,
                                       models.journey_messages.c.direction)).all()
    assert len(tokens) == 2 and len(set(tokens)) == 2 and all(len(token) >= 20 for token in tokens)
    assert [tuple(link) for link in links] == [
        (1, "in", "<trip-1@example.org>"), (1, "out", "<reply-1@waypost.test>"), (2, "in", "<trip-2@example.org>")]
    assert schema_differences(any_engine) == []
    with any_engine.connect() as conn:  # nothing cascaded away on the way
        assert conn.execute(sa.select(sa.func.count()).select_from(models.photos)).scalar() == 1


def test_0008_keeps_recorded_feedback_and_gives_it_no_reason(sqlite_engine: Engine) -> None:
    """Events recorded before 0008 stay as they were; their reason was never worked out (NULL)."""
    migrate.upgrade(sqlite_engine, "0007")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with sqlite_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO feedback_events (dedupe_key, kind, source, outcome, received_at, raw) "
                             "VALUES ('k1', 'bounce', 'dsn', 'suppressed', :at, '')"), {"at": now})

    migrate.upgrade(sqlite_engine, "0008")

    with sqlite_engine.connect() as conn:
        rows = conn.execute(sa.select(models.feedback_events.c.dedupe_key, models.feedback_events.c.reason)).all()
    assert [tuple(row) for row in rows] == [("k1", None)]
