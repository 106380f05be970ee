"""Addresses as the domain compares them, and allowlist entries as people type them."""

from __future__ import annotations

import string
from email.utils import parseaddr

import pytest
from hypothesis import given
from hypothesis import strategies as st

from waypost.errors import PermanentError
from waypost.mail.addresses import (
    AddressError,
    address_key,
    domain_of,
    first_mailbox,
    format_mailbox,
    is_noreply_style,
    normalise_address,
    normalise_domain,
)
from waypost.pipeline.allowlist import parse_entry


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("example.org", "example.org"),
        ("Example.ORG", "example.org"),
        ("  example.org.  ", "example.org"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("münchen.de", "xn--mnchen-3ya.de"),
    ],
)
def test_normalise_domain(domain: str, expected: str) -> None:
    assert normalise_domain(domain) == expected


@pytest.mark.parametrize("domain", ["", "   ", ".", "a" * 64 + ".org", "a..b"])
def test_normalise_domain_refuses(domain: str) -> None:
    with pytest.raises(AddressError):
        normalise_domain(domain)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ann@example.org", "ann@example.org"),
        ("  ann@example.org\t", "ann@example.org"),
        ("Ann@Example.ORG", "Ann@example.org"),  # local part keeps its case (RFC 5321 §2.4)
        ("Ann+Trip@Example.ORG.", "Ann+Trip@example.org"),
        ("Ann Smith <ann@Example.org>", "ann@example.org"),
        ('"Smith, Ann" <ann@example.org>', "ann@example.org"),
        ("ann@Bücher.Example", "ann@xn--bcher-kva.example"),
        ("<ann@Bücher.Example>", "ann@xn--bcher-kva.example"),
    ],
)
def test_normalise_address(address: str, expected: str) -> None:
    assert normalise_address(address) == expected


@pytest.mark.parametrize(
    "address",
    ["", "ann", "ann@", "@example.org", "a@b@example.org", "ann smith@example.org", "<>", "ann@" + "a" * 64 + ".org"],
)
def test_normalise_address_refuses(address: str) -> None:
    with pytest.raises(AddressError):
        normalise_address(address)


def test_address_error_is_permanent() -> None:
    # retrying cannot make a bad address good
    assert issubclass(AddressError, PermanentError)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("ann@example.org", "ann@example.org"),
        ("ANN@EXAMPLE.ORG", "ann@example.org"),
        ("Ann+trip@Example.org", "ann@example.org"),
        ("ann+trip+2024@example.org", "ann@example.org"),
        ("ann+@example.org", "ann@example.org"),
        ("Ann Smith <Ann+Nepal@Example.ORG.>", "ann@example.org"),
        ("ann@Bücher.Example", "ann@xn--bcher-kva.example"),
        ("ANN+x@BÜCHER.example", "ann@xn--bcher-kva.example"),
        ("ann.smith@example.org", "ann.smith@example.org"),  # dots are not folded
    ],
)
def test_address_key(address: str, key: str) -> None:
    assert address_key(address) == key


def test_domain_of() -> None:
    assert domain_of("Ann <ann@Bücher.Example.>") == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("address", "noreply"),
    [
        ("noreply@example.org", True),
        ("no-reply@example.org", True),
        ("no_reply@example.org", True),
        ("no.reply@example.org", True),
        ("NoReply@example.org", True),
        ("donotreply@example.org", True),
        ("DoNotReply@example.org", True),
        ("do-not-reply@example.org", True),
        ("do_not_reply@example.org", True),
        ("nobody@example.org", True),
        ("noresponse@example.org", True),
        ("noreply+bounces@example.org", True),
        ("noreply-eu@example.org", True),
        ("Journeys <no-reply@example.org>", True),
        ("journeys@example.org", False),
        ("reply@example.org", False),
        ("postmaster@example.org", False),  # RFC 2142 role names are fine
        ("notnoreply@example.org", False),
        ("noreplyer@example.org", False),
        ("nobodyhome@example.org", False),
        ("ann@noreply.example.org", False),  # only the local part counts
    ],
)
def test_is_noreply_style(address: str, noreply: bool) -> None:
    assert is_noreply_style(address) is noreply


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ann@example.org", "ann@example.org"),
        ("Ann <Ann@Example.ORG>", "Ann@example.org"),
        ('"Smith, Ann" <ann@example.org>', "ann@example.org"),
        ("=?utf-8?q?J=C3=B6rg?= <jorg@Bücher.example>", "jorg@xn--bcher-kva.example"),
        (None, None),
        ("", None),
        ("garbage", None),
        ("<>", None),
        ("undisclosed-recipients:;", None),
        ("friends: ann@example.org, bob@example.org;", None),
        ("ann@example.org, bob@example.org", None),
        ("Ann <ann@example.org>, Bob <bob@example.org>", None),
        ("ann@", None),
    ],
)
def test_first_mailbox(header: str | None, expected: str | None) -> None:
    assert first_mailbox(header) == expected


@pytest.mark.parametrize(
    ("name", "address", "expected"),
    [
        ("Waypost journeys", "journeys@waypost.test", "Waypost journeys <journeys@waypost.test>"),
        ("Smith, Ann", "ann@example.org", '"Smith, Ann" <ann@example.org>'),
    ],
)
def test_format_mailbox(name: str, address: str, expected: str) -> None:
    assert format_mailbox(name, address) == expected


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("ann@example.org", ("address", "ann@example.org")),
        ("  Ann+Trip@Example.ORG  ", ("address", "ann@example.org")),
        ("ann@Bücher.Example", ("address", "ann@xn--bcher-kva.example")),
        ("example.org", ("domain", "example.org")),
        ("Example.ORG.", ("domain", "example.org")),
        ("@example.org", ("domain", "example.org")),
        (" @Bücher.Example ", ("domain", "xn--bcher-kva.example")),
        ("mail.example.org", ("domain", "mail.example.org")),
    ],
)
def test_parse_entry(text: str, entry: tuple[str, str]) -> None:
    assert parse_entry(text) == entry


@pytest.mark.parametrize("text", ["", "   ", "@", "ann@", "a@b@example.org"])
def test_parse_entry_refuses(text: str) -> None:
    with pytest.raises(AddressError):
        parse_entry(text)


_LOCAL = st.text(alphabet=string.ascii_letters + string.digits + "._%+=-", min_size=1, max_size=20)
_LABEL = st.text(alphabet=string.ascii_letters + string.digits + "-", min_size=1, max_size=12)


@given(local=_LOCAL, labels=st.lists(_LABEL, min_size=2, max_size=4), padding=st.sampled_from(["", " ", "\t"]))
def test_the_plain_address_fast_path_agrees_with_the_full_parse(local: str, labels: list[str], padding: str) -> None:
    address = f"{padding}{local}@{'.'.join(labels)}{padding}"
    _, bare = parseaddr(address.strip())
    slow_local, slow_domain = bare.rsplit("@", 1)
    assert normalise_address(address) == f"{slow_local}@{normalise_domain(slow_domain)}"
