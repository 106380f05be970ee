"""Long base64 bodies left out of the stdlib parser (mail/bodies.py) give what the stdlib gives.

Each comparison parses the same bytes twice: with every run of base64 lines left out
(``ELIDE_FROM = 1``, so even the small bodies of the corpus and of generated mail take the
new path) and with none left out (the stdlib decodes every body, as before). Attachments,
text, notes, defects and refusals must be equal; and for attachment bytes also equal to
what ``email.message_from_bytes`` decodes itself."""

from __future__ import annotations

import base64
import email
import email.policy
import io
import os
import pickle
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import corpus_dir
from tests.integration.test_fuzz_mime import generated_messages, message, mutated
from tests.support.work import steps_while
from waypost.mail import bodies
from waypost.mail.bodies import Body
from waypost.mail.parse import MalformedMessage, parse_message

NEVER = 1 << 62


def outcome(raw: bytes, elide_from: int) -> Any:
    """Everything parse_message tells of ``raw``, or the refusal, with bodies left out from
    ``elide_from`` encoded bytes on."""
    saved, bodies.ELIDE_FROM = bodies.ELIDE_FROM, elide_from
    try:
        parsed = parse_message(raw)
    except MalformedMessage as err:
        return type(err).__name__, str(err)
    finally:
        bodies.ELIDE_FROM = saved
    return (parsed.from_address, parsed.from_header, parsed.subject, parsed.message_id, parsed.text,
            parsed.defects, parsed.notes, parsed.skipped, parsed.robot_headers,
            [(a.position, a.filename, a.content_type, a.size, a.data) for a in parsed.attachments])


def assert_same_either_way(raw: bytes) -> None:
    assert outcome(raw, 1) == outcome(raw, NEVER)


def stdlib_payloads(raw: bytes) -> list[bytes]:
    whole = email.message_from_bytes(raw, policy=email.policy.default)
    return [data for part in whole.walk()
            if not part.is_multipart() and isinstance(data := part.get_payload(decode=True), bytes)]


def photo_mail(sizes: list[int], line_end: bytes = b"\r\n") -> tuple[bytes, list[bytes]]:
    photos = [b"\xff\xd8\xff\xe0" + os.urandom(size) for size in sizes]
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "ann@example.org", "journeys@waypost.test", "photos"
    mail.set_content("Our trip.")
    for index, photo in enumerate(photos):
        mail.add_attachment(photo, maintype="image", subtype="jpeg", filename=f"IMG_{index:04d}.jpg")
    return mail.as_bytes().replace(b"\n", line_end), photos


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_large_bodies_are_left_out_and_read_back_as_the_stdlib_decodes_them(line_end: bytes, tmp_path: Path) -> None:
    raw, photos = photo_mail([300_000, 70_001, 123_457], line_end)
    path = tmp_path / "mail.eml"
    path.write_bytes(raw)
    with path.open("rb") as handle:
        parsed = parse_message(handle)
    assert [a.data for a in parsed.attachments] == photos == stdlib_payloads(raw)[1:]
    assert all(isinstance(a.body, Body) for a in parsed.attachments)  # the new path, not the stdlib's
    assert [a.size for a in parsed.attachments] == [len(photo) for photo in photos]
    assert parsed.attachments[0].body.read(10) == photos[0][:10]
    assert_same_either_way(raw)


def _no_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the mail was copied into a spool")

    monkeypatch.setattr(bodies.tempfile, "SpooledTemporaryFile", refuse)


def test_a_stored_mail_is_read_where_it_is_not_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, photos = photo_mail([300_000, 70_001])
    path = tmp_path / "mail.eml"
    path.write_bytes(raw)
    _no_copies(monkeypatch)
    with path.open("rb") as handle:
        parsed = parse_message(handle)
    path.unlink()  # the bodies hold the file open: a purge meanwhile takes nothing from them
    assert [a.data for a in parsed.attachments] == photos
    assert parse_message(raw).attachments[1].data == photos[1]  # bytes stay where they are too


@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", b"junk before the mail"])
def test_a_stored_mail_reads_the_same_from_wherever_it_starts(prefix: bytes, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    raw, photos = photo_mail([200_000, 90_000])
    path = tmp_path / "mail.eml"
    path.write_bytes(prefix + raw)
    _no_copies(monkeypatch)
    with path.open("rb") as handle:
        if not prefix.startswith(b"\xef"):
            handle.seek(len(prefix))  # a BOM is part of what is read; other bytes before the mail are not
        assert [a.data for a in parse_message(handle).attachments] == photos
    assert [a.data for a in parse_message(b"\xef\xbb\xbf" + raw).attachments] == photos


def test_a_stored_mail_cut_after_it_was_read_says_so(tmp_path: Path) -> None:
    raw, _ = photo_mail([300_000])
    path = tmp_path / "mail.eml"
    path.write_bytes(raw)
    with path.open("rb") as handle:
        parsed = parse_message(handle)
    with path.open("r+b") as handle:
        handle.truncate(len(raw) // 2)
    with pytest.raises(OSError, match="ended .* early"):
        assert parsed.attachments[0].data


@pytest.mark.parametrize("prefix", [b"", b"junk before the mail"])
def test_a_body_of_a_stored_mail_is_named_by_its_place_for_another_process(prefix: bytes, tmp_path: Path) -> None:
    raw, photos = photo_mail([300_000, 70_001])
    path = tmp_path / "mail.eml"
    path.write_bytes(prefix + raw)
    with path.open("rb") as handle:
        handle.seek(len(prefix))
        parsed = parse_message(handle)
    places = [a.body.stored() for a in parsed.attachments]
    assert all(isinstance(place, bodies.StoredBody) for place in places)
    # what a worker process gets: a pickled place, read and decoded there
    copies = [pickle.loads(pickle.dumps(place)) for place in places]
    assert [copy.read() for copy in copies] == photos == [a.data for a in parsed.attachments]
    assert all(len(pickle.dumps(place)) < 1000 for place in places)  # the place, not the bytes


def test_a_body_held_in_memory_or_in_an_unnamed_file_has_no_place_to_name(tmp_path: Path) -> None:
    raw, _ = photo_mail([300_000])
    assert parse_message(raw).attachments[0].body.stored() is None  # bytes: in this process alone
    with tempfile.TemporaryFile() as unnamed:
        unnamed.write(raw)
        unnamed.seek(0)
        assert parse_message(unnamed).attachments[0].body.stored() is None
    assert parse_message(io.BytesIO(raw)).attachments[0].body.stored() is None
    held = parse_message(b"Subject: x\r\nContent-Type: image/jpeg\r\n\r\nshort body\r\n").attachments
    assert [a.body.stored() for a in held] == [None]  # the stdlib decoded it: HeldBody


def test_a_named_body_whose_file_was_replaced_or_cut_is_not_read(tmp_path: Path) -> None:
    raw, photos = photo_mail([300_000])
    path = tmp_path / "mail.eml"
    path.write_bytes(raw)
    with path.open("rb") as handle:
        place = parse_message(handle).attachments[0].body.stored()
    assert place is not None and place.read() == photos[0]
    other = tmp_path / "other.eml"
    other.write_bytes(raw)
    os.replace(other, path)  # the same bytes, but another file: never read as if it were the same
    with pytest.raises(OSError, match="no longer the stored mail"):
        place.read()
    with path.open("rb") as handle:
        place = parse_message(handle).attachments[0].body.stored()
    with path.open("r+b") as handle:
        handle.truncate(len(raw) // 2)
    with pytest.raises(OSError, match="ended .* early"):
        assert place is not None and place.read()
    path.unlink()
    with pytest.raises(FileNotFoundError):
        place.read()


def test_a_stored_mail_opened_by_a_relative_path_is_named_absolutely(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    raw, photos = photo_mail([300_000])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mail.eml").write_bytes(raw)
    monkeypatch.chdir(tmp_path)
    with open("data/mail.eml", "rb") as handle:  # a data directory given as a relative path
        place = parse_message(handle).attachments[0].body.stored()
    assert place is not None and place.path == str(tmp_path / "data" / "mail.eml")
    monkeypatch.chdir("/")  # the worker runs wherever it was started
    assert place.read() == photos[0]


def test_a_stored_mail_renamed_before_it_is_parsed_names_no_place(tmp_path: Path) -> None:
    raw, photos = photo_mail([300_000])
    path = tmp_path / "mail.eml"
    path.write_bytes(raw)
    with path.open("rb") as handle:
        path.rename(tmp_path / "moved.eml")  # its name now leads nowhere
        parsed = parse_message(handle)
    assert parsed.attachments[0].body.stored() is None
    assert parsed.attachments[0].data == photos[0]


class _NetworkStream(io.RawIOBase):
    """A response body as botocore gives it: readable, and fileno() raising what it likes."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)

    def fileno(self) -> int:
        raise AttributeError("'NoneType' object has no attribute 'fileno'")


def test_a_stream_that_is_no_file_is_copied_as_before() -> None:
    raw, photos = photo_mail([300_000])
    assert [a.data for a in parse_message(io.BytesIO(raw)).attachments] == photos
    assert [a.data for a in parse_message(_NetworkStream(raw)).attachments] == photos  # type: ignore[arg-type]
    read_end, write_end = os.pipe()  # a file object over a descriptor that is no regular file

    def send() -> None:
        with open(write_end, "wb") as sink:
            sink.write(raw)

    sender = threading.Thread(target=send)
    sender.start()
    with open(read_end, "rb") as pipe:
        parsed = parse_message(pipe)
    sender.join(timeout=30)
    assert [a.data for a in parsed.attachments] == photos
    assert [a.data for a in parse_message(bytearray(raw)).attachments] == photos  # mutable: copied


def test_a_text_part_in_a_charset_that_cannot_decode_is_no_body_to_claim() -> None:
    raw = (b"From: ann@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=B\r\n\r\npreamble\r\n--B\r\n"
           b"Content-Type: text/plain; charset=idna\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\x80\r\n--B--\r\n")
    assert_same_either_way(raw)  # "preamble" is a run of base64 letters once runs are left out from 1 byte


def test_a_body_cut_short_or_damaged_is_decoded_by_the_stdlib_as_before() -> None:
    raw, _ = photo_mail([100_000])
    body_end = raw.rindex(b"\r\n\r\n--")
    cut = raw[:body_end - 3] + raw[body_end:]  # no longer a multiple of four: a padding defect
    damaged = raw[:body_end - 500] + b"*" + raw[body_end - 499:]
    padded_inside = raw[:body_end - 800] + b"=" + raw[body_end - 799:]
    for variant in (cut, damaged, padded_inside):
        assert_same_either_way(variant)
        assert outcome(variant, 1)[-1][0][-1] == stdlib_payloads(variant)[1]


def test_a_run_of_base64_lines_outside_a_base64_body_is_parsed_the_plain_way() -> None:
    run = base64.encodebytes(os.urandom(30_000)).replace(b"\n", b"\r\n")
    for where in ("preamble", "text", "delivery-status", "epilogue", "headers"):
        mail = (b"From: ann@example.org\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=B\r\n"
                + (run if where == "headers" else b"") + b"\r\n"
                + (run if where == "preamble" else b"")
                + b"--B\r\nContent-Type: text/plain\r\n\r\n" + (run if where == "text" else b"hello\r\n")
                + b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
                + (run if where == "delivery-status" else b"Reporting-MTA: dns; x\r\n")
                + b"--B--\r\n" + (run if where == "epilogue" else b""))
        assert_same_either_way(mail)
        if where == "text":
            assert outcome(mail, 1)[4].startswith(run[:76].decode())


def corpus_mail() -> Iterator[Any]:
    for path in sorted(corpus_dir().rglob("*")):
        if path.is_file() and path.suffix in (".eml", ".txt", ".msg"):
            yield pytest.param(path, id=str(path.relative_to(corpus_dir())))


@pytest.mark.corpus
def test_the_corpus_reads_the_same_with_bodies_left_out() -> None:
    """Every message of the shared corpus (the tricky MIME among them), read both ways; at
    least some must take the new path, or the comparison proves nothing."""
    left_out = 0
    paths = [p for p in sorted(corpus_dir().rglob("*")) if p.is_file() and p.suffix in (".eml", ".txt", ".msg")]
    assert len(paths) > 100
    for path in paths:
        raw = path.read_bytes()
        assert outcome(raw, 1) == outcome(raw, NEVER), path
        try:
            parsed = parse_message(raw)
        except MalformedMessage:
            continue
        stdlib = stdlib_payloads(raw.removeprefix(b"\xef\xbb\xbf"))
        assert all(any(a.data == data for data in stdlib) for a in parsed.attachments), path
        left_out += sum(isinstance(a.body, Body) for a in parsed.attachments)
    assert left_out >= 5


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=300, **_SETTINGS)  # type: ignore[arg-type]
@given(raw=message())
def test_generated_mail_reads_the_same_with_bodies_left_out(raw: bytes) -> None:
    assert_same_either_way(raw)


@settings(max_examples=300, **_SETTINGS)  # type: ignore[arg-type]
@given(raw=mutated(st.sampled_from(generated_messages())))
def test_damaged_mail_reads_the_same_with_bodies_left_out(raw: bytes) -> None:
    assert_same_either_way(raw)


@settings(max_examples=40, **_SETTINGS)  # type: ignore[arg-type]
@given(sizes=st.lists(st.integers(1, 40_000), min_size=1, max_size=4), line_end=st.sampled_from([b"\r\n", b"\n"]),
       cut=st.integers(0, 2000))
def test_generated_photo_mail_gives_the_stdlib_bytes(sizes: list[int], line_end: bytes, cut: int) -> None:
    raw, photos = photo_mail(sizes, line_end)
    assert_same_either_way(raw)
    assert [a.data for a in parse_message(raw).attachments] == photos
    assert_same_either_way(raw[:len(raw) - cut])  # cut anywhere near its end: inside the last body too


def test_reading_a_mail_holds_no_decoded_body_and_works_by_chunks_not_lines() -> None:
    raw, photos = photo_mail([1_000_000] * 8)
    tracemalloc.start()
    try:
        parsed = parse_message(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(raw) / 4  # the stdlib's way held every body, decoded, and more
    assert [a.data for a in parsed.attachments] == photos
    steps, _ = steps_while(lambda: parse_message(raw))
    assert steps < raw.count(b"\n")  # the stdlib's way takes many steps for each line
