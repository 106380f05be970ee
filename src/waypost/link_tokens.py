"""Bearer tokens for links that hand out a file (an export's zip, a relayed attachment): 192
random bits, URL-safe (32 characters), stored only as their SHA-256 so a copy of the database
opens nothing."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 24  # 192 bits


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
