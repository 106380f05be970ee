"""Inbound MIME, read once into a plain, immutable view the rest of the pipeline uses.

The stdlib parser with ``policy.default`` records defects instead of raising for most
damage; the few header accesses that can still raise are wrapped, so a hostile header
costs the header, not the message.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from typing import BinaryIO

from waypost.errors import PermanentError
from waypost.mail.addresses import first_mailbox

_MSGID = re.compile(r"<[^<>\s]+>")
_CHUNK = 64 * 1024
TEXT_LIMIT = 16 * 1024  # enough for a command or a token; a body is never needed whole


class MalformedMessage(PermanentError):
    """The bytes cannot be read as a mail message at all."""


@dataclass(frozen=True)
class Attachment:
    position: int  # order in the message, counting only attachments
    filename: str | None
    content_type: str
    data: bytes


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


def parse_message(raw: bytes | BinaryIO) -> ParsedMessage:
    """Read a message from its bytes, or from a binary file (read in chunks, never whole)."""
    message = _parse(raw)
    if not isinstance(message, EmailMessage) or not list(message.keys()):
        raise MalformedMessage("no header section")
    from_header = _header(message, "From")
    return ParsedMessage(
        from_address=first_mailbox(from_header),
        from_header=from_header,
        subject=_clean_subject(_header(message, "Subject")),
        message_id=_first_msgid(_header(message, "Message-ID")),
        in_reply_to=_first_msgid(_header(message, "In-Reply-To")),
        references=tuple(_MSGID.findall(_header(message, "References") or "")),
        date=_date(_header(message, "Date")),
        text=_first_text(message),
        attachments=tuple(_attachments(message)),
        defects=tuple(type(defect).__name__ for defect in message.defects),
    )


def _parse(raw: bytes | BinaryIO) -> Message:
    """The stdlib parser, fed in chunks. ``email.message_from_bytes`` decodes the whole
    message to one string and reads it back through a StringIO, which holds four bytes per
    character: a 40 MB mail cost 280 MB. Fed chunk by chunk, the parser holds little more
    than the parts it has finished."""
    parser = email.parser.BytesFeedParser(policy=email.policy.default)
    chunks = _chunks(raw)
    first = next(chunks, b"").removeprefix(b"\xef\xbb\xbf")  # some clients save .eml files with a UTF-8 BOM
    seen_content = bool(first.strip())
    parser.feed(first)
    for chunk in chunks:
        seen_content = seen_content or bool(chunk.strip())
        parser.feed(chunk)
    message = parser.close()
    if not seen_content:
        raise MalformedMessage("empty message")
    return message


def _chunks(raw: bytes | BinaryIO) -> Iterator[bytes]:
    if isinstance(raw, bytes | bytearray | memoryview):
        view = memoryview(raw)
        for start in range(0, len(view), _CHUNK):
            yield bytes(view[start:start + _CHUNK])
        return
    while chunk := raw.read(_CHUNK):
        yield chunk


def _header(message: Message, name: str) -> str | None:
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError, AttributeError, LookupError):
        # the structured-header parser chokes on some hostile values: use the raw text
        value = next((raw for key, raw in message.raw_items() if key.lower() == name.lower()), None)
    return None if value is None else str(value)


def _clean_subject(subject: str | None) -> str:
    text = " ".join((subject or "").split())
    return text[:200]


def _first_msgid(value: str | None) -> str | None:
    if not value:
        return None
    match = _MSGID.search(value)
    return match.group(0) if match else None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _first_text(message: EmailMessage) -> str:
    for part in message.walk():
        if part.get_content_type() != "text/plain" or part.get_content_disposition() == "attachment":
            continue
        try:
            content = part.get_content()
        except (LookupError, ValueError, TypeError, AssertionError):  # unknown charset, broken encoding
            data = _payload(part) or b""
            content = data.decode("utf-8", "replace")
        return str(content)[:TEXT_LIMIT]
    return ""


def _attachments(message: EmailMessage) -> list[Attachment]:
    found: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart() or not _looks_like_attachment(part):
            continue
        data = _payload(part)
        if data is None:
            continue
        found.append(Attachment(len(found), _filename(part), part.get_content_type(), data))
        # the encoded text is no longer needed: let it go now rather than with the whole
        # tree, so a 40 MB mail never holds every part both encoded and decoded
        part.set_payload("")
    return found


def _looks_like_attachment(part: Message) -> bool:
    if part.get_content_maintype() in ("image", "application", "video", "audio"):
        return True
    return part.get_content_disposition() == "attachment"


def _payload(part: Message) -> bytes | None:
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError):
        return None
    return data if isinstance(data, bytes) and data else None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except (ValueError, TypeError, IndexError):
        return None
    return str(name) if name else None
