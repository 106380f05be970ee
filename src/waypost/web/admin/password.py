"""The console's password file: one scrypt hash, written by `waypost admin passwd`.

Format (one line, like the submission users file without the user name)::

    scrypt$n$r$p$salt_b64$hash_b64

``n``, ``r``, ``p`` are hashlib.scrypt's cost parameters (we write n=2**14, r=8, p=1), the
salt is 16 random bytes and the hash the 32-byte derived key, both standard base64. The file
is replaced atomically (temporary file, fsync, rename, directory fsync) with mode 0600 and
read afresh at every login, so a new password applies without a restart. Nothing here
imports the web framework: the CLI uses this module on its own.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from waypost.errors import WaypostError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
SCRYPT_MAXMEM = 64 * 1024 * 1024  # refuses absurd cost parameters in a tampered file
MIN_PASSWORD_LENGTH = 12


class PasswordFileError(WaypostError):
    """The password file cannot be written, or the password is unusable."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES,
                         maxmem=SCRYPT_MAXMEM)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for a mismatch or a malformed hash."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        derived = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True), n=int(n),
                                 r=int(r), p=int(p), dklen=len(expected), maxmem=SCRYPT_MAXMEM)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(derived, expected)


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@functools.cache
def decoy_hash() -> str:
    """Checked against when no password is set, so a refusal takes as long as a real check."""
    return hash_password(secrets.token_urlsafe(16))
