"""``feedback.detectors.all_failures`` gives flufl.bounce's own answer (``flufl.bounce.all_failures``)
for every report mail we have: the shared corpus's bounces, DSNs and complaints, and the generated
samples. Its start-pattern filter only leaves out pattern sets that cannot match, so any
difference, or a flufl.bounce release that reorganises its detectors, fails here."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from email import message_from_bytes, message_from_string
from email.message import Message
from email.policy import compat32

import pytest
from flufl.bounce import all_failures as flufl_all_failures

from tests.conftest import corpus_dir
from tests.support.report_samples import SAMPLES, _plain
from waypost.feedback import detectors


def _answer(function: object, message: Message) -> object:
    try:
        return function(message)  # type: ignore[operator]
    except Exception as err:  # a detector that chokes must choke the same way in both
        return type(err)


def _messages(raws: list[bytes]) -> Iterator[tuple[int, Message]]:
    for index, raw in enumerate(raws):
        yield index, message_from_bytes(raw, policy=compat32)


def _disagreements(raws: list[bytes]) -> list[tuple[int, object, object]]:
    logging.getLogger("flufl.bounce").disabled = True  # its detectors log what they survive
    try:
        return [(index, theirs, ours) for index, message in _messages(raws)
                if (theirs := _answer(flufl_all_failures, message)) != (ours := _answer(detectors.all_failures,
                                                                                         message))]
    finally:
        logging.getLogger("flufl.bounce").disabled = False


@pytest.mark.corpus
def test_same_answers_as_flufl_bounce_on_the_corpus() -> None:
    root = corpus_dir()
    raws = [path.read_bytes() for folder in ("bounces", "dsn", "arf") for path in sorted((root / folder).iterdir())
            if path.suffix in (".eml", ".txt")]
    assert len(raws) > 350
    assert _disagreements(raws) == []


def test_same_answers_as_flufl_bounce_on_the_generated_samples() -> None:
    assert _disagreements([sample.raw for sample in SAMPLES]) == []


def test_a_start_line_in_a_later_part_is_found() -> None:
    """The filter reads every part's text: a notice whose start line is in its second text part
    still names the address (a filter reading only the first part would lose it)."""
    body = ("--b\nContent-Type: text/plain\n\nHello.\n--b\nContent-Type: text/plain\n\n"
            "Your message\n\n   ann@example.org\n\nbecause:\n   no such user\n--b--\n")
    raw = _plain("MAILER-DAEMON@mx.example.net", "Undeliverable", body, "<r@mx.example.net>",
                 content_type='multipart/mixed; boundary="b"')
    message = message_from_bytes(raw, policy=compat32)
    assert detectors.all_failures(message) == flufl_all_failures(message)
    temporary, permanent = detectors.all_failures(message)
    assert b"ann@example.org" in permanent | temporary


def test_a_notice_without_any_start_line_names_nobody() -> None:
    raw = _plain("MAILER-DAEMON@mx.example.net", "Hello", "Nothing about any address here.\n", "<r2@mx.example.net>")
    message = message_from_bytes(raw, policy=compat32)
    assert detectors.all_failures(message) == flufl_all_failures(message) == (frozenset(), frozenset())


def test_a_start_line_only_case_folding_finds_is_found() -> None:
    """Text that is not ASCII is searched by the start patterns themselves: "ſ" (U+017F) is an
    "s" to a pattern that ignores case, though lower-casing leaves it as it is."""
    body = "Delivery ha\u017f failed\n\n[ann@example.org]\n\nOriginal message details:\n"
    message = message_from_string(f"From: MAILER-DAEMON@mx.example.net\nSubject: Failure\n\n{body}", policy=compat32)
    assert detectors.all_failures(message) == flufl_all_failures(message)
    assert b"ann@example.org" in detectors.all_failures(message)[1]


@pytest.mark.parametrize("intro", ["Hi. This is the qmail-send program at mx.example.net.",
                                   "This is the mail delivery agent at mx.example.net."])
def test_a_qmail_notice_is_still_read(intro: str) -> None:
    """``Qmail`` runs only where one of its intro lines occurs; where one does, it runs as ever."""
    body = f"{intro}\nI'm afraid I wasn't able to deliver your message.\n\n<ann@example.org>:\nNo mailbox here.\n\n" \
           "--- Below this line is a copy of the message.\n"
    message = message_from_bytes(_plain("MAILER-DAEMON@mx.example.net", "failure notice", body, "<q@mx.example.net>"),
                                 policy=compat32)
    assert detectors.all_failures(message) == flufl_all_failures(message) == (frozenset(), {b"ann@example.org"})


def test_an_exchange_notice_is_still_read() -> None:
    body = "Your message\n\n  did not reach the following recipient(s):\n\nann@example.org on 1/1/2026 10:00 AM\n" \
           "   The recipient name is not recognized\n   MSEXCH:IMS:Example:SITE:MX 0 (000C05A6) Unknown Recipient\n"
    message = message_from_bytes(_plain("postmaster@mx.example.net", "Undeliverable", body, "<x@mx.example.net>"),
                                 policy=compat32)
    assert detectors.all_failures(message) == flufl_all_failures(message)
    assert b"ann@example.org" in detectors.all_failures(message)[1]
