"""Reading mail the way bounce and complaint reports need it: header values, the text of a
part whatever its encoding, RFC 822-style field blocks, addresses, dates, and the original
message a report encloses. Shared by ``dsn``, ``arf`` and ``reports``; never raises on broken
mail, which is what reports often are."""

from __future__ import annotations

import binascii
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from io import BytesIO
from typing import Any
from weakref import WeakKeyDictionary

from waypost.mail.addresses import AddressError, normalise_address

MAX_DEPTH = 12  # MIME nesting we follow; deeper parts are not looked at
MAX_PARTS = 500  # parts we look at in one report
HUMAN_TEXT_LIMIT = 1 << 20
_ENCLOSED = frozenset({"message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers",
                       "message/global-headers"})
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")
_BAD_LOCAL = re.compile(r"[\s<>()\[\],;:\\\"]|^\.|\.$")
_UTF8_XTEXT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")  # RFC 6533 §3 utf-8-addr-xtext
# a field holding one address and nothing else: dot-atom local part, bare or in angle brackets
_DOT_ATOM_ADDRESS = r"[A-Za-z0-9_%+=-]+(?:\.[A-Za-z0-9_%+=-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_PLAIN_ADDRESS = re.compile(rf"({_DOT_ATOM_ADDRESS})|<({_DOT_ATOM_ADDRESS})>")
BARE_ADDRESS = re.compile(_DOT_ATOM_ADDRESS)  # fullmatch: an address with nothing to parse around it
# the same after a display name of plain words or one simple quoted string: "Ann Example <ann@...>"
_NAMED_ADDRESS = re.compile(rf"(?:[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]+)*|"
                            rf"\"[^\"\\]*\") ?<({_DOT_ATOM_ADDRESS})>")
_ADDRESS_TYPE = re.compile(r"\s*[A-Za-z0-9-]+\s*")  # RFC 3464 §2.3.2 address-type ("rfc822")




def clean_text(value: str) -> str:
    """Undo the surrogate escapes ``compat32`` uses for 8-bit bytes; bad UTF-8 becomes U+FFFD."""
    if value.isascii():  # nearly every field: nothing escaped, nothing to undo
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass
class _Reading:
    """What is worked out once per parsed message (or part) however many readers ask: ``arf``,
    ``dsn`` and ``reports`` each look at the same fields, parts and text of one report."""

    fields: dict[str, list[Any]] | None = None  # lower-cased field name → raw values, in order
    values: dict[str, list[str]] = field(default_factory=dict)  # ``headers`` answers, by lower-cased name
    parts: tuple[tuple[Message, str], ...] | None = None  # ``typed_parts`` after the message's own
    content_type: str = "text/plain"  # the message's own, once ``parts`` is set
    text: str | None = None  # ``human_text`` at its default limit


# Parsed mail is only read here, never changed, so what is read from a message object stays
# true while the object lives; held weakly, it goes with the message. Nothing in a reading may
# refer to its own message (which is why ``parts`` leaves it out): that would keep it alive.
_READINGS: WeakKeyDictionary[Message, _Reading] = WeakKeyDictionary()


def _reading(message: Message) -> _Reading:
    reading = _READINGS.get(message)
    if reading is None:
        reading = _READINGS[message] = _Reading()
    return reading


def header(message: Message, name: str) -> str | None:
    """The first ``name`` field, unfolded and stripped, or None when absent or empty."""
    values = _values(message, name)
    return values[0] if values else None


def headers(message: Message, name: str) -> list[str]:
    """Every non-empty ``name`` field in order, unfolded (raw values: 8-bit text kept)."""
    return list(_values(message, name))


def _values(message: Message, name: str) -> list[str]:
    """``headers``' answer as remembered: callers must not change it."""
    reading = _reading(message)
    key = name.lower()
    found = reading.values.get(key)
    if found is None:
        if reading.fields is None:
            reading.fields = {}
            for field_name, value in message.raw_items():
                reading.fields.setdefault(field_name.lower(), []).append(value)
        values = (" ".join(clean_text(value).split()) for value in reading.fields.get(key, ())
                  if isinstance(value, str))
        found = reading.values[key] = [value for value in values if value]
    return found


def iter_parts(message: Message) -> Iterator[Message]:
    """Parts depth-first, at most ``MAX_PARTS`` and ``MAX_DEPTH`` deep, without the parts of
    an enclosed message (message/rfc822 ...): those belong to the original, not the report."""
    return (part for part, _ in typed_parts(message))


def typed_parts(message: Message) -> tuple[tuple[Message, str], ...]:
    """``iter_parts`` with each part's content type (RFC 2045 §5.2 default included)."""
    reading = _reading(message)
    if reading.parts is None:
        walked = _walk(message)
        reading.content_type = next(walked)[1]
        reading.parts = tuple(walked)
    return ((message, reading.content_type), *reading.parts)


def _walk(message: Message) -> Iterator[tuple[Message, str]]:
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        content_type = part.get_content_type()
        yield part, content_type
        payload = part.get_payload()
        # message/* (enclosed mail, and delivery-status whose "parts" are field blocks) is a leaf
        if isinstance(payload, list) and depth < MAX_DEPTH and not content_type.startswith("message/"):
            stack.extend((sub, depth + 1) for sub in reversed(payload) if isinstance(sub, Message))


def part_text(part: Message) -> str:
    """A part's content as text: decoded transfer encoding and charset, or for a part the
    parser split into sub-messages (delivery-status blocks, message/*) those written back."""
    payload = part.get_payload()
    if isinstance(payload, list) and _bare_field_blocks(part, payload):
        # delivery-status blocks (RFC 3464 §2.1): header fields only, written back as they came
        blocks = ("\n".join(f"{name}: {value}" for name, value in sub.raw_items()) for sub in payload
                  if isinstance(sub, Message))
        return "\n\n".join(blocks) + "\n"
    if isinstance(payload, list):
        buffer = BytesIO()
        for sub in payload:
            if isinstance(sub, Message):
                BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0).flatten(sub)
                buffer.write(b"\n")
        return _undo_transfer_encoding(part, buffer.getvalue()).decode("utf-8", "replace")
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return clean_text(payload) if isinstance(payload, str) else ""
    try:
        return data.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _bare_field_blocks(part: Message, payload: list[Any]) -> bool:
    """Sub-messages that are nothing but ASCII header fields, with no transfer encoding to undo:
    joining their fields is the same text as running the generator, at a fraction of the cost.
    Raw values: compat32 hands out a field with 8-bit bytes as a ``Header``, not a str."""
    if (header(part, "Content-Transfer-Encoding") or "7bit").lower() not in ("7bit", "8bit", "binary"):
        return False
    return all(isinstance(sub, Message) and not sub.get_payload() and all(
        isinstance(value, str) and value.isascii() for _, value in sub.raw_items()) for sub in payload)


def _undo_transfer_encoding(part: Message, data: bytes) -> bytes:
    """The parser reads message/* parts as mail even when encoded (RFC 6533 §6 allows base64
    and quoted-printable for the global types; senders use it on others too): decode here."""
    encoding = (header(part, "Content-Transfer-Encoding") or "").lower()
    try:
        if encoding == "base64":
            return binascii.a2b_base64(data)
        if encoding == "quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        pass
    return data


def field_blocks(text: str) -> list[list[tuple[str, str]]]:
    """Split ``Name: value`` text (RFC 3464 §2.1, RFC 5965 §3.1) into blank-line separated
    blocks of (lower-cased name, unfolded value). Lines that are not fields are skipped."""
    blocks: list[list[tuple[str, str]]] = []
    block: list[tuple[str, list[str]]] = []

    def close() -> None:
        if block:
            blocks.append([(name, " ".join(" ".join(chunks).split())) for name, chunks in block])
            block.clear()

    for line in text.splitlines():
        if not line.strip():
            close()
        elif line[0] in " \t":
            if block:
                block[-1][1].append(line)
        else:
            name, colon, value = line.partition(":")
            name = name.strip().lower()
            if colon and len(name.split()) == 1:  # a name, stripped, without white space inside
                block.append((name, [value]))
    close()
    return blocks


def clean_address(value: str | None) -> str | None:
    """``local@domain`` with the domain lower-cased (IDNA), the local part as given; None for
    anything that is not plausibly a mailbox. Strips an address-type prefix (``rfc822;``,
    ``utf-8;`` with RFC 6533 ``\\x{..}`` escapes decoded), angle brackets and comments."""
    if not value:
        return None
    kind, semicolon, rest = value.partition(";")
    if semicolon and _ADDRESS_TYPE.fullmatch(kind):
        value = _UTF8_XTEXT.sub(_unescape, rest) if kind.strip().lower() == "utf-8" else rest
    value = value.strip()
    if (plain := _PLAIN_ADDRESS.fullmatch(value)) and plain.group(2):
        value = plain.group(2)  # "<ann@example.org>": the same address, without a full parse
    try:
        address = normalise_address(value)
    except (AddressError, ValueError, IndexError):
        return None
    local, domain = address.rsplit("@", 1)
    if len(local) > 64 or _BAD_LOCAL.search(local) or not _DOMAIN.match(domain):
        return None
    return address


def _unescape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    return "\ufffd" if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF else chr(code)


def addresses_in(value: str | None) -> list[str]:
    """The valid addresses of an address-list field (To, Cc, ...)."""
    if not value or ("@" not in value and "\\x{" not in value):  # "<>", "MAILER-DAEMON <>": no mailbox
        return []
    # most fields hold one address, which getaddresses would give back as it is: a full parse
    # costs more than the rest of reading a field
    if plain := _PLAIN_ADDRESS.fullmatch(value) or _NAMED_ADDRESS.fullmatch(value):
        address = clean_address(plain[plain.lastindex or 0])
        return [address] if address else []
    found = (clean_address(address) for _, address in getaddresses([value]))
    return [address for address in found if address]


def parse_date(value: str | None) -> datetime | None:
    """An RFC 5322 date as aware UTC; a date without zone counts as UTC; None if unreadable."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass(frozen=True)
class Original:
    """The message a report is about, as far as it came back (RFC 3464 §2, RFC 5965 §2)."""

    message_id: str | None
    return_path: str | None
    to: tuple[str, ...] = ()


def find_original(message: Message, text: str = "") -> Original | None:
    """The enclosed original: a message/rfc822 (or header-only) part; failing that, a header
    block quoted inline in ``text`` (non-standard bounces quote the original after the notice)."""
    for part, content_type in typed_parts(message):
        if part is not message and content_type in _ENCLOSED:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                inner = payload[0]
            else:
                inner = HeaderParser(policy=compat32).parsestr(part_text(part), headersonly=True)
            return Original(header(inner, "Message-ID"), clean_address(header(inner, "Return-Path")),
                            tuple(addresses_in(", ".join(headers(inner, "To")))))
    quoted_id = re.search(r"^[ \t>]*Message-Id[ \t]*:[ \t]*(\S[^\r\n]*)", text, re.IGNORECASE | re.MULTILINE)
    if quoted_id is None:
        return None
    quoted_path = re.search(r"^[ \t>]*Return-Path[ \t]*:[ \t]*(\S[^\r\n]*)", text, re.IGNORECASE | re.MULTILINE)
    return Original(quoted_id.group(1).strip(), clean_address(quoted_path.group(1)) if quoted_path else None)


def human_text(message: Message, limit: int = HUMAN_TEXT_LIMIT) -> str:
    """The text parts of the report itself (not of an enclosed message), joined, cut at ``limit``."""
    if limit != HUMAN_TEXT_LIMIT:
        return _human_text(message, limit)
    reading = _reading(message)
    if reading.text is None:
        reading.text = _human_text(message, limit)
    return reading.text


def _human_text(message: Message, limit: int) -> str:
    chunks, size = [], 0
    for part, content_type in typed_parts(message):
        if content_type.startswith("text/") and content_type != "text/rfc822-headers":
            chunk = part_text(part)
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    return "\n".join(chunks)[:limit]


# --- classification --------------------------------------------------------------------------
