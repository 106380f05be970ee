"""Inbound MIME, read once into a plain, immutable view the rest of the pipeline uses.

The stdlib parser with ``policy.default`` records defects instead of raising for most
damage; the few header accesses that can still raise are wrapped, so a hostile header
costs the header, not the message. What a message may cost to read is bounded by
``MimeLimits`` (limits.py): past a limit the message is refused whole with
``MimeLimitExceeded``, except for the attachment total, past which attachments are left
out and named in ``ParsedMessage.skipped``.

Long base64 bodies never pass through the stdlib parser line by line (bodies.py): the
parser sees one line naming each, and an ``Attachment`` keeps its body encoded in a spool
of the mail, decoding it each time ``data`` is read. So reading a mail of forty photos
holds none of them decoded, and whoever uses the photos holds one at a time.
"""

from __future__ import annotations

import binascii
import email.parser
import email.policy
import io
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.errors import HeaderDefect
from email.message import EmailMessage, Message
from email.policy import Policy
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO

from waypost.mail.addresses import AddressError, first_mailbox, normalise_address
from waypost.mail.bodies import Body, ElidingFeed, HeldBody, PartBody, Spool, claim_bodies
from waypost.mail.limits import MalformedMessage, MimeLimitExceeded, MimeLimits, PartMeter, describe_bytes
from waypost.mail.robots import ROBOT_HEADERS

__all__ = ["Attachment", "MalformedMessage", "MimeLimitExceeded", "MimeLimits", "ParsedMessage", "clean_filename",
           "parse_message"]

# RFC 5322 §3.6.4: a msg-id is printable ASCII between angle brackets
_MSGID = re.compile(r"<[!-;=?-~]+>")
_CHUNK = 64 * 1024
TEXT_LIMIT = 16 * 1024  # enough for a command or a token; a body is never needed whole
SUBJECT_LIMIT = 200
MAX_REFERENCES = 100  # the thread's root and its latest messages; a longer list only costs
_LINE_BREAKS = re.compile(r"[\r\n]")  # unfolding, as policy.header_fetch_parse does
_SUBJECT_SOURCE = 16 * 1024  # raw Subject read: ample for 200 characters, even one per encoded word
# parsed once, when the parser stores them: policy.default would parse them again on every
# read, and the parser itself reads Content-Type several times per part
_MIME_HEADERS = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})


@dataclass(frozen=True, eq=False)
class Attachment:
    position: int  # order in the message, counting only attachments
    filename: str | None  # cleaned by clean_filename: no directories, controls or bidi overrides
    content_type: str
    body: PartBody = field(repr=False)

    @property
    def data(self) -> bytes:
        """The decoded bytes; a long body is decoded anew on each read, so hold them only while needed."""
        return self.body.read()

    @property
    def size(self) -> int:
        """The decoded size, known without decoding."""
        return self.body.size

    def __eq__(self, other: object) -> bool:  # by content, wherever the bytes are kept
        if not isinstance(other, Attachment):
            return NotImplemented
        return self._key() == other._key() and self.data == other.data

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[int, str | None, str, int]:
        return self.position, self.filename, self.content_type, self.size


@dataclass(frozen=True)
class ParsedMessage:
    from_address: str | None
    from_header: str | None
    subject: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    date: datetime | None
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    text: str = ""  # the first text/plain part that is not an attachment, at most TEXT_LIMIT characters
    # attachments not read on purpose (archives, Outlook's winmail.dat), one sentence each for the reply
    notes: tuple[str, ...] = ()
    # attachments left out past the attachment total, one sentence each for the reply
    skipped: tuple[str, ...] = ()
    # (lower-case name, first value) of the headers that tell a program's mail (mail/robots.py)
    robot_headers: tuple[tuple[str, str], ...] = ()


def parse_message(raw: bytes | BinaryIO, limits: MimeLimits | None = None) -> ParsedMessage:
    """Read a message from its bytes, or from a binary file (read in chunks, never whole).

    Raises ``MalformedMessage`` when the bytes are no message, ``MimeLimitExceeded`` (a
    subclass) when reading it would pass one of ``limits`` (default: ``MimeLimits()``);
    nothing else for any input."""
    limits = limits or MimeLimits()
    meter = PartMeter(limits, _size_of(raw))
    try:
        message, meter = _parse(raw, meter)
        if not isinstance(message, EmailMessage) or not list(message.keys()):
            raise MalformedMessage("no header section")
        return _view(message, meter)
    except RecursionError as err:  # only when the limits allow very deep nesting
        raise MalformedMessage("the message is nested too deeply to read") from err


def _view(message: EmailMessage, meter: PartMeter) -> ParsedMessage:
    from_address, from_header = _from(message, meter)
    text = _first_text(message)  # before the attachments, which clear each part's payload
    collected = _Collector(meter.limits).collect(message)
    return ParsedMessage(
        from_address=from_address,
        from_header=from_header,
        subject=_subject(message),
        message_id=_first_msgid(_raw_header(message, "Message-ID")),
        in_reply_to=_first_msgid(_raw_header(message, "In-Reply-To")),
        references=_references(_raw_header(message, "References")),
        date=_date(_raw_header(message, "Date")),
        text=text,
        attachments=tuple(collected.found),
        defects=tuple(type(defect).__name__ for defect in message.defects),
        notes=tuple(collected.notes),
        skipped=tuple(collected.skipped),
        robot_headers=_robot_headers(message),
    )


# --- the parser, metered -------------------------------------------------------------------


class _Part(EmailMessage):
    """An EmailMessage that reports to the meter as the parser builds it: one more part when
    made, its depth when attached, its header section as each header is stored."""

    def __init__(self, policy: Policy, meter: PartMeter) -> None:
        super().__init__(policy)
        self.meter = meter
        self.number = meter.new_part()
        self.depth = 0
        self.header_bytes = 0
        self.raw_mime: dict[str, str] = {}  # the MIME headers as sent, for names the parser could not read
        self.body: Body | None = None  # its body, when left out of the parse (bodies.py)

    def attach(self, payload: Any) -> None:
        if isinstance(payload, _Part):
            payload.depth = self.depth + 1
            self.meter.nested(payload.depth)
        super().attach(payload)

    def set_raw(self, name: str, value: Any) -> None:
        self.header_bytes += len(name) + len(value) + 4  # as sent: ": " and CRLF
        self.meter.header_section(self.header_bytes, self.number, name)
        if name.lower() in _MIME_HEADERS:
            self.raw_mime.setdefault(name.lower(), value)
            value = self._parsed(name, value)
            if value is None:
                return
        super().set_raw(name, value)

    def _parsed(self, name: str, value: str) -> Any:
        """The header object, or None when the stdlib cannot read the value: then the part
        goes without the header (a defect says so), as if it had never been sent."""
        self.meter.mime_header(name, len(value), self.number)
        try:
            return self.policy.header_fetch_parse(name, value)
        except Exception as err:  # noqa: BLE001 - seen: RecursionError (comments nested a thousand
            # deep), UnicodeError (an RFC 2231 charset such as idna that cannot decode parameters)
            self.defects.append(HeaderDefect(f"{name} header left out, unreadable ({type(err).__name__})"))
            return None


def _parse(raw: bytes | BinaryIO, meter: PartMeter) -> tuple[Message, PartMeter]:
    """The stdlib parser, fed in chunks, long base64 bodies left out (bodies.py).
    ``email.message_from_bytes`` decodes the whole message to one string and reads it back
    through a StringIO, which holds four bytes per character: a 40 MB mail cost 280 MB. Fed
    chunk by chunk, the parser holds little more than the parts it has finished. When a
    left-out body is not the whole body of a base64 part, the spooled mail is parsed again
    with nothing left out (and a fresh meter, which is returned)."""
    parser = _parser(meter)
    start = _position(raw)
    chunks = _chunks(raw)
    read = next(chunks, b"")
    first = read.removeprefix(b"\xef\xbb\xbf")  # some clients save .eml files with a UTF-8 BOM
    # a mail that stays where it is (a stored blob) is read there by the bodies, not copied
    spool = Spool.of(raw, start + len(read) - len(first)) if start is not None else None
    feed = ElidingFeed(parser.feed, spool=spool)
    seen_content = bool(first.strip())
    feed.write(first)
    for chunk in chunks:
        seen_content = seen_content or bool(chunk.strip())
        feed.write(chunk)
    feed.close()
    message = parser.close()
    if not seen_content:
        raise MalformedMessage("empty message")
    bodies = claim_bodies(message, feed)
    if not bodies:
        if bodies is None:
            fresh = PartMeter(meter.limits, meter.message_size)
            message, meter = _parse_spooled(feed.spool, fresh), fresh
        feed.spool.close()  # nothing refers to it
        return message, meter
    for part in message.walk():
        if isinstance(part, _Part):
            part.body = bodies.get(id(part))
    return message, meter


def _parser(meter: PartMeter) -> email.parser.BytesFeedParser:
    policy = email.policy.default.clone(message_factory=lambda policy: _Part(policy, meter))
    return email.parser.BytesFeedParser(policy=policy)


def _parse_spooled(spool: Spool, meter: PartMeter) -> Message:
    parser = _parser(meter)
    for chunk in spool.chunks(size=_CHUNK):
        parser.feed(chunk)
    return parser.close()


def _chunks(raw: bytes | BinaryIO) -> Iterator[bytes]:
    if isinstance(raw, bytes | bytearray | memoryview):
        view = memoryview(raw)
        for start in range(0, len(view), _CHUNK):
            yield bytes(view[start:start + _CHUNK])
        return
    while chunk := raw.read(_CHUNK):
        yield chunk


def _position(raw: bytes | BinaryIO) -> int | None:
    """Where reading ``raw`` starts: 0 for bytes, a local file's position, None for any other
    stream (its bytes are spooled as they are read)."""
    if isinstance(raw, bytes | bytearray | memoryview):
        return 0
    if not isinstance(raw, io.BufferedReader | io.BufferedRandom | io.FileIO):
        return None
    try:
        return raw.tell()
    except (OSError, ValueError):
        return None


def _size_of(raw: bytes | BinaryIO) -> int | None:
    if isinstance(raw, bytes | bytearray | memoryview):
        return memoryview(raw).nbytes
    try:
        return os.fstat(raw.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # not a real file: the size is only for the reason text
        return None


# --- headers -------------------------------------------------------------------------------


def _robot_headers(message: Message) -> tuple[tuple[str, str], ...]:
    """The first value of each of ``ROBOT_HEADERS`` the message carries, in one pass."""
    found: dict[str, str] = {}
    for key, value in message.raw_items():
        name = key.lower()
        if name in ROBOT_HEADERS and name not in found:
            found[name] = _text(_LINE_BREAKS.sub("", str(value)))[:200]
    return tuple(found.items())


def _raw_header(message: Message, name: str) -> str | None:
    """The first ``name`` header as sent, folding removed, raw bytes decoded."""
    value = next((value for key, value in message.raw_items() if key.lower() == name.lower()), None)
    return None if value is None else _text(_LINE_BREAKS.sub("", str(value)))


def _decoded_header(message: Message, name: str, source: str) -> str:
    """``source`` (a header's raw value) with RFC 2047 words decoded the way policy.default does."""
    try:
        return str(message.policy.header_fetch_parse(name, source))
    except Exception:  # noqa: BLE001 - the structured-header parser chokes on some hostile values
        return source  # then the raw text is the best we have


def _from(message: Message, meter: PartMeter) -> tuple[str | None, str | None]:
    """The From address (see ``_sender``) and the From header as text, RFC 2047 decoded."""
    source = _raw_header(message, "From")
    if source is None:
        return None, None
    meter.mime_header("From", len(source), 1)
    try:
        header = message.policy.header_fetch_parse("From", source)
    except Exception:  # noqa: BLE001 - the structured-header parser chokes on some hostile values
        return None, _clean_header_text(source)
    return _sender(source, header), _clean_header_text(str(header))


def _sender(source: str, header: Any) -> str | None:
    """The one From address, when two readings of the header as sent agree on it: the legacy
    one (email.utils.getaddresses, as the SMTP-time DMARC check reads it) and the RFC 5322
    parser of policy.default. A From header that parsers read differently is how one domain's
    DMARC pass is made to vouch for another domain's address; RFC 2047 words decoded into an
    address are not an address either (RFC 2047 §5)."""
    try:
        legacy = first_mailbox(_without_controls(source))
        specs = [address.addr_spec for address in getattr(header, "addresses", ())]
    except Exception:  # noqa: BLE001 - RecursionError from getaddresses ("g:" * 1000), and hostile values
        return None
    if legacy is None or len(specs) != 1:
        return None
    try:
        return legacy if normalise_address(specs[0]) == legacy else None
    except AddressError:
        return None


def _subject(message: Message) -> str:
    source = _raw_header(message, "Subject")
    if not source:
        return ""
    if len(source) > _SUBJECT_SOURCE:  # cut between words, never inside an encoded word
        source = source[:_SUBJECT_SOURCE].rsplit(None, 1)[0]
    return _clean_header_text(_decoded_header(message, "Subject", source))[:SUBJECT_LIMIT].rstrip()


def _first_msgid(value: str | None) -> str | None:
    if not value:
        return None
    match = _MSGID.search(value)
    return match.group(0) if match else None


def _references(value: str | None) -> tuple[str, ...]:
    found = _MSGID.findall(value or "")
    if len(found) > MAX_REFERENCES:
        found = found[:1] + found[-(MAX_REFERENCES - 1):]
    return tuple(found)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else None


# --- text ----------------------------------------------------------------------------------

_SURROGATES = re.compile("[\ud800-\udfff]")
# explicit embeddings, overrides and isolates: they reorder what a reader sees ("gpj.exe")
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)\s+(?==\?)")  # RFC 2047 §6.2: not part of the text


def _text(value: str) -> str:
    """``value`` with raw bytes the parser kept as surrogate escapes decoded as UTF-8, or
    replaced: a string holding surrogates cannot be stored or encoded later."""
    if not _SURROGATES.search(value):
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", value)


def _without_controls(value: str) -> str:
    """Control characters out (white space becomes a space), bidi overrides out."""
    value = _text(value).translate(_BIDI_CONTROLS)
    if value.isprintable():
        return value
    return "".join(" " if ch.isspace() else ch for ch in value
                   if ch.isspace() or unicodedata.category(ch) != "Cc")


def _clean_header_text(value: str) -> str:
    return " ".join(_without_controls(value).split())


def _decode_bytes(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):  # unknown charset, or a codec that is not a text encoding
        return data.decode("utf-8", "replace")


def _decode_words(value: str) -> str:
    """RFC 2047 encoded words the stdlib left alone (in a parameter it could not read),
    decoded; a broken word stays as it was."""
    def word(match: re.Match[str]) -> str:
        charset, kind, body = match.groups()
        try:
            if kind in "bB":
                data = binascii.a2b_base64(body + "=" * (-len(body) % 4))
            else:
                data = binascii.a2b_qp(body.encode("ascii", "replace"), header=True)
        except (binascii.Error, ValueError):
            return match.group(0)
        return _decode_bytes(data, charset.split("*", 1)[0])  # RFC 2231 §5: charset*language

    return _ENCODED_WORD.sub(word, _BETWEEN_WORDS.sub("", value))


def _first_text(message: EmailMessage) -> str:
    for part in message.walk():
        if part.get_content_type() != "text/plain" or part.get_content_disposition() == "attachment":
            continue
        # a prefix is enough: no character takes more than four bytes in any charset we read
        body = _body(part)
        data = body.read(TEXT_LIMIT * 4) if body is not None else b""
        return _decode_bytes(data, _charset(part))[:TEXT_LIMIT]
    return ""


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except (ValueError, TypeError, LookupError):
        return None


# --- attachments ---------------------------------------------------------------------------

_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_ARCHIVE_TYPES = frozenset({
    "application/zip", "application/x-zip", "application/x-zip-compressed", "application/x-7z-compressed",
    "application/vnd.rar", "application/x-rar", "application/x-rar-compressed", "application/x-tar",
    "application/x-gtar", "application/gzip", "application/x-gzip", "application/x-bzip", "application/x-bzip2",
    "application/x-xz", "application/zstd", "application/x-lzip", "application/x-lzma", "application/x-compress",
    "application/x-compressed", "application/x-lzh-compressed", "application/vnd.ms-cab-compressed",
    "application/x-cpio", "application/x-iso9660-image", "application/x-stuffit",
})
_ARCHIVE_SUFFIXES = (".zip", ".zipx", ".7z", ".rar", ".tar", ".gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz",
                     ".zst", ".lz", ".lzma", ".lzh", ".cab", ".cpio", ".iso", ".sit", ".sitx")
_TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"  # 0x223E9F78, little-endian
_ARCHIVE_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07",
                       b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"MSCF")
_SNIFFED_BYTES = 512  # past the POSIX tar magic at 257
TNEF_NOTE = "Outlook's TNEF format is not read; send the photos as ordinary attachments"
ARCHIVE_NOTE = "archives are not opened; attach the photos themselves"


class _Collector:
    """Walks the parts once: attachments kept up to the decoded total, archives and TNEF noted."""

    def __init__(self, limits: MimeLimits) -> None:
        self.limits = limits
        self.found: list[Attachment] = []
        self.notes: list[str] = []
        self.skipped: list[str] = []
        self.total = 0

    def collect(self, message: EmailMessage) -> _Collector:
        for part in message.walk():
            if part.is_multipart() or not _looks_like_attachment(part):
                continue
            self._take(part)
            # the encoded text is no longer needed: let it go now rather than with the whole
            # tree, so a 40 MB mail never holds every part both encoded and decoded
            part.set_payload("")
        return self

    def _take(self, part: Message) -> None:
        filename = _filename(part, self.limits.max_filename_length)
        content_type = part.get_content_type()
        note = _unopened(content_type, filename)
        if note is not None:
            self.notes.append(note)
            return
        body = _body(part)
        if body is None:
            return
        if content_type.startswith("application/") and (
                note := _sniffed(body.read(_SNIFFED_BYTES), filename or content_type)):
            self.notes.append(note)  # sent as a generic file, but its first bytes say what it is
            return
        if self.total + body.size > self.limits.max_attachment_bytes:
            # a later, smaller attachment may still fit: photos after a long video are kept
            label = filename or f"an attachment ({content_type})"
            self.skipped.append(f"{label}: over the {describe_bytes(self.limits.max_attachment_bytes)}"
                                " attachment total")
            return
        self.total += body.size
        self.found.append(Attachment(len(self.found), filename, content_type, body))


def _unopened(content_type: str, filename: str | None) -> str | None:
    """The note for an attachment we do not open (Outlook's winmail.dat, an archive), else None."""
    lowered = (filename or "").lower()
    if content_type in _TNEF_TYPES or lowered == "winmail.dat":
        return f"{filename or 'winmail.dat'}: {TNEF_NOTE}"
    if content_type in _ARCHIVE_TYPES or lowered.endswith(_ARCHIVE_SUFFIXES):
        return f"{filename or content_type}: {ARCHIVE_NOTE}"
    return None


def _sniffed(data: bytes, label: str) -> str | None:
    if data.startswith(_TNEF_SIGNATURE):
        return f"{label}: {TNEF_NOTE}"
    if data.startswith(_ARCHIVE_SIGNATURES) or data[257:262] == b"ustar":  # POSIX tar
        return f"{label}: {ARCHIVE_NOTE}"
    return None


def _looks_like_attachment(part: Message) -> bool:
    if part.get_content_maintype() in ("image", "application", "video", "audio"):
        return True
    return part.get_content_disposition() == "attachment"


def _body(part: Message) -> PartBody | None:
    """The part's decoded body: left out of the parse and decoded when read, or decoded by the
    stdlib now; None when empty or unreadable."""
    left_out = getattr(part, "body", None)
    if isinstance(left_out, Body):
        return left_out
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError):
        return None
    return HeldBody(data) if isinstance(data, bytes) and data else None


# --- file names ----------------------------------------------------------------------------

_DIRECTORIES = re.compile(r"[/\\]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_DOTS = re.compile(r"\.{2,}")
_NAME_PARAMETER = re.compile(r"""(?i)(?:^|;)\s*(?:file)?name\s*=\s*(?:"([^"]*)"|([^;]*))""")
_LONGEST_EXTENSION = 16


def _filename(part: Message, max_length: int) -> str | None:
    try:
        name = part.get_filename()
    except (ValueError, TypeError, IndexError, LookupError, AttributeError, RecursionError):
        name = None
    if not name:
        name = _name_as_sent(part)
    return clean_filename(str(name), max_length) if name else None


def _name_as_sent(part: Message) -> str | None:
    """A ``filename=`` or ``name=`` the stdlib could not read (an unquoted encoded word, say)."""
    raw = getattr(part, "raw_mime", {})
    for header in ("content-disposition", "content-type"):
        match = _NAME_PARAMETER.search(_LINE_BREAKS.sub("", raw.get(header, "")))
        if match:
            return match.group(1) if match.group(1) is not None else match.group(2).strip()
    return None


def clean_filename(name: str, max_length: int = MimeLimits.max_filename_length) -> str | None:
    """A name safe to show and to store: RFC 2047 words decoded, directories (``/`` and
    ``\\``) and drive letters gone, no ``..``, no leading dot, no control characters or bidi
    overrides, NFC, white space collapsed, at most ``max_length`` characters with the
    extension kept. None when nothing is left."""
    text = _text(name)
    if "=?" in text:
        text = _decode_words(text)
    text = _without_controls(text)
    text = next((piece for piece in reversed(_DIRECTORIES.split(text)) if piece.strip(" .")), "")
    text = _DRIVE.sub("", unicodedata.normalize("NFC", text))
    text = _DOTS.sub(".", " ".join(text.split())).strip(" .")
    return _shortened(text, max_length) or None


def _shortened(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    stem, _, extension = name.rpartition(".")
    if stem and extension.isalnum() and len(extension) <= min(_LONGEST_EXTENSION, limit // 2):
        head = stem[:limit - len(extension) - 1].rstrip(" .")
        if head:
            return f"{head}.{extension}"
    return name[:limit].rstrip(" .")
