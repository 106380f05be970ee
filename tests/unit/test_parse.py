"""Inbound MIME into ParsedMessage: built messages, hand-written bytes, and the corpus.

The tests that read the shared corpus carry the ``corpus`` marker and are left out where it
is missing (tests/conftest.py); each behaviour they check is also checked on messages made
in code (tests/support/mime_samples.py), so a fresh clone still covers it."""

from __future__ import annotations

import base64
import email
import email.policy
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import corpus_dir
from tests.support import mime_samples
from tests.support.work import steps_while
from waypost.errors import PermanentError
from waypost.mail.addresses import first_mailbox
from waypost.mail.parse import (
    MalformedMessage,
    MimeLimitExceeded,
    MimeLimits,
    ParsedMessage,
    clean_filename,
    parse_message,
)

JPEG_A = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"A" * 32 + b"\xff\xd9"
JPEG_B = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"B" * 32 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def message(**headers: str) -> EmailMessage:
    built = EmailMessage()
    built["From"] = "Ann <ann@example.org>"
    built["To"] = "journeys@waypost.test"
    for name, value in headers.items():
        built[name.replace("_", "-")] = value
    built.set_content("Photos from the trip.")
    return built


def parse(built: EmailMessage) -> ParsedMessage:
    return parse_message(built.as_bytes())


# --- headers --------------------------------------------------------------------------------


def test_plain_message_headers() -> None:
    parsed = parse(
        message(
            Subject="Nepal, day 3",
            Message_ID="<abc.123@example.org>",
            In_Reply_To="<prev@waypost.test>",
            References="<root@waypost.test> <prev@waypost.test>",
            Date="Sat, 13 Jul 2024 09:04:00 +0545",
        )
    )

    assert parsed.from_address == "ann@example.org"
    assert parsed.from_header == "Ann <ann@example.org>"
    assert parsed.subject == "Nepal, day 3"
    assert parsed.message_id == "<abc.123@example.org>"
    assert parsed.in_reply_to == "<prev@waypost.test>"
    assert parsed.references == ("<root@waypost.test>", "<prev@waypost.test>")
    assert parsed.date == datetime(2024, 7, 13, 3, 19, tzinfo=UTC)
    assert parsed.date is not None
    assert parsed.date.utcoffset() == timedelta(hours=5, minutes=45)
    assert parsed.attachments == ()
    assert parsed.defects == ()


def test_non_ascii_headers_built_by_the_stdlib() -> None:
    built = message(Subject="Grüße aus Österreich 🏔")
    del built["From"]
    built["From"] = Address("Jörg Müller", "jorg", "Bücher.Example")

    parsed = parse(built)

    assert b"=?utf-8?" in built.as_bytes()  # the stdlib really did encode them
    assert parsed.subject == "Grüße aus Österreich 🏔"
    assert parsed.from_header is not None and "Jörg Müller" in parsed.from_header
    # the stdlib writes the domain as an encoded word too, which RFC 2047 §5 forbids in an
    # address, and the DMARC check (which reads the header as sent) finds no domain in it
    assert b"@=?utf-8?q?B=C3=BCcher?=.Example" in built.as_bytes()
    assert parsed.from_address is None


@pytest.mark.parametrize(
    "header",
    ["=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <jorg@xn--bcher-kva.example>", "Jörg Müller <jorg@bücher.example>"],
    ids=["idna", "rfc6532"],
)
def test_international_domains(header: str) -> None:
    parsed = parse_message(f"From: {header}\r\nSubject: x\r\n\r\nbody\r\n".encode())

    assert parsed.from_address == "jorg@xn--bcher-kva.example"
    assert parsed.from_header == "Jörg Müller <jorg@" + header.rsplit("@", 1)[1]


@pytest.mark.parametrize(
    "header",
    [
        "alice@example.org)<bob@evil.example>",
        "alice@example.org <bob@evil.example>",
        "=?utf-8?q?alice=40example=2Eorg?=",  # an address made of an encoded word
        "=?utf-8?q?=3Calice=40example=2Eorg=3E?=",
        "alice@example.org\r\n\t<bob@evil.example>",
        "alice@example.org; bob@evil.example",
        "<bob@evil.example> alice@example.org",
        '"Alice" <alice@example.org>bob@evil.example',
        "alice@example.org[",
        "\\bob@evil.example",
    ],
)
def test_a_from_header_read_two_ways_gives_no_address(header: str) -> None:
    # runtime.authenticate finds the DMARC domain with email.utils.getaddresses on the
    # header as sent; the gate must never see an address in another domain than that one
    raw = f"From: {header}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    legacy = first_mailbox(str(email.message_from_bytes(raw, policy=email.policy.compat32)["From"]))

    assert parse_message(raw).from_address in (None, legacy)
    assert parse_message(raw).from_address is None


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        ("=?ISO-8859-1?Q?Gr=FC=DFe_aus_Wien?=", "Grüße aus Wien"),
        ("=?utf-8?B?0J/RgNC40LLQtdGCINC40Lcg0JrQuNC10LLQsA==?=", "Привет из Киева"),
        ("Re: =?utf-8?q?caf=C3=A9?= =?utf-8?q?_au_lait?=", "Re: café au lait"),
        ("  lots   of\tspace  ", "lots of space"),
        ("", ""),
    ],
)
def test_subject_rfc2047_and_whitespace(header: str, subject: str) -> None:
    raw = f"From: ann@example.org\r\nSubject: {header}\r\n\r\nbody\r\n".encode()

    assert parse_message(raw).subject == subject


def test_missing_subject_is_empty_and_long_subject_is_cut() -> None:
    assert parse_message(b"From: ann@example.org\r\n\r\nbody\r\n").subject == ""
    long = parse(message(Subject="x" * 500)).subject
    assert long == "x" * 200
    # a cut that lands after a space leaves no trailing space (the fuzz property `readable`)
    assert parse(message(Subject="a" * 199 + " bcd")).subject == "a" * 199


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sat, 13 Jul 2024 09:04:00 +0100", datetime(2024, 7, 13, 8, 4, tzinfo=UTC)),
        ("Sat, 13 Jul 2024 09:04:00 -0700", datetime(2024, 7, 13, 16, 4, tzinfo=UTC)),
        ("Tue, 31 Dec 2024 23:30:00 +1400", datetime(2024, 12, 31, 9, 30, tzinfo=UTC)),
        ("Sat, 13 Jul 2024 09:04:00 GMT", datetime(2024, 7, 13, 9, 4, tzinfo=UTC)),
        ("13 Jul 2024 09:04 +0530", datetime(2024, 7, 13, 3, 34, tzinfo=UTC)),
        # -0000 means "zone unknown" (RFC 5322 §3.3): no usable instant
        ("Sat, 13 Jul 2024 09:04:00 -0000", None),
        ("yesterday afternoon", None),
    ],
)
def test_date(value: str, expected: datetime | None) -> None:
    date = parse(message(Date=value)).date

    assert date == expected
    if date is not None:
        assert date.tzinfo is not None


def test_date_keeps_the_senders_zone() -> None:
    date = parse(message(Date="Tue, 31 Dec 2024 23:30:00 +1400")).date

    assert date is not None
    assert date.utcoffset() == timedelta(hours=14)
    assert (date.day, date.hour) == (31, 23)


@pytest.mark.parametrize(
    ("headers", "message_id", "in_reply_to", "references"),
    [
        ({}, None, None, ()),
        ({"Message-ID": "no brackets here"}, None, None, ()),
        ({"Message-ID": " <a@b> trailing junk <c@d>"}, "<a@b>", None, ()),
        ({"In-Reply-To": "Ann's message of Monday <x@y>"}, None, "<x@y>", ()),
        ({"References": "<1@a> junk <2@b>\r\n\t<3@c>"}, None, None, ("<1@a>", "<2@b>", "<3@c>")),
    ],
)
def test_message_ids(
    headers: dict[str, str], message_id: str | None, in_reply_to: str | None, references: tuple[str, ...]
) -> None:
    raw = "From: ann@example.org\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    parsed = parse_message((raw + "\r\nbody\r\n").encode())

    assert (parsed.message_id, parsed.in_reply_to, parsed.references) == (message_id, in_reply_to, references)


@pytest.mark.parametrize(
    ("from_header", "from_address"),
    [
        ("Ann <ann@Example.ORG>", "ann@example.org"),
        ("ann@example.org, bob@example.org", None),
        ("friends: ann@example.org, bob@example.org;", None),
        ("undisclosed-recipients:;", None),
        ("not an address at all", None),
    ],
)
def test_from_address(from_header: str, from_address: str | None) -> None:
    raw = f"From: {from_header}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    parsed = parse_message(raw)

    assert parsed.from_address == from_address
    assert parsed.from_header is not None


def test_missing_from() -> None:
    parsed = parse_message(b"Subject: no sender\r\n\r\nbody\r\n")

    assert (parsed.from_address, parsed.from_header) == (None, None)


# --- attachments ----------------------------------------------------------------------------


def test_jpeg_attachments_in_order() -> None:
    built = message(Subject="two photos")
    built.add_attachment(JPEG_A, maintype="image", subtype="jpeg", filename="first.jpg")
    built.add_attachment(JPEG_B, maintype="image", subtype="jpeg", filename="second.JPG")

    attachments = parse(built).attachments

    assert [(a.position, a.filename, a.content_type, a.data) for a in attachments] == [
        (0, "first.jpg", "image/jpeg", JPEG_A),
        (1, "second.JPG", "image/jpeg", JPEG_B),
    ]


def test_inline_image_counts_as_attachment() -> None:
    built = message(Subject="inline")
    built.add_alternative('<p><img src="cid:pic1@example.org"></p>', subtype="html")
    html = built.get_payload()[1]
    html.add_related(PNG, maintype="image", subtype="png", cid="<pic1@example.org>")
    built.add_attachment(JPEG_A, maintype="image", subtype="jpeg", filename="a.jpg")

    attachments = parse(built).attachments

    assert [(a.position, a.filename, a.content_type, a.data) for a in attachments] == [
        (0, None, "image/png", PNG),
        (1, "a.jpg", "image/jpeg", JPEG_A),
    ]


def test_image_inside_forwarded_message() -> None:
    inner = EmailMessage()
    inner["From"] = "bob@example.org"
    inner["Subject"] = "the original"
    inner.set_content("see photo")
    inner.add_attachment(JPEG_B, maintype="image", subtype="jpeg", filename="inner.jpg")
    outer = message(Subject="Fwd: the original")
    outer.add_attachment(JPEG_A, maintype="image", subtype="jpeg", filename="outer.jpg")
    outer.add_attachment(inner)

    parsed = parse(outer)

    assert parsed.from_address == "ann@example.org"  # the forwarder, not the inner sender
    assert parsed.subject == "Fwd: the original"
    assert [(a.position, a.filename, a.data) for a in parsed.attachments] == [
        (0, "outer.jpg", JPEG_A),
        (1, "inner.jpg", JPEG_B),
    ]


def test_non_ascii_filename_built_by_the_stdlib() -> None:
    built = message()
    built.add_attachment(JPEG_A, maintype="image", subtype="jpeg", filename="Straße café.jpg")

    assert b"filename*=utf-8''" in built.as_bytes()
    assert parse(built).attachments[0].filename == "Straße café.jpg"


RFC2231_MESSAGE = b"""\
From: ann@example.org
Subject: filenames
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

hi
--b
Content-Type: image/jpeg
Content-Disposition: attachment; filename*=iso-8859-1''Gr%FC%DFe.jpg
Content-Transfer-Encoding: base64

/9j/4AAAAAAAAAAAAAAAAAAAAAAAAAAA/9k=
--b
Content-Type: image/jpeg; name*0*=utf-8''Stra%C3%9Fe; name*1="_2.jpg"
Content-Transfer-Encoding: base64

/9j/4AAAAAAAAAAAAAAAAAAAAAAAAAAA/9k=
--b
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="=?utf-8?q?K=C3=B6ln.jpg?="
Content-Transfer-Encoding: base64

/9j/4AAAAAAAAAAAAAAAAAAAAAAAAAAA/9k=
--b--
"""


def test_rfc2231_and_encoded_filenames() -> None:
    attachments = parse_message(RFC2231_MESSAGE).attachments

    assert [(a.position, a.filename, a.content_type) for a in attachments] == [
        (0, "Grüße.jpg", "image/jpeg"),
        (1, "Straße_2.jpg", "image/jpeg"),
        (2, "Köln.jpg", "application/octet-stream"),
    ]
    assert all(a.data.startswith(b"\xff\xd8") and a.data.endswith(b"\xff\xd9") for a in attachments)


def test_text_parts_and_empty_images_are_not_attachments() -> None:
    built = message()
    built.add_alternative("<p>hello</p>", subtype="html")
    built.add_attachment(b"", maintype="image", subtype="jpeg", filename="empty.jpg")

    assert parse(built).attachments == ()


def test_text_file_sent_as_attachment_is_kept() -> None:
    built = message()
    built.add_attachment("route notes", filename="notes.txt")

    [attachment] = parse(built).attachments
    assert (attachment.filename, attachment.content_type) == ("notes.txt", "text/plain")
    assert attachment.data.strip() == b"route notes"


def test_bad_base64_costs_no_more_than_the_part() -> None:
    raw = RFC2231_MESSAGE.replace(b"/9j/4AAAAAAAAAAAAAAAAAAAAAAAAAAA/9k=", b"!!!not base64 at all", 1)

    parsed = parse_message(raw)

    assert parsed.subject == "filenames"
    assert len(parsed.attachments) == 3


def test_parsed_message_is_frozen() -> None:
    parsed = parse(message(Subject="x"))

    with pytest.raises(AttributeError):
        parsed.subject = "y"  # type: ignore[misc]


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n\r\n\t",
        b"\r\n\r\nbody without any header",
        b"just some text\nwith no header section\n",
        b"\x00\x01\x02\x03 binary garbage \xff\xfe",
        bytes(range(256)),
    ],
    ids=["empty", "blank", "body-only", "prose", "binary", "all-bytes"],
)
def test_unreadable_bytes_raise_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_message(raw)


def test_malformed_message_is_permanent() -> None:
    assert issubclass(MalformedMessage, PermanentError)


# --- corpus replay --------------------------------------------------------------------------


def corpus_messages() -> list[Path]:
    root = corpus_dir()
    files = [path for path in (root / "mime").rglob("*") if path.is_file()]
    for category in ("dsn", "arf", "dkim"):
        files += [path for path in (root / category).rglob("*") if path.is_file() and path.suffix in (".eml", ".txt")]
    return sorted(files)


def assert_sane(parsed: ParsedMessage) -> None:
    """What every parse gives, whatever the message: a short subject, an aware date, the
    attachments numbered in order and none of them empty."""
    assert isinstance(parsed.subject, str) and len(parsed.subject) <= 200
    assert parsed.date is None or parsed.date.tzinfo is not None
    assert [a.position for a in parsed.attachments] == list(range(len(parsed.attachments)))
    assert all(a.data for a in parsed.attachments)


@pytest.mark.corpus
def test_corpus_replay_raises_nothing_but_malformed() -> None:
    files = corpus_messages()
    problems: list[str] = []
    parsed_count = 0
    for path in files:
        try:
            parsed = parse_message(path.read_bytes())
        except MalformedMessage:
            continue
        except Exception as err:  # noqa: BLE001 - any other exception is the failure we report
            problems.append(f"{path.name}: {type(err).__name__}: {err}")
            continue
        parsed_count += 1
        assert_sane(parsed)

    assert not problems, "\n".join(problems)
    assert len(files) > 50, f"only {len(files)} corpus files seen"
    assert parsed_count > 50, f"only {parsed_count} corpus files parsed"


GENERATED = mime_samples.generated_messages()


@pytest.mark.parametrize("raw", GENERATED.values(), ids=GENERATED.keys())
def test_generated_replay_parses_every_message(raw: bytes) -> None:
    # the corpus replay's contract on messages made in code, every one of them readable
    assert_sane(parse_message(raw))


def mutated(raw: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    """``raw`` after each (operation, position, span) edit: flip a byte, delete or double a
    run of bytes, or cut the message there."""
    damaged = bytearray(raw)
    for operation, at, span in edits:
        at %= len(damaged) + 1
        if operation == "flip" and at < len(damaged):
            damaged[at] ^= 0xA5
        elif operation == "delete":
            del damaged[at:at + span]
        elif operation == "double":
            damaged[at:at] = damaged[at:at + span]
        elif operation == "cut":
            del damaged[at:]
    return bytes(damaged)


_EDIT = st.tuples(st.sampled_from(["flip", "delete", "double", "cut"]), st.integers(0, 400_000), st.integers(1, 80))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(GENERATED)), edits=st.lists(_EDIT, min_size=1, max_size=6))
def test_damaged_generated_messages_raise_nothing_but_malformed(name: str, edits: list[tuple[str, int, int]]) -> None:
    try:
        parsed = parse_message(mutated(GENERATED[name], edits))
    except MalformedMessage:
        return
    assert_sane(parsed)


def assert_chunked_reading_is_one_shot(raw: bytes, path: Path) -> None:
    """parse_message feeds the parser in 64 KB chunks (bytes or a file); the result must be
    what email.message_from_bytes makes of the whole message at once."""
    whole = email.message_from_bytes(raw.removeprefix(b"\xef\xbb\xbf"), policy=email.policy.default)
    from_bytes = parse_message(raw)
    with path.open("rb") as handle:
        from_file = parse_message(handle)
    assert from_bytes == from_file, path.name
    expected = [part.get_payload(decode=True) for part in whole.walk()
                if not part.is_multipart() and isinstance(part.get_payload(decode=True), bytes)]
    assert all(any(a.data == data for data in expected) for a in from_bytes.attachments), path.name


@pytest.mark.corpus
def test_chunked_reading_gives_what_the_one_shot_parser_gives() -> None:
    compared = 0
    for path in corpus_messages():
        raw = path.read_bytes()
        try:
            parse_message(raw)
        except MalformedMessage:
            continue
        assert_chunked_reading_is_one_shot(raw, path)
        compared += 1
    assert compared > 50


@pytest.mark.parametrize("raw", GENERATED.values(), ids=GENERATED.keys())
def test_chunked_reading_of_generated_messages_gives_what_the_one_shot_parser_gives(
    raw: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(raw)
    assert_chunked_reading_is_one_shot(raw, path)


def test_generated_messages_cross_the_chunk_edges() -> None:
    # the chunked-reading cases above only test chunking when messages span several chunks
    assert sum(len(raw) > 64 * 1024 for raw in GENERATED.values()) >= 2


def test_chunk_boundaries_inside_lines_and_crlf_pairs() -> None:
    message = EmailMessage()
    message["From"] = "ann@example.org"
    message["Subject"] = "big"
    message.set_content("x")
    payload = bytes(range(256)) * 2000  # 512 KB: several chunks of base64 lines
    message.add_attachment(payload, maintype="application", subtype="octet-stream", filename="blob.bin")
    raw = message.as_bytes(policy=email.policy.SMTP)  # CRLF line ends

    for shift in (0, 1, 37, 76):  # move where the 64 KB chunk edges fall
        parsed = parse_message(b"X-Pad: " + b"p" * shift + b"\r\n" + raw)
        assert parsed.attachments[0].data == payload and parsed.subject == "big"


@pytest.mark.corpus
def test_corpus_inline_image_sample() -> None:
    # relay_inline_image_incoming.eml carries an inline image; losing it would lose a photo
    parsed = parse_message((corpus_dir() / "mime" / "relay_inline_image_incoming.eml").read_bytes())

    assert any(a.content_type.startswith("image/") for a in parsed.attachments)


def test_inline_image_referenced_by_content_id_is_an_attachment() -> None:
    # the corpus sample's shape: related(alternative(text, html), image/png inline with a Content-ID)
    parsed = parse_message(mime_samples.inline_image_message())

    assert [(a.position, a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        (0, "view.png", "image/png", mime_samples.PNG_1X1),
    ]
    assert parsed.text.startswith("Here is the view:")


def test_zone_of_parsed_date_converts() -> None:
    # a sanity check that the stored instant converts back to the sender's wall clock
    date = parse(message(Date="Mon, 01 Jan 2024 00:05:00 +1400")).date

    assert date is not None
    assert date.astimezone(timezone(timedelta(hours=14))).replace(tzinfo=None) == datetime(2024, 1, 1, 0, 5)


def test_a_leading_byte_order_mark_is_ignored() -> None:
    parsed = parse_message(b"\xef\xbb\xbfFrom: ann@example.org\r\nSubject: hi\r\n\r\nbody\r\n")
    assert parsed.from_address == "ann@example.org" and parsed.subject == "hi"


# --- limits ---------------------------------------------------------------------------------


def multipart(parts: list[bytes], *, headers: bytes = b"", boundary: bytes = b"b") -> bytes:
    """A multipart/mixed message holding ``parts`` (each a part's raw headers and body)."""
    lines = [b"From: ann@example.org", b"Subject: parts", b"MIME-Version: 1.0",
             b'Content-Type: multipart/mixed; boundary="' + boundary + b'"']
    head = b"\r\n".join(lines) + b"\r\n" + headers + b"\r\n"
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return head + body + b"--" + boundary + b"--\r\n"


def text_parts(count: int) -> bytes:
    """A message with ``count`` MIME parts in all: the message itself and count - 1 text parts."""
    return multipart([b"Content-Type: text/plain\r\n\r\npart %d" % i for i in range(count - 1)])


def nested(depth: int) -> bytes:
    """Multiparts nested so that the innermost text part sits ``depth`` levels down."""
    body = b"Content-Type: text/plain\r\n\r\nthe bottom"
    for level in range(depth - 1, 0, -1):
        boundary = b"b%d" % level
        body = (b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n--' + boundary + b"\r\n"
                + body + b"\r\n--" + boundary + b"--")
    return multipart([body], boundary=b"b0")


def forwarded(depth: int) -> bytes:
    """Messages forwarded as the whole body of messages (Content-Type: message/rfc822): each
    is one level, the innermost ``depth`` levels down."""
    inner = b"From: bob@example.org\r\nSubject: bottom\r\n\r\nthe bottom"
    for _ in range(depth - 1):
        inner = b"From: bob@example.org\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    return b"From: ann@example.org\r\nSubject: fwd\r\nContent-Type: message/rfc822\r\n\r\n" + inner


def refused(raw: bytes, limits: MimeLimits | None = None) -> MimeLimitExceeded:
    with pytest.raises(MimeLimitExceeded) as caught:
        parse_message(raw, limits)
    return caught.value


def test_default_limits_are_the_settings_defaults() -> None:
    from waypost.config import MimeSettings

    assert MimeLimits() == MimeLimits.from_settings(MimeSettings())
    custom = MimeSettings(max_parts=7, max_depth=3, max_header_bytes=4096, max_attachment_bytes=99,
                          max_filename_length=20)
    assert MimeLimits.from_settings(custom) == MimeLimits(max_parts=7, max_depth=3, max_header_bytes=4096,
                                                          max_attachment_bytes=99, max_filename_length=20)


def test_limit_refusals_are_malformed_messages() -> None:
    assert issubclass(MimeLimitExceeded, MalformedMessage)


@pytest.mark.parametrize("limit", [10, 200])
def test_parts_just_under_the_limit_pass_and_one_more_is_refused(limit: int) -> None:
    limits = MimeLimits(max_parts=limit)
    parsed = parse_message(text_parts(limit), limits)
    assert parsed.subject == "parts"

    error = refused(text_parts(limit + 1), limits)
    assert error.setting == "mime.max_parts"
    assert f"more than {limit:,} MIME parts" in str(error) and f"the limit is {limit:,} (mime.max_parts)" in str(error)


def test_a_100000_part_message_is_refused_at_part_201_without_building_the_rest() -> None:
    raw = text_parts(100_000)  # 4.4 MB; the stdlib alone needs 20 s and 55 MB to build it all
    tracemalloc.start()
    try:
        error = refused(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert "reading stopped at part 201," in str(error) and "4.3 MiB" in str(error)
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    # the work done is that of the first parts: 100,000 parts cost what 250 do
    few, _ = steps_while(lambda: parse_message(text_parts(250)))
    many, also_refused = steps_while(lambda: parse_message(raw))
    assert isinstance(also_refused, MimeLimitExceeded) and many <= 1.1 * few, (few, many)


def test_part_limit_holds_for_a_message_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "many.eml"
    path.write_bytes(text_parts(10_000))

    with path.open("rb") as handle, pytest.raises(MimeLimitExceeded, match="part 201, in a message of 4"):
        parse_message(handle)


@pytest.mark.parametrize("build", [nested, forwarded], ids=["multipart", "message-rfc822"])
def test_depth_just_under_the_limit_passes_and_one_more_is_refused(build: Callable[[int], bytes]) -> None:
    limits = MimeLimits(max_depth=4)
    assert parse_message(build(4), limits).from_address == "ann@example.org"

    error = refused(build(5), limits)
    assert error.setting == "mime.max_depth"
    assert "nests MIME parts 5 levels deep" in str(error) and "the limit is 4 (mime.max_depth)" in str(error)


def test_default_depth_limit_is_ten_levels() -> None:
    parse_message(nested(10))
    assert "11 levels deep" in str(refused(nested(11)))


def header_section(size: int) -> bytes:
    """A top-level header section of exactly ``size`` bytes (CRLF line ends, no blank line)."""
    head = b"From: ann@example.org\r\nSubject: padded\r\n"
    pad = size - len(head) - len(b"X-Pad: \r\n")
    return head + b"X-Pad: " + b"p" * pad + b"\r\n"


def test_header_section_just_under_the_limit_passes_and_one_byte_more_is_refused() -> None:
    limits = MimeLimits(max_header_bytes=4096)
    assert parse_message(header_section(4096) + b"\r\nbody\r\n", limits).subject == "padded"

    error = refused(header_section(4097) + b"\r\nbody\r\n", limits)
    assert error.setting == "mime.max_header_bytes"
    assert "the message's header section has at least 4,097 bytes" in str(error)
    assert "'X-Pad'" in str(error) and "the limit is 4 KiB (mime.max_header_bytes)" in str(error)


def test_each_parts_header_section_has_the_limit() -> None:
    limits = MimeLimits(max_header_bytes=2048)
    fits = b"Content-Type: text/plain\r\nX-Pad: " + b"p" * 1900 + b"\r\n\r\nhi"
    over = b"Content-Type: text/plain\r\nX-Pad: " + b"p" * 2100 + b"\r\n\r\nhi"

    parse_message(multipart([fits, fits, fits]), limits)  # 3 x 1.9 KB: each section counts alone
    assert "the header section of part 3" in str(refused(multipart([fits, over]), limits))


def test_default_header_limit_is_256_kib() -> None:
    parse_message(header_section(256 * 1024) + b"\r\nbody\r\n")
    assert "256 KiB (mime.max_header_bytes)" in str(refused(header_section(256 * 1024 + 1) + b"\r\nbody\r\n"))


def jpeg_part(name: str, size: int, content_type: str = "image/jpeg") -> bytes:
    data = base64.encodebytes(b"\xff\xd8" + b"j" * (size - 4) + b"\xff\xd9")
    return (f'Content-Type: {content_type}\r\nContent-Disposition: attachment; filename="{name}"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + data


def test_attachments_past_the_decoded_total_are_left_out_and_named() -> None:
    limits = MimeLimits(max_attachment_bytes=100)
    raw = multipart([jpeg_part("a.jpg", 60), jpeg_part("b.jpg", 50), jpeg_part("c.jpg", 40),
                     jpeg_part("d.jpg", 1)])

    parsed = parse_message(raw, limits)

    # a + c fill the 100 bytes exactly; b would pass them, d would too
    assert [(a.position, a.filename, len(a.data)) for a in parsed.attachments] == [(0, "a.jpg", 60), (1, "c.jpg", 40)]
    assert parsed.skipped == ("b.jpg: over the 100 bytes attachment total",
                              "d.jpg: over the 100 bytes attachment total")


def test_attachment_total_counts_decoded_bytes_and_names_unnamed_parts() -> None:
    limits = MimeLimits(max_attachment_bytes=2 * 1024 * 1024)
    unnamed = b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(
        PNG + b"\x00" * 1024 * 1024)
    raw = multipart([jpeg_part("big.jpg", 1024 * 1024 + 512), unnamed])

    parsed = parse_message(raw, limits)

    assert [a.filename for a in parsed.attachments] == ["big.jpg"]
    assert parsed.skipped == ("an attachment (image/png): over the 2 MiB attachment total",)


def test_one_mime_header_has_a_length_limit() -> None:
    name = "x" * (4096 - len('image/jpeg; name=""'))
    fits = f'Content-Type: image/jpeg; name="{name}"\r\n\r\n'.encode() + JPEG_A
    over = f'Content-Type: image/jpeg; name="{name}y"\r\n\r\n'.encode() + JPEG_A

    assert len(parse_message(multipart([fits])).attachments) == 1
    error = refused(multipart([over]))
    assert "'Content-Type' header of part 2 has 4,097 characters" in str(error)
    assert "MimeLimits.max_mime_header_chars" in str(error)


def test_hostile_mime_headers_cost_a_bounded_time() -> None:
    # policy.default's header parser is quadratic on values like these: 40 parts of 4,000
    # '"' once took the parser about half a minute; the per-message total stops it early
    quotes = b"Content-Type: text/plain; a=" + b'"' * 3980 + b"\r\n\r\nx"

    error = refused(multipart([quotes] * 40))

    assert "MimeLimits.max_mime_header_total" in str(error)
    # reading stops at the total, so twice the parts cost no more work
    forty, _ = steps_while(lambda: parse_message(multipart([quotes] * 40)))
    eighty, _ = steps_while(lambda: parse_message(multipart([quotes] * 80)))
    assert eighty <= 1.05 * forty, (forty, eighty)


def test_a_huge_from_header_is_refused_at_once() -> None:
    # 100 KB of '"' in a From header kept the stdlib's address parser busy for minutes
    raw = b"From: " + b'"' * 100_000 + b"\r\nSubject: x\r\n\r\nbody\r\n"

    error = refused(raw)

    assert "'From' header of part 1 has 100,000 characters" in str(error)
    # refused before the address parser sees it: twenty times the header, the same work
    small, _ = steps_while(lambda: parse_message(b"From: " + b'"' * 5_000 + b"\r\n\r\nbody\r\n"))
    large, _ = steps_while(lambda: parse_message(raw))
    assert large <= 2 * small, (small, large)


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Type: multipart/mixed; boundary=b " + b"(" * 3000,  # RecursionError in the stdlib
        b"Content-Type: multipart/mixed; boundary=b; x*=idna''%41",  # UnicodeError in the stdlib
    ],
    ids=["nested-comments", "idna-charset"],
)
def test_an_unreadable_mime_header_costs_the_header_not_the_message(header: bytes) -> None:
    raw = b"From: ann@example.org\r\nSubject: hostile\r\n" + header + b"\r\n\r\n--b\r\n\r\nhi\r\n--b--\r\n"

    parsed = parse_message(raw)

    assert parsed.subject == "hostile" and "HeaderDefect" in parsed.defects
    assert parsed.text.startswith("--b")  # no Content-Type left: the body is one text


def test_an_unreadable_disposition_costs_the_file_name_only() -> None:
    part = (b"Content-Type: image/jpeg\r\nContent-Disposition: attachment; filename*=idna''%41.jpg\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(JPEG_A))

    [attachment] = parse_message(multipart([part])).attachments

    assert (attachment.filename, attachment.data) == (None, JPEG_A)


def test_many_groups_in_from_cost_the_address_not_the_message() -> None:
    # email.utils.getaddresses recurses once per "group:" and raises RecursionError
    parsed = parse_message(b"From: " + b"g:" * 1500 + b"\r\nSubject: groups\r\n\r\nbody\r\n")

    assert (parsed.from_address, parsed.subject) == (None, "groups")


# --- file names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\a.jpg", "a.jpg"),
        ("C:a.jpg", "a.jpg"),
        ("photos/2024/", "2024"),
        ("..\\..\\", None),
        ("\u202egpj.exe", "gpj.exe"),
        ("IMG\u2066_1\u2069.jpg", "IMG_1.jpg"),
        ("a\x01b\x7f\x00.jpg", "ab.jpg"),
        ("tab\there\r\nnewline.jpg", "tab here newline.jpg"),
        ("  my   photo  .jpg  ", "my photo .jpg"),
        (".hidden.jpg", "hidden.jpg"),
        ("...", None),
        ("", None),
        ("   ", None),
        ("a..b...jpg", "a.b.jpg"),
        ("photo.jpg.", "photo.jpg"),
        ("Cafe\u0301.jpg", "Caf\u00e9.jpg"),  # NFC
        ("=?utf-8?q?K=C3=B6ln.jpg?=", "Köln.jpg"),
        ("=?utf-8?b?TcO8bmNoZW4uanBn?=", "München.jpg"),
        ("=?utf-8?q?a?= =?utf-8?q?b.jpg?=", "ab.jpg"),  # the space between words is not text
        ("=?x-unknown?q?abc?=.jpg", "abc.jpg"),
        ("=?utf-8?b?!!!?=", None),  # broken base64 decodes to nothing
        ("=?utf-8?q?caf=C3=A9?=.jpg", "café.jpg"),
        ("=?utf-8?q?%2E%2E=2F=2E=2Fx.jpg?=", "x.jpg"),  # a path hidden in an encoded word
        ("Gr\udcfc\udcdfe.jpg", "Gr\ufffd\ufffde.jpg"),  # raw latin-1 bytes kept as surrogates
        ("Gr\udcc3\udcbc\udcc3\udc9fe.jpg", "Grüße.jpg"),  # raw UTF-8 kept as surrogates
    ],
)
def test_clean_filename(name: str, clean: str | None) -> None:
    assert clean_filename(name) == clean


def test_long_names_are_cut_keeping_their_extension() -> None:
    assert clean_filename("x" * 500 + ".jpeg") == "x" * 115 + ".jpeg"
    assert clean_filename("x" * 500 + ".jpeg", 20) == "x" * 15 + ".jpeg"
    assert clean_filename("y" * 500) == "y" * 120
    assert clean_filename("z" * 200 + ".not an extension", 30) == "z" * 30
    cut = clean_filename("ü" * 300 + ".heic")
    assert cut is not None and len(cut) == 120 and cut.endswith(".heic")


RFC2231_HOSTILE = b"""\
From: ann@example.org
Subject: names
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: application/octet-stream
Content-Disposition: attachment; filename*=UTF-8''%E2%80%AEgpj.exe

MZ
--b
Content-Type: image/jpeg
Content-Disposition: attachment; filename="../../etc/passwd"

\xff\xd8x\xff\xd9
--b
Content-Type: image/jpeg; name="C:\\\\Users\\\\x\\\\a.jpg"

\xff\xd8y\xff\xd9
--b
Content-Type: image/jpeg
Content-Disposition: attachment; filename==?utf-8?q?K=C3=B6ln.jpg?=

\xff\xd8z\xff\xd9
--b
Content-Type: image/jpeg
Content-Disposition: attachment; filename*=x-foo''abc%FF.jpg

\xff\xd8w\xff\xd9
--b
Content-Type: image/jpeg
Content-Disposition: attachment; filename*=utf-8''%ZZ%E2.jpg

\xff\xd8v\xff\xd9
--b
Content-Type: image/jpeg
Content-Disposition: attachment; filename="Gr\xfc\xdfe \x01.jpg"

\xff\xd8u\xff\xd9
--b
Content-Type: image/jpeg
Content-Disposition: attachment; filename="=?utf-8?b?!!!?="

\xff\xd8t\xff\xd9
--b
Content-Type: image/jpeg
Content-Disposition: attachment; filename*0*=utf-8''long%20; filename*1=""" + b"n" * 300 + b""".jpg

\xff\xd8s\xff\xd9
--b--
"""


def test_hostile_file_names_in_a_message() -> None:
    names = [a.filename for a in parse_message(RFC2231_HOSTILE, MimeLimits(max_filename_length=40)).attachments]

    assert names == ["gpj.exe", "passwd", "a.jpg", "Köln.jpg", "abc\ufffd.jpg", "%ZZ\ufffd.jpg",
                     "Gr\ufffd\ufffde .jpg", None, "long " + "n" * 31 + ".jpg"]
    for name in filter(None, names):
        assert name.isprintable() and len(name) <= 40
        name.encode("utf-8")  # no surrogates left


# --- archives and Outlook's TNEF ------------------------------------------------------------


TNEF_NOTE = "winmail.dat: Outlook's TNEF format is not read; send the photos as ordinary attachments"


@pytest.mark.corpus
def test_tnef_from_outlook_becomes_a_note_not_an_attachment() -> None:
    parsed = parse_message((corpus_dir() / "mime" / "mimekit_tnef_ukr.eml").read_bytes())

    assert parsed.attachments == ()
    assert parsed.notes == (TNEF_NOTE,)


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_generated_tnef_from_outlook_becomes_a_note_not_an_attachment(line_end: bytes) -> None:
    raw = mime_samples.outlook_tnef_message().replace(b"\r\n", line_end)

    parsed = parse_message(raw)

    assert parsed.attachments == ()
    assert parsed.notes == (TNEF_NOTE,)
    assert parsed.subject == "day 6" and parsed.text.startswith("шостий")


def test_the_generated_tnef_stream_opens_with_the_tnef_signature() -> None:
    stream = mime_samples.tnef_stream()
    assert stream[:4] == bytes([0x78, 0x9F, 0x3E, 0x22])  # 0x223E9F78, little-endian
    assert stream[6:11] == bytes([0x01, 0x06, 0x90, 0x08, 0x00])  # attTnefVersion, message level


@pytest.mark.parametrize(
    ("content_type", "filename", "note"),
    [
        ("application/ms-tnef", None, "winmail.dat: Outlook's TNEF"),
        ("application/octet-stream", "WINMAIL.DAT", "WINMAIL.DAT: Outlook's TNEF"),
        ("application/zip", "trip.zip", "trip.zip: archives are not opened"),
        ("application/octet-stream", "photos.7z", "photos.7z: archives are not opened"),
        ("application/x-rar-compressed", None, "application/x-rar-compressed: archives are not opened"),
        ("application/gzip", "day1.tar.gz", "day1.tar.gz: archives are not opened"),
        ("image/jpeg", "sneaky.zip", "sneaky.zip: archives are not opened"),
    ],
)
def test_archives_and_tnef_are_not_opened(content_type: str, filename: str | None, note: str) -> None:
    built = message()
    maintype, subtype = content_type.split("/")
    built.add_attachment(b"PK\x03\x04 whatever", maintype=maintype, subtype=subtype, filename=filename)
    built.add_attachment(JPEG_A, maintype="image", subtype="jpeg", filename="kept.jpg")

    parsed = parse(built)

    assert [a.filename for a in parsed.attachments] == ["kept.jpg"]
    assert len(parsed.notes) == 1 and parsed.notes[0].startswith(note)


@pytest.mark.parametrize(
    ("data", "note"),
    [
        pytest.param(None, "Outlook's TNEF format is not read", marks=pytest.mark.corpus),  # the corpus's winmail.dat
        (mime_samples.tnef_stream(), "Outlook's TNEF format is not read"),
        (b"PK\x03\x04\x14\x00rest of a zip", "archives are not opened"),
        (b"\x1f\x8b\x08\x00gzip", "archives are not opened"),
        (b"\x00" * 257 + b"ustar\x0000", "archives are not opened"),
    ],
    ids=["corpus tnef", "tnef", "zip", "gzip", "tar"],
)
def test_generic_files_are_recognised_by_their_first_bytes(data: bytes | None, note: str) -> None:
    built = message()
    data = data or (corpus_dir() / "mime" / "mimekit_winmail.dat").read_bytes()
    built.add_attachment(data, maintype="application", subtype="octet-stream", filename="attachment.bin")

    parsed = parse(built)

    assert parsed.attachments == ()
    assert len(parsed.notes) == 1 and parsed.notes[0].startswith(f"attachment.bin: {note}")


def test_a_photo_is_never_sniffed() -> None:
    built = message()
    built.add_attachment(b"PK\x03\x04 not really a jpeg", maintype="image", subtype="jpeg", filename="a.jpg")

    assert [a.filename for a in parse(built).attachments] == ["a.jpg"]


@pytest.mark.corpus
def test_zipped_dmarc_report_from_the_corpus_is_a_note() -> None:
    parsed = parse_message((corpus_dir() / "dmarc" / "rua" / "twilight.eml").read_bytes())

    assert parsed.attachments == ()
    assert parsed.notes == ("google.com!twlnet.com!1549756800!1549843199.zip: archives are not opened;"
                            " attach the photos themselves",)


@pytest.mark.parametrize("kind", ["zip", "gzip"])
def test_compressed_dmarc_report_is_a_note(kind: str) -> None:
    raw, name = mime_samples.dmarc_report_message(kind)

    parsed = parse_message(raw)

    assert parsed.attachments == ()
    assert parsed.notes == (f"{name}: archives are not opened; attach the photos themselves",)


# --- hostile and broken headers -------------------------------------------------------------


def test_raw_non_utf8_headers_are_decoded_with_replacement() -> None:
    raw = (b"From: J\xf6rg M\xfcller <jorg@example.org>\r\nSubject: Gr\xfc\xdfe aus Wien\r\n"
           b"Message-ID: <caf\xe9@example.org>\r\n\r\nbody\r\n")

    parsed = parse_message(raw)

    assert parsed.from_address == "jorg@example.org"
    assert parsed.subject == "Gr\ufffd\ufffde aus Wien"
    assert parsed.from_header is not None and "\ufffd" in parsed.from_header
    assert parsed.message_id is None  # a msg-id is ASCII (RFC 5322 §3.6.4)
    for text in (parsed.subject, parsed.from_header):
        text.encode("utf-8")


def test_raw_utf8_headers_are_read_as_utf8() -> None:
    parsed = parse_message("From: Jörg <jorg@example.org>\r\nSubject: Säying Hello\r\n\r\nbody\r\n".encode())

    assert parsed.subject == "Säying Hello" and parsed.from_header == "Jörg <jorg@example.org>"


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        ("=?x-unknown?q?abc?=", "abc"),
        ("=?utf-8?b?!!!?=", ""),
        ("=?utf-8?q?a=FF?=", "a\ufffd"),
        ("=?utf-8?q?nul=00byte?= and\x01 bell\x07", "nulbyte and bell"),
        ("=?utf-8?q?=E2=80=AEgpj.exe?=", "gpj.exe"),  # a bidi override in the subject
        ("An encoded newline=?utf-8?q?=0A?=", "An encoded newline"),
    ],
)
def test_hostile_subjects_never_raise(header: str, subject: str) -> None:
    raw = f"From: ann@example.org\r\nSubject: {header}\r\n\r\nbody\r\n".encode()

    assert parse_message(raw).subject == subject


def test_a_long_subject_is_read_from_its_start_only() -> None:
    words = " ".join(["=?utf-8?q?w=C3=B6rd?="] * 20_000)  # 420 KB, past the header limit unless cut
    parsed = parse_message(f"From: ann@example.org\r\nSubject: {words}\r\n\r\nbody\r\n".encode(),
                           MimeLimits(max_header_bytes=1024 * 1024))

    assert parsed.subject == ("wörd" * 200)[:200]


def test_references_keep_the_root_and_the_latest() -> None:
    ids = [f"<{n}@example.org>" for n in range(500)]
    raw = f"From: ann@example.org\r\nReferences: {' '.join(ids)}\r\n\r\nbody\r\n".encode()

    references = parse_message(raw).references

    assert len(references) == 100 and references[0] == ids[0] and references[1:] == tuple(ids[-99:])
