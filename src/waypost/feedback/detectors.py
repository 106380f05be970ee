"""flufl.bounce's detectors for bounces without a delivery-status part, run as its
``all_failures`` runs them (in its order, stopping at the first that names an address), with
the same answers for less work.

Its generic detectors (``SimpleMatch`` and its ``SimpleWarning``) read the whole message once
per pattern set, line by line, looking for a start line ("The following addresses had
permanent fatal errors", ...) before the addresses: about 50 passes over every line, most of
them for notices that contain none of those start lines. Here each start pattern is first
searched once over the message's text (the same lines joined, anchors read per line); a set
whose start occurs nowhere cannot name an address, so the detector gets only the sets that
may. The start patterns ignore case, which keeps the regex engine from skipping ahead, so
each is first reduced to a run of plain characters that every match contains
(``phrases.required_run``), looked for with ``in`` in the lower-cased text (exact for ASCII text;
other text goes to the pattern directly); only a pattern whose run is there is searched.
``Qmail`` and ``Exchange`` also read every line and name nobody unless a start line of theirs
occurs: they are not run on a text without one. What the detectors then do is theirs,
unchanged. ``flufl.bounce`` keeps its detector list and tables private: a release that
changes them fails ``tests/unit/test_bounce_detectors.py``.
"""

from __future__ import annotations

import re
from email.message import Message

from flufl.bounce._detectors.exchange import Exchange
from flufl.bounce._detectors.exchange import scre as exchange_start
from flufl.bounce._detectors.qmail import Qmail, introtags
from flufl.bounce._detectors.simplematch import SimpleMatch
from flufl.bounce._scan import _DETECTORS

from waypost.feedback.phrases import lowered_ascii, required_run

Failures = tuple[frozenset[bytes], frozenset[bytes]]

# each start pattern, compiled to read a joined text as the detector reads lines: "^" and "$"
# at every line's start and end; with the run of plain characters every match contains (lower-cased
# for a pattern that ignores case, or as it is)
_ANYWHERE: dict[re.Pattern[str], tuple[re.Pattern[str], str, str]] = {}  # pattern, run lower-cased or as is


def all_failures(message: Message) -> Failures:
    """(temporary, permanent) failed addresses, as ``flufl.bounce.all_failures`` gives them.
    Raises what a detector raises."""
    text: _Text | None = None
    for detector_class in _DETECTORS:
        detector = detector_class()
        if isinstance(detector, SimpleMatch | Qmail | Exchange):
            if text is None:
                text = _Text("\n".join(_payloads(message)))
            if not _may_name(detector, text):
                continue
        temporary, permanent = detector.process(message)
        if temporary or permanent:
            return frozenset(temporary), frozenset(permanent)
    return frozenset(), frozenset()


def _may_name(detector: SimpleMatch | Qmail | Exchange, text: _Text) -> bool:
    """False when ``detector`` cannot name an address in ``text``; a ``SimpleMatch`` is left
    with the pattern sets that may start (an instance attribute: the class's table is shared)."""
    if isinstance(detector, SimpleMatch):
        detector.PATTERNS = [patterns for patterns in detector.PATTERNS if text.may_start(patterns[0])]
        return bool(detector.PATTERNS)
    if isinstance(detector, Qmail):  # it starts at a line that begins with one of these (qmail.py)
        return any(intro in text.text for intro in introtags)
    return text.may_start(exchange_start)  # its start line, searched line by line (exchange.py)


def _payloads(message: Message) -> list[str]:
    """The text of every part the detectors read: ``body_line_iterator``'s lines, part by part."""
    return [payload for part in message.walk() if isinstance(payload := part.get_payload(), str)]


class _Text:
    """The joined text of a message's parts, and its lower-cased copy when that is exact."""

    def __init__(self, text: str) -> None:
        self.text = text
        # for ASCII text, lower-casing is what IGNORECASE does; elsewhere it is not (U+017F
        # "ſ" matches "s"), so such text is only searched by the patterns themselves
        self.lowered = lowered_ascii(text)

    def may_start(self, start: re.Pattern[str]) -> bool:
        """Whether ``start`` matches at some line of the text, as ``search`` on each line would."""
        known = _ANYWHERE.get(start)
        if known is None:
            run = required_run(start.pattern, start.flags)
            folded = start.flags & re.IGNORECASE
            known = _ANYWHERE[start] = (re.compile(start.pattern, start.flags | re.MULTILINE),
                                        run.lower() if folded else "", "" if folded else run)
        anywhere, folded_run, exact_run = known
        if folded_run and self.lowered is not None and folded_run not in self.lowered:
            return False
        if exact_run and exact_run not in self.text:
            return False
        return anywhere.search(self.text) is not None
