"""The allowlist against a migrated database, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from waypost.mail.addresses import AddressError
from waypost.pipeline.allowlist import Allowlist
from waypost.store import migrate
from waypost.store.db import create_engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def allowlist(engine: Engine) -> Allowlist:
    return Allowlist(engine)


def test_empty_allowlist_allows_no_one(allowlist: Allowlist) -> None:
    assert allowlist.entries() == []
    assert not allowlist.allows("ann@example.org")


def test_add_list_remove(allowlist: Allowlist) -> None:
    before = datetime.now(UTC)
    assert allowlist.add("Ann@Example.org", note="first traveller")
    assert allowlist.add("@trips.example")

    entries = allowlist.entries()
    assert [(e.kind, e.value, e.note) for e in entries] == [
        ("address", "ann@example.org", "first traveller"),
        ("domain", "trips.example", None),
    ]
    for entry in entries:
        assert entry.added_at.tzinfo is not None
        assert before - timedelta(seconds=5) <= entry.added_at <= datetime.now(UTC)

    assert allowlist.remove("ANN@example.org")
    assert not allowlist.allows("ann@example.org")
    assert [e.value for e in allowlist.entries()] == ["trips.example"]
    assert not allowlist.remove("ann@example.org")  # already gone
    assert allowlist.remove("trips.example")
    assert allowlist.entries() == []


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ("ann@example.org", "ann@example.org"),
        ("ann@example.org", "ANN@Example.ORG"),
        ("ann@example.org", "ann+holiday@example.org"),
        ("ann@example.org", "Ann <ann@example.org.>"),
        ("example.org", "@Example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_duplicate_add_returns_false(allowlist: Allowlist, first: str, again: str) -> None:
    assert allowlist.add(first)
    assert not allowlist.add(again)
    assert len(allowlist.entries()) == 1


@pytest.mark.parametrize(
    ("entry", "sender", "allowed"),
    [
        # exact addresses: case-insensitive, +tag tolerant, IDNA-aware
        ("ann@example.org", "ann@example.org", True),
        ("ann@example.org", "ANN@EXAMPLE.ORG", True),
        ("ann@example.org", "ann+nepal@example.org", True),
        ("Ann+trip@example.org", "ann@example.org", True),
        ("ann@example.org", "Ann Smith <ann@example.org>", True),
        ("ann@example.org", "bob@example.org", False),
        ("ann@example.org", "ann@example.net", False),
        ("ann@example.org", "ann@mail.example.org", False),
        ("ann@example.org", "anne@example.org", False),
        ("ann@bücher.example", "ann@xn--bcher-kva.example", True),
        ("ann@xn--bcher-kva.example", "Ann@Bücher.Example", True),
        # whole domains: any address there, no subdomains, no lookalike suffixes
        ("example.org", "anyone@example.org", True),
        ("@example.org", "Bob+x@EXAMPLE.org", True),
        ("example.org", "ann@mail.example.org", False),
        ("example.org", "ann@badexample.org", False),
        ("example.org", "ann@example.org.evil.test", False),
        ("mail.example.org", "ann@example.org", False),
        ("Bücher.Example", "leser@xn--bcher-kva.example", True),
        ("xn--bcher-kva.example", "leser@bücher.example", True),
    ],
)
def test_allows(allowlist: Allowlist, entry: str, sender: str, allowed: bool) -> None:
    allowlist.add(entry)

    assert allowlist.allows(sender) is allowed


def test_domain_entry_does_not_match_a_local_part(allowlist: Allowlist) -> None:
    # an address entry and a domain entry with the same text are different things
    allowlist.add("ann@example.org")

    assert not allowlist.allows("someone@ann")
    assert allowlist.entries()[0].kind == "address"


def test_remove_matches_the_normalised_form(allowlist: Allowlist) -> None:
    allowlist.add("ann@Bücher.Example")

    assert allowlist.remove("ANN+x@xn--bcher-kva.example")
    assert allowlist.entries() == []


def test_unusable_entry_is_refused_before_touching_the_table(allowlist: Allowlist) -> None:
    with pytest.raises(AddressError):
        allowlist.add("ann@")
    assert allowlist.entries() == []


def test_entries_survive_a_new_engine(database_url: str, engine: Engine) -> None:
    Allowlist(engine).add("ann@example.org")

    other = create_engine(database_url)
    try:
        assert Allowlist(other).allows("ann@example.org")
    finally:
        other.dispose()
