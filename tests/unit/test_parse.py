"""Inbound MIME into ParsedMessage: built messages, hand-written bytes, and the corpus."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import corpus_dir
from waypost.errors import PermanentError
from waypost.mail.parse import MalformedMessage, ParsedMessage, parse_message

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
    assert parsed.from_address == "jorg@xn--bcher-kva.example"
    assert parsed.from_header is not None and "Jörg Müller" in parsed.from_header


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
        assert isinstance(parsed.subject, str) and len(parsed.subject) <= 200
        assert parsed.date is None or parsed.date.tzinfo is not None
        assert [a.position for a in parsed.attachments] == list(range(len(parsed.attachments)))
        assert all(a.data for a in parsed.attachments)

    assert not problems, "\n".join(problems)
    assert len(files) > 50, f"only {len(files)} corpus files seen"
    assert parsed_count > 50, f"only {parsed_count} corpus files parsed"


def test_chunked_reading_gives_what_the_one_shot_parser_gives() -> None:
    # parse_message feeds the parser in 64 KB chunks (bytes or a file); the result must be
    # what email.message_from_bytes makes of the whole message at once
    compared = 0
    for path in corpus_messages():
        raw = path.read_bytes()
        whole = email.message_from_bytes(raw.removeprefix(b"\xef\xbb\xbf"), policy=email.policy.default)
        try:
            from_bytes = parse_message(raw)
        except MalformedMessage:
            continue
        with path.open("rb") as handle:
            from_file = parse_message(handle)
        assert from_bytes == from_file, path.name
        expected = [part.get_payload(decode=True) for part in whole.walk()
                    if not part.is_multipart() and isinstance(part.get_payload(decode=True), bytes)]
        assert all(any(a.data == data for data in expected) for a in from_bytes.attachments), path.name
        compared += 1
    assert compared > 50


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


def test_corpus_inline_image_sample() -> None:
    # relay_inline_image_incoming.eml carries an inline image; losing it would lose a photo
    parsed = parse_message((corpus_dir() / "mime" / "relay_inline_image_incoming.eml").read_bytes())

    assert any(a.content_type.startswith("image/") for a in parsed.attachments)


def test_zone_of_parsed_date_converts() -> None:
    # a sanity check that the stored instant converts back to the sender's wall clock
    date = parse(message(Date="Mon, 01 Jan 2024 00:05:00 +1400")).date

    assert date is not None
    assert date.astimezone(timezone(timedelta(hours=14))).replace(tzinfo=None) == datetime(2024, 1, 1, 0, 5)


def test_a_leading_byte_order_mark_is_ignored() -> None:
    parsed = parse_message(b"\xef\xbb\xbfFrom: ann@example.org\r\nSubject: hi\r\n\r\nbody\r\n")
    assert parsed.from_address == "ann@example.org" and parsed.subject == "hi"
