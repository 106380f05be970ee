"""Looking for phrases in report text quickly, with exactly the answers of the regular
expressions that name them.

Reading a bounce means searching its notice for many patterns, most of which are not there.
Python's regex engine skips ahead quickly only to a literal it can see, and not at all under
IGNORECASE; a plain substring test (``in``) runs at C speed. So:

* ``Caseless``: a pattern written in lower case is searched in lower-cased ASCII text without
  IGNORECASE (the same matches), other text with it;
* ``required_run``: the longest run of plain characters that every match of a pattern
  contains, so that a text without it is known to have no match before any search;
* ``PhraseTable``: an ordered table of patterns, answering the first that matches anywhere, as
  searching each in turn would; a pattern none of whose alternatives' runs is in the text is
  not searched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,:;'\"!-_/<>=@#%&~`")
_ESCAPED_PLAIN = frozenset("().[]{}?*+|^$\\-'\"/:,;!@#%&~`<>= ")
_ESCAPED_OTHER = frozenset("xuUN0123456789")  # a character by its code ("\x41"), a group's text again ("\1")
_QUANTIFIERS = frozenset("?*+{")
_INLINE_FLAGS = re.compile(r"\(\?[a-zA-OQ-Z#-]")  # "(?i)", "(?x:...)", "(?#...)": not "(?P<", "(?:", "(?=" ...


class Caseless:
    """A pattern found whatever the case of the text. Its source spells every letter in lower
    case (escapes such as ``\\S`` aside), so on ASCII text, searching the lower-cased text
    without IGNORECASE finds the same: several times faster on a long notice, since the regex
    engine can then skip ahead to a letter. Other text is searched with IGNORECASE, which folds
    more than ``str.lower`` does (U+017F "ſ" is an "s" to it)."""

    def __init__(self, source: str, flags: int = 0) -> None:
        if re.search(r"(?<!\\)[A-Z]", source) or flags & re.IGNORECASE:
            raise ValueError(f"a caseless pattern is written in lower case, without IGNORECASE: {source!r}")
        self.source = source
        self._lowered = re.compile(source, flags)
        self._any_case = re.compile(source, flags | re.IGNORECASE)

    def search(self, text: str, lowered: str | None = None) -> re.Match[str] | None:
        """The first match in ``text`` (positions are the same in the lower-cased copy of ASCII
        text); ``lowered``: ``lowered_ascii(text)``, when at hand."""
        if lowered is None and text.isascii():
            lowered = text.lower()
        return self._lowered.search(lowered) if lowered is not None else self._any_case.search(text)

    def found(self, text: str, lowered: str | None = None) -> bool:
        return self.search(text, lowered) is not None


def lowered_ascii(text: str) -> str | None:
    """``text`` lower-cased for ``Caseless`` when it is ASCII; else None."""
    return text.lower() if text.isascii() else None


def required_run(source: str, flags: int = 0) -> str:
    """The longest run of plain characters that every match of the pattern contains, as written
    (the caller folds case for IGNORECASE): read outside any group, lookaround or character set,
    leaving out a quantified character; "" (nothing known) for a pattern with an alternative at
    its top level, inline flags, verbose mode, or a character given by its code."""
    if flags & re.VERBOSE or _INLINE_FLAGS.search(source):
        return ""
    runs, run, depth, index = [""], "", 0, 0
    while index < len(source):
        char, literal = source[index], None
        if char == "\\" and index + 1 < len(source):
            index += 1
            if source[index] in _ESCAPED_OTHER:
                return ""
            literal = source[index] if source[index] in _ESCAPED_PLAIN else None
        elif char == "[":
            index = _set_end(source, index)  # one character of a set: no run
        elif char == "|" and depth == 0:
            return ""
        elif char in "()":
            depth += 1 if char == "(" else -1
        elif char in _QUANTIFIERS:
            run = run[:-1]  # what the quantifier repeats may be absent
            if char == "{" and (index := source.find("}", index)) < 0:  # "{m,n}": read past it
                return ""
        elif char in _PLAIN:
            literal = char
        if literal is not None and depth == 0:
            run += literal
        else:
            runs.append(run)
            run = ""
        index += 1
    runs.append(run)
    return max(runs, key=len)


def alternatives(source: str) -> list[str]:
    """The pattern's top-level alternatives ("a|b(c|d)" → "a", "b(c|d)")."""
    found, start, depth, index = [], 0, 0, 0
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 1
        elif char == "[":
            index = _set_end(source, index)
        elif char in "()":
            depth += 1 if char == "(" else -1
        elif char == "|" and depth == 0:
            found.append(source[start:index])
            start = index + 1
        index += 1
    return [*found, source[start:]]


def _set_end(source: str, start: int) -> int:
    """The index of the "]" that closes the character set opening at ``start``."""
    index = start + 1
    if source[index:index + 1] == "^":
        index += 1
    if source[index:index + 1] == "]":  # a "]" first is a member
        index += 1
    while index < len(source) and source[index] != "]":
        index += 2 if source[index] == "\\" else 1
    return index


class PhraseTable:
    """(label, pattern) pairs in order of precedence; ``first`` gives the label of the first
    pattern found anywhere in a text, as searching each in turn gives. Case is the caller's
    business: the patterns are compiled as given."""

    def __init__(self, table: Sequence[tuple[str, str]], flags: int = 0) -> None:
        self._patterns = [(label, re.compile(source, flags)) for label, source in table]
        self._table: list[tuple[str, re.Pattern[str], tuple[str, ...]]] | None = None  # with runs, on first use

    def first(self, text: str) -> str | None:
        table = self._table
        if table is None:  # worked out once, not at import (a cold start pays for imports)
            table = self._table = [(label, pattern, _runs(pattern.pattern, pattern.flags))
                                   for label, pattern in self._patterns]
        for label, pattern, runs in table:
            if runs:
                for run in runs:  # a plain loop: a generator costs more than most of these tests
                    if run in text:
                        break
                else:
                    continue  # no alternative's run is here: no match
            if pattern.search(text):
                return label
        return None


def _runs(source: str, flags: int) -> tuple[str, ...]:
    """One required run per alternative, or () when one of them has none (then always search).
    Runs are exact text: a pattern under IGNORECASE gets none."""
    if flags & re.IGNORECASE:
        return ()
    runs = tuple(required_run(alternative, flags) for alternative in alternatives(source))
    return runs if all(runs) else ()
