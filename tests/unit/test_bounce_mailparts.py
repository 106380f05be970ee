"""Shortcuts in ``feedback.mailparts`` give what the full reading gives."""

from __future__ import annotations

from email.utils import getaddresses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from waypost.feedback.mailparts import addresses_in, clean_address


def _fully_parsed(value: str) -> list[str]:
    return [address for address in (clean_address(raw) for _, raw in getaddresses([value])) if address]


@pytest.mark.parametrize("value", ["<>", "MAILER-DAEMON <>", "<MAILER-DAEMON>", "mailer-daemon",
                                   "MAILER-DAEMON (Mail Delivery System)", "<Undisclosed Recipients>",
                                   "utf-8; ann\\x{40}example.org", "Ann <ann@example.org>"])
def test_a_field_reads_as_fully_parsed(value: str) -> None:
    assert addresses_in(value) == _fully_parsed(value)


@given(st.text(alphabet="an.<>()\"',;: \\x{}40", max_size=30))
def test_a_field_without_an_at_sign_names_nobody(value: str) -> None:
    assert addresses_in(value) == _fully_parsed(value) == []
