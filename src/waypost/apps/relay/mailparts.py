"""What a device's mail asks for: its recipients (a ``To:`` or ``Recipients:`` line in the first
text part, else the device's defaults) and the problems that stop it from being forwarded."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from waypost.apps.relay.devices import Device
from waypost.mail.addresses import AddressError, normalise_address
from waypost.mail.parse import ParsedMessage

_RECIPIENT_LINE = re.compile(r"^[ \t]*(?:to|recipients)[ \t]*:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)
_SEPARATORS = re.compile(r"[,;\s]+")
MB = 1024 * 1024


@dataclass(frozen=True)
class Request:
    """A device mail read: whom it is for, what it says, what stops it."""

    allowed: tuple[str, ...]  # recipients on the allowlist, in the order written
    unknown: tuple[str, ...]  # recipients dropped (not on the allowlist, or not an address)
    text: str  # the first text part without the recipients line
    problems: tuple[str, ...]  # one sentence each; any problem: nothing is forwarded


def read_request(device: Device, message: ParsedMessage, *, attachment_types: Sequence[str],
                 max_attachments: int) -> Request:
    named, text = recipients_in(message.text)
    wanted = named if named is not None else list(device.default_to)
    allowed: list[str] = []
    unknown: list[str] = []
    for value in dict.fromkeys(wanted):
        address = _address(value)
        (allowed if address is not None and device.allows(address) else unknown).append(address or value[:100])
    problems = [*_recipient_problems(wanted, allowed, device),
                *_attachment_problems(device, message, attachment_types, max_attachments)]
    return Request(tuple(dict.fromkeys(allowed)), tuple(unknown), text, tuple(problems))


def recipients_in(text: str) -> tuple[list[str] | None, str]:
    """The addresses on the first ``To:``/``Recipients:`` line (None: no such line), and the text
    without that line."""
    match = _RECIPIENT_LINE.search(text)
    if match is None:
        return None, text
    values = [value for value in _SEPARATORS.split(match.group(1)) if value]
    return values, (text[:match.start()] + text[match.end():].lstrip("\r\n")).strip("\r\n")


def type_allowed(content_type: str, allowed: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(content_type.lower(), pattern.lower()) for pattern in allowed)


def _address(value: str) -> str | None:
    try:
        return normalise_address(value.strip("<>"))
    except AddressError:
        return None


def _recipient_problems(wanted: Sequence[str], allowed: Sequence[str], device: Device) -> list[str]:
    if not wanted:
        return ["The mail names no recipients (no “To:” line in its text) and the device has no default "
                "recipients."]
    if not allowed:
        return [f"None of its recipients is on the allowlist of device {device.name}."]
    return []


def _attachment_problems(device: Device, message: ParsedMessage, attachment_types: Sequence[str],
                         max_attachments: int) -> list[str]:
    problems = [f"Attachment {a.filename or a.position}: type {a.content_type} is not one the relay forwards."
                for a in message.attachments if not type_allowed(a.content_type, attachment_types)]
    total = sum(len(a.data) for a in message.attachments)
    if total > device.max_mb * MB or message.skipped:
        problems.append(f"The attachments are larger than the device's limit of {device.max_mb} MB.")
    if len(message.attachments) > max_attachments:
        problems.append(f"The mail has {len(message.attachments)} attachments; at most {max_attachments} are "
                        "forwarded.")
    problems.extend(f"An attachment was not kept: {note}." for note in message.notes)
    return problems
