"""What reading one inbound message may cost, and the refusal raised when it would cost more.

A message past a limit is refused whole with ``MimeLimitExceeded`` (a ``MalformedMessage``,
so a ``PermanentError``): the pipeline dead-letters it with its raw bytes and the reason,
and the operator can raise the limit and retry it (invariant 6). The one exception is the
decoded size of all attachments together, which parse.py handles by leaving attachments
out and saying which.

``PartMeter`` counts while the stdlib parser builds the message tree, so a message of
100,000 parts is refused at part 201 instead of after all of them exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from waypost.errors import PermanentError


class MalformedMessage(PermanentError):
    """The bytes cannot be read as a mail message, or reading them would cost too much."""


class MimeLimitExceeded(MalformedMessage):
    """The message is past one of the ``MimeLimits``; ``setting`` names it (``mime.max_parts``)."""

    def __init__(self, found: str, limit: str, setting: str) -> None:
        self.setting = setting
        super().__init__(f"{found}; the limit is {limit} ({setting})")


class MimeLimitSettings(Protocol):
    """The ``[mime]`` settings group as this module reads it (``config.MimeSettings`` is one);
    a Protocol, so mail/ never imports the configuration package that imports mail/."""

    @property
    def max_parts(self) -> int: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def max_header_bytes(self) -> int: ...
    @property
    def max_attachment_bytes(self) -> int: ...
    @property
    def max_filename_length(self) -> int: ...


@dataclass(frozen=True)
class MimeLimits:
    """Defaults equal the defaults of ``settings.mime``."""

    max_parts: int = 200  # every entity with a header section: the message, each part, each attached message
    max_depth: int = 10  # multipart and message/rfc822 levels above the deepest part
    max_header_bytes: int = 256 * 1024  # per header section, the message's own or a part's
    max_attachment_bytes: int = 200 * 1024 * 1024  # decoded, all attachments together
    max_filename_length: int = 120
    # Not settings: the stdlib's structured-header parser (policy.default) spends time that
    # grows with the square of a header's length on hostile values (4 KiB of '"' in a
    # Content-Type: 0.14 s; 100 KB of them in a From: over 3 minutes), so the MIME headers
    # it must parse are bounded one by one and per message.
    max_mime_header_chars: int = 4 * 1024
    max_mime_header_total: int = 64 * 1024

    @classmethod
    def from_settings(cls, mime: MimeLimitSettings) -> MimeLimits:
        return cls(max_parts=mime.max_parts, max_depth=mime.max_depth, max_header_bytes=mime.max_header_bytes,
                   max_attachment_bytes=mime.max_attachment_bytes, max_filename_length=mime.max_filename_length)


class PartMeter:
    """Counts what one parse builds and raises ``MimeLimitExceeded`` at the first limit passed."""

    def __init__(self, limits: MimeLimits, message_size: int | None = None) -> None:
        self.limits = limits
        self.message_size = message_size
        self.parts = 0
        self.mime_header_chars = 0

    def new_part(self) -> int:
        """Count one more entity; return its number (the message itself is 1)."""
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise MimeLimitExceeded(f"the message has more than {self.limits.max_parts:,} MIME parts"
                                    f" (reading stopped at part {self.parts:,}{self._of_message(', in')})",
                                    f"{self.limits.max_parts:,}", "mime.max_parts")
        return self.parts

    def nested(self, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise MimeLimitExceeded(f"the message nests MIME parts {depth:,} levels deep{self._of_message(' in')}",
                                    f"{self.limits.max_depth:,}", "mime.max_depth")

    def header_section(self, size: int, part: int, name: str) -> None:
        """``size``: the bytes of one header section so far, up to and including ``name``."""
        if size > self.limits.max_header_bytes:
            where = "the message's header section" if part == 1 else f"the header section of part {part:,}"
            raise MimeLimitExceeded(f"{where} has at least {size:,} bytes (counted up to its {_quoted(name)} header)",
                                    describe_bytes(self.limits.max_header_bytes), "mime.max_header_bytes")

    def mime_header(self, name: str, length: int, part: int) -> None:
        """Charge one structured header about to be parsed."""
        limits = self.limits
        if length > limits.max_mime_header_chars:
            raise MimeLimitExceeded(f"the {_quoted(name)} header of part {part:,} has {length:,} characters",
                                    f"{limits.max_mime_header_chars:,} characters for one header",
                                    "built in: MimeLimits.max_mime_header_chars")
        self.mime_header_chars += length
        if self.mime_header_chars > limits.max_mime_header_total:
            raise MimeLimitExceeded(f"the MIME headers (Content-Type, Content-Disposition, Content-Transfer-Encoding,"
                                    f" From) add up to more than {limits.max_mime_header_total:,} characters"
                                    f" (by part {part:,})", f"{limits.max_mime_header_total:,} characters",
                                    "built in: MimeLimits.max_mime_header_total")

    def _of_message(self, word: str = " of") -> str:
        return "" if self.message_size is None else f"{word} a message of {describe_bytes(self.message_size)}"


def describe_bytes(size: int) -> str:
    """``209715200`` → ``200 MiB``; ``1536`` → ``1.5 KiB``; ``900`` → ``900 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:,.1f}".removesuffix(".0") + f" {unit}"
    return f"{size:,} bytes"


def _quoted(name: str) -> str:
    return repr(name[:60])
