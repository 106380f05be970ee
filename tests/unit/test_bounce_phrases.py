"""``feedback.phrases`` finds what the regular expressions find: the shortcuts (lower-cased ASCII
text instead of IGNORECASE, a plain run of characters looked for before a pattern) may only
skip searches that would find nothing."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from waypost.feedback.phrases import Caseless, PhraseTable, alternatives, lowered_ascii, required_run


@pytest.mark.parametrize(("text", "found"), [
    ("550 Unknown User: ann@example.org", True),
    ("550 UNKNOWN USER: ANN@EXAMPLE.ORG", True),
    ("550 unknown user: ann@example.org (Empfänger unbekannt)", True),  # not ASCII: IGNORECASE
    ("550 unknown u\u017fer: ann@example.org", True),  # "ſ" is an "s" to IGNORECASE, not to str.lower
    ("550 user unknown", False),
])
def test_a_caseless_pattern_finds_what_ignorecase_finds(text: str, found: bool) -> None:
    source = r"(?:^|\s)unknown user: \S+@\S+"
    assert (re.search(source, text, re.IGNORECASE) is not None) is found
    assert Caseless(source).found(text) is found
    assert Caseless(source).found(text, lowered_ascii(text)) is found


def test_a_caseless_pattern_is_written_in_lower_case() -> None:
    with pytest.raises(ValueError, match="lower case"):
        Caseless(r"Unknown user")
    assert Caseless(r"\S+@\S+").found("ANN@EXAMPLE.ORG")


@pytest.mark.parametrize(("pattern", "run"), [
    ("Delivery has failed", "Delivery has failed"),
    (r"^Your message\s*$", "Your message"),
    (r"Intended recipient:\s*(?P<addr>.*)$", "Intended recipient:"),
    ("Del(i|e)very to the following recipients (failed|was aborted)", "very to the following recipients "),
    (r"address\(es\)\.", "address(es)."),
    (r"ptr(?<!\wptr)\b", "ptr"), (r"(?:account|mailbox)[\w ]{0,30}(?:disabled|locked)", ""),
    (r"mailbox unavailable \((?:s\d{6,}|-?\d+:\d+:-?\d+)\)", "mailbox unavailable ("),
    ("abc?d", "ab"), ("ab*?cd", "cd"), ("a{2}bcd", "bcd"), ("x(yz)?w", "x"), ("[|(]abc", "abc"),
    ("ab|cd", ""), ("(?i)abcd", ""), (r"\x41bcd", ""), (r"(a)\1bcd", ""),
])
def test_the_required_run_of_a_pattern(pattern: str, run: str) -> None:
    assert required_run(pattern) == run


def test_the_alternatives_of_a_pattern() -> None:
    assert alternatives(r"a|b(c|d)|[|]e|\|f") == ["a", "b(c|d)", "[|]e", r"\|f"]


_ATOMS = st.sampled_from(["a", "b", "A", " ", ".", r"\.", r"\s", r"\|", "(a|b)", "(ab)", "^", "$", "-", "[ab]",
                          "[^a]", "[|(]", "(?=a)", "(?!b)", "(?<=a)", "(?:a|)"])
_QUANTIFIER = st.sampled_from(["", "", "", "?", "*", "+", "{1,2}", "*?"])
_PATTERN = st.lists(st.tuples(_ATOMS, _QUANTIFIER), min_size=1, max_size=6).map(
    lambda atoms: "".join(atom + quantifier for atom, quantifier in atoms))
_TEXT = st.text(alphabet="abAB. -|(\n", max_size=14)


def _compiles(source: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(source, flags)
    except re.error:  # "^*": nothing to repeat
        assume(False)
        raise


@given(st.lists(_PATTERN, min_size=1, max_size=3).map("|".join), _TEXT)
def test_every_match_contains_the_required_run(source: str, text: str) -> None:
    """What makes the filters safe: a text without an alternative's run has no match there."""
    pattern = _compiles(source, re.MULTILINE)
    caseless = _compiles(source, re.MULTILINE | re.IGNORECASE)
    runs = [required_run(alternative) for alternative in alternatives(source)]
    if pattern.search(text) and all(runs):
        assert any(run in text for run in runs), (source, runs, text)
    if caseless.search(text) and len(runs) == 1 and runs[0]:
        assert runs[0].lower() in text.lower(), (source, runs, text)


@given(st.lists(_PATTERN, min_size=1, max_size=5), _TEXT)
def test_a_phrase_table_answers_the_first_pattern_found(sources: list[str], text: str) -> None:
    compiled = [_compiles(source, re.MULTILINE) for source in sources]
    table = PhraseTable([(str(index), source) for index, source in enumerate(sources)], re.MULTILINE)
    expected = next((str(index) for index, pattern in enumerate(compiled) if pattern.search(text)), None)
    assert table.first(text) == expected
