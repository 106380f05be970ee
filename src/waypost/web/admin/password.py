"""The console's password file: one scrypt hash, written by `waypost admin passwd`.

Format (one line, like the submission users file without the user name)::

    scrypt$n$r$p$salt_b64$hash_b64

(``waypost.passwords``, shared with the submission users file). The file
is replaced atomically (temporary file, fsync, rename, directory fsync) with mode 0600 and
read afresh at every login, so a new password applies without a restart. Nothing here
imports the web framework: the CLI uses this module on its own.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from waypost.errors import WaypostError
from waypost.passwords import decoy_hash, hash_password, verify_password

__all__ = ["PasswordFileError", "decoy_hash", "read_hash", "verify_password", "write_password"]

MIN_PASSWORD_LENGTH = 12


class PasswordFileError(WaypostError):
    """The password file cannot be written, or the password is unusable."""


def read_hash(path: Path) -> str | None:
    """The stored hash, or None when there is no usable password file (no password login)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.startswith("scrypt$") and text.count("$") == 5 else None


def write_password(path: Path, password: str) -> None:
    """Replace the password file with a hash of ``password`` (at least 12 characters)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordFileError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters "
                                "(try: openssl rand -base64 18)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(hash_password(password) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
