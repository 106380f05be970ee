"""HTML form bodies, read with a size cap: URL-encoded, or multipart with file fields (the
CSV import). Parsed with the standard library, so the console needs no multipart package."""

from __future__ import annotations

import email.policy
from dataclasses import dataclass, field
from email.parser import BytesParser
from urllib.parse import parse_qs

from starlette.requests import Request

from waypost.web.operator_api import read_limited

MAX_FORM = 8 * 1024 * 1024  # a CSV import of some 100,000 addresses


@dataclass(frozen=True)
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def text(self, name: str, limit: int = 2000) -> str:
        """The field stripped of surrounding white space and cut to ``limit`` characters."""
        return self.get(name).strip()[:limit]


EMPTY = Form()


async def read_form(request: Request, limit: int = MAX_FORM) -> Form | None:
    """The submitted form; None when the body is larger than ``limit``. A body of another
    type reads as an empty form (which then lacks its CSRF token)."""
    body = await read_limited(request, limit)
    if body is None:
        return None
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return Form(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
    if kind == "multipart/form-data":
        return _multipart(content_type, body)
    return EMPTY


def _multipart(content_type: str, body: bytes) -> Form:
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace") + body)
    fields: dict[str, list[str]] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)  # bytes for a leaf part, which every form field is
        value = payload if isinstance(payload, bytes) else b""
        if part.get_param("filename", header="content-disposition") is not None:
            files[name] = value
        else:
            fields.setdefault(name, []).append(value.decode("utf-8", "replace"))
    return Form(fields, files)
