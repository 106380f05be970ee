"""``store.driver.DriverStatement``: statements run on the driver's cursor inside the caller's
transaction must store and read values exactly as SQLAlchemy's own execution does, raise
SQLAlchemy's errors, and commit or roll back with the caller's transaction (SQLite and
PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from waypost.store import migrate
from waypost.store.db import create_engine
from waypost.store.driver import DriverStatement, NoTransactionError
from waypost.store.models import bounce_scores, suppressions

COLUMNS = ("address", "reason", "source", "detail", "created_at", "expires_at")
INSERT = DriverStatement(suppressions.insert(), COLUMNS)
SELECT = DriverStatement(sa.select(*(suppressions.c[name] for name in COLUMNS))
                         .where(suppressions.c.address.in_([sa.bindparam("a"), sa.bindparam("b")])))
AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def entry(address: str, **values: object) -> dict[str, object]:
    return {"address": address, "reason": "BOUNCE", "source": "ses", "detail": "5.1.1 user unknown",
            "created_at": AT, "expires_at": None, **values}


def stored(engine: Engine, address: str) -> tuple[object, ...]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(*(suppressions.c[name] for name in COLUMNS))
                           .where(suppressions.c.address == address)).one()
    return tuple(row)


def test_rows_are_stored_as_sqlalchemy_stores_them(engine: Engine) -> None:
    later = datetime(2026, 3, 8, 1, 2, 3, tzinfo=UTC)
    # a time in another zone is kept as the same moment in UTC, as UTCDateTime does
    zoned = AT.astimezone(timezone(timedelta(hours=-5)))
    rows = [entry("core@example.org", expires_at=later, detail=None),
            entry("zoned@example.org", created_at=zoned, expires_at=later, detail=None)]
    with engine.begin() as conn:
        conn.execute(suppressions.insert(), [dict(rows[0], address="sqla@example.org")])
        INSERT.insert_many(conn, rows)

    assert stored(engine, "core@example.org")[1:] == stored(engine, "sqla@example.org")[1:]
    assert stored(engine, "core@example.org")[4:] == (AT, later)
    assert stored(engine, "zoned@example.org")[4] == AT


def test_fetch_reads_values_as_sqlalchemy_reads_them(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(suppressions.insert(), [entry("ann@example.org"), entry("bob@example.org", expires_at=AT)])
    with engine.begin() as conn:
        found = SELECT.fetch(conn, {"a": "ann@example.org", "b": "bob@example.org"})
        missing = SELECT.fetch(conn, {"a": "nobody@example.org", "b": "nobody@example.org"})

    assert sorted(found) == sorted([stored(engine, "ann@example.org"), stored(engine, "bob@example.org")])
    assert all(isinstance(row[4], datetime) and row[4].tzinfo == UTC for row in found)
    assert missing == []


def test_a_naive_time_is_refused_and_nothing_is_written(engine: Engine) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as conn:
        INSERT.insert_many(conn, [entry("ann@example.org"), entry("bob@example.org", created_at=datetime(2026, 3, 1))])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar_one() == 0


def test_a_missing_value_is_refused(engine: Engine) -> None:
    row = entry("ann@example.org")
    del row["expires_at"]
    with pytest.raises(KeyError, match="expires_at"), engine.begin() as conn:
        INSERT.insert_many(conn, [row])


def test_driver_errors_are_sqlalchemy_errors_and_roll_back_with_the_caller(engine: Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        INSERT.insert_many(conn, [entry("first@example.org")])
        INSERT.insert_many(conn, [entry("ann@example.org"), entry("ann@example.org")])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar_one() == 0


def test_the_rows_commit_with_the_callers_transaction(engine: Engine) -> None:
    with engine.connect() as conn, conn.begin() as transaction:
        INSERT.insert_many(conn, [entry("ann@example.org")])
        transaction.rollback()
    assert not any(selected(engine))
    with engine.begin() as conn:
        INSERT.insert_many(conn, [entry("ann@example.org")])
    assert selected(engine) == [stored(engine, "ann@example.org")]


def selected(engine: Engine) -> list[tuple[object, ...]]:
    with engine.begin() as conn:
        return SELECT.fetch(conn, {"a": "ann@example.org", "b": "ann@example.org"})


def test_json_values_go_through_the_columns_type(engine: Engine) -> None:
    scores = DriverStatement(bounce_scores.insert(), ("address", "score", "bounces", "last_at"))
    with engine.begin() as conn:
        scores.insert_many(conn, [{"address": "ann@example.org", "score": 2, "bounces": [AT.isoformat()],
                                   "last_at": AT}])
    with engine.connect() as conn:
        row = conn.execute(sa.select(bounce_scores)).one()
    assert (row.bounces, row.last_at) == ([AT.isoformat()], AT)


def test_outside_a_transaction_nothing_runs(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(NoTransactionError):
        INSERT.insert_many(conn, [entry("ann@example.org")])


def test_suppressing_keeps_an_entry_in_force_and_replaces_an_expired_one(engine: Engine) -> None:
    from waypost.outbound import suppression
    from waypost.store.models import suppression_log, utcnow

    now = utcnow()
    with engine.begin() as conn:
        suppression.add(conn, "kept@example.org", suppression.Reason.BOUNCE, "ses", expires_at=now + timedelta(days=1))
        suppression.add(conn, "gone@example.org", suppression.Reason.BOUNCE, "ses", expires_at=now - timedelta(days=1))
    with engine.begin() as conn:
        added = suppression.add_many(conn, [
            suppression.NewEntry("Kept@example.org", suppression.Reason.COMPLAINT, "ses"),
            suppression.NewEntry("gone@example.org", suppression.Reason.COMPLAINT, "ses"),
            suppression.NewEntry("new@example.org", suppression.Reason.UNSUBSCRIBE, "one-click")])
    assert added == {"gone@example.org", "new@example.org"}
    with engine.begin() as conn:
        kept, gone, new = (suppression.lookup(conn, a) for a in ("kept@example.org", "gone@example.org",
                                                                 "NEW@example.org"))
        logged = conn.execute(sa.select(suppression_log.c.address).order_by(suppression_log.c.id)).scalars().all()
    assert kept is not None and kept.reason == suppression.Reason.BOUNCE  # its first reason stays
    assert gone is not None and (gone.reason, gone.expires_at) == (suppression.Reason.COMPLAINT, None)
    assert new is not None and new.source == "one-click" and new.created_at >= now
    assert logged == ["kept@example.org", "gone@example.org", "gone@example.org", "new@example.org"]
    with engine.connect() as conn:  # outside a transaction the lookup answers the same
        assert suppression.lookup(conn, "gone@EXAMPLE.org") == gone


def test_an_in_list_reads_and_deletes_as_an_expanding_parameter_does(engine: Engine) -> None:
    # lengths around the padding's powers of two, and past one IN_CHUNK (two statements)
    from waypost.store.db import IN_CHUNK
    from waypost.store.driver import DriverInList

    present = DriverInList(suppressions.c.address,
                           lambda among: sa.select(suppressions.c.address, suppressions.c.expires_at).where(among))
    delete = DriverInList(suppressions.c.address, lambda among: suppressions.delete().where(among))
    addresses = [f"r{number}@example.org" for number in range(IN_CHUNK + 40)]
    with engine.begin() as conn:
        INSERT.insert_many(conn, [entry(address, expires_at=AT) for address in addresses[::2]])
    expanding = sa.select(suppressions.c.address, suppressions.c.expires_at).where(
        suppressions.c.address.in_(sa.bindparam("keys", expanding=True)))
    with engine.begin() as conn:
        for count in (1, 2, 3, 5, 64, 65, IN_CHUNK - 1, IN_CHUNK, IN_CHUNK + 1, IN_CHUNK + 40):
            asked = addresses[:count]
            want = {tuple(row) for row in conn.execute(expanding, {"keys": asked})}
            found = present.fetch(conn, asked)
            assert len(found) == len(want) and set(found) == want, count
        assert present.fetch(conn, []) == []
        delete.run(conn, addresses[:IN_CHUNK + 1])
        assert sorted(row[0] for row in present.fetch(conn, addresses)) == sorted(addresses[IN_CHUNK + 2::2])
    with engine.connect() as conn:  # outside a transaction it begins one, as SQLAlchemy would
        assert len(present.fetch(conn, addresses)) == len(addresses[IN_CHUNK + 2::2])
        delete.run(conn, addresses)
        assert conn.in_transaction()
        conn.commit()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar_one() == 0


def test_rows_given_as_values_are_stored_as_rows_given_as_mappings(engine: Engine) -> None:
    # the columns in another order than the table's: the values are put in the placeholders' order
    reordered = DriverStatement(suppressions.insert(), ("expires_at", "source", "address", "reason", "detail",
                                                        "created_at"))
    later = datetime(2026, 3, 8, 1, 2, 3, tzinfo=UTC)
    with engine.begin() as conn:
        INSERT.insert_many(conn, [entry("mapped@example.org", expires_at=later)])
        INSERT.insert_values(conn, [("values@example.org", "BOUNCE", "ses", "5.1.1 user unknown", AT, later)])
        reordered.insert_values(conn, [(later, "ses", "reordered@example.org", "BOUNCE", "5.1.1 user unknown", AT)])
    mapped = stored(engine, "mapped@example.org")[1:]
    assert stored(engine, "values@example.org")[1:] == mapped == stored(engine, "reordered@example.org")[1:]
    with pytest.raises(ValueError, match="5 values"), engine.begin() as conn:
        INSERT.insert_values(conn, [("short@example.org", "BOUNCE", "ses", None, AT)])
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as conn:
        INSERT.insert_values(conn, [("naive@example.org", "BOUNCE", "ses", None, datetime(2026, 3, 1), None)])
