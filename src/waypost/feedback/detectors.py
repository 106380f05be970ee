"""flufl.bounce's detectors for bounces without a delivery-status part, run as its
``all_failures`` runs them (in its order, stopping at the first that names an address), with
the same answers for less work.

Its generic detectors (``SimpleMatch`` and its ``SimpleWarning``) read the whole message once
per pattern set, line by line, looking for a start line ("The following addresses had
permanent fatal errors", ...) before the addresses: about 50 passes over every line, most of
them for notices that contain none of those start lines. Here each start pattern is first
searched once over the message's text (the same lines joined, anchors read per line); a set
whose start occurs nowhere cannot name an address, so the detector gets only the sets that
may. What the detectors then do is theirs, unchanged. ``flufl.bounce`` keeps its detector list
private: a release that changes it fails ``tests/unit/test_bounce_detectors.py``.
"""

from __future__ import annotations

import re
from email.message import Message

from flufl.bounce._detectors.simplematch import SimpleMatch
from flufl.bounce._scan import _DETECTORS

Failures = tuple[frozenset[bytes], frozenset[bytes]]

# each start pattern, compiled to read a joined text as the detector reads lines: "^" and "$"
# at every line's start and end
_ANYWHERE: dict[re.Pattern[str], re.Pattern[str]] = {}


def all_failures(message: Message) -> Failures:
    """(temporary, permanent) failed addresses, as ``flufl.bounce.all_failures`` gives them.
    Raises what a detector raises."""
    text: str | None = None
    for detector_class in _DETECTORS:
        detector = detector_class()
        if isinstance(detector, SimpleMatch):
            if text is None:
                text = "\n".join(_payloads(message))
            # an instance attribute: the class's table is shared and stays whole
            detector.PATTERNS = [patterns for patterns in detector.PATTERNS if _may_start(patterns[0], text)]
        temporary, permanent = detector.process(message)
        if temporary or permanent:
            return frozenset(temporary), frozenset(permanent)
    return frozenset(), frozenset()


def _payloads(message: Message) -> list[str]:
    """The text of every part the detectors read: ``body_line_iterator``'s lines, part by part."""
    return [payload for part in message.walk() if isinstance(payload := part.get_payload(), str)]


def _may_start(start: re.Pattern[str], text: str) -> bool:
    anywhere = _ANYWHERE.get(start)
    if anywhere is None:
        anywhere = _ANYWHERE[start] = re.compile(start.pattern, start.flags | re.MULTILINE)
    return anywhere.search(text) is not None
