"""Signing keys for unsubscribe tokens and VERP addresses.

``secret_keys`` in the configuration, newest first: the first signs, every one verifies, so a
key can be rotated without breaking the links in mail already sent (add the new key in front,
drop the old one once those mails no longer matter). With none configured, a random key is
made once in ``<data_dir>/secret.key`` (mode 0600) and kept: embedded installs need no setup,
and links survive restarts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from waypost.config import ConfigError, Settings

KEY_FILE_NAME = "secret.key"


def signing_keys(settings: Settings) -> tuple[bytes, ...]:
    if settings.secret_keys:
        return tuple(key.get_secret_value().encode() for key in settings.secret_keys)
    return (_generated_key(settings.data_dir / KEY_FILE_NAME),)


def _generated_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)  # never replaces: a process that raced us keeps its key
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 16:
        raise ConfigError(f"{path}: the signing key is missing or too short; delete the file to make a new one")
    return key.encode()
