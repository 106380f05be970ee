"""Password hashes, the one format used by the submission users file and the console's
password file: ``scrypt$n$r$p$salt_b64$hash_b64``.

``n``, ``r``, ``p`` are hashlib.scrypt's cost parameters (we write n=2**14, r=8, p=1), the salt
is 16 random bytes and the hash the 32-byte derived key, both standard base64. A stored hash
keeps its own parameters, so they can be raised later without breaking old entries.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
SCRYPT_MAXMEM = 64 * 1024 * 1024  # refuses absurd cost parameters in a tampered file


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


@functools.cache
def decoy_hash() -> str:
    """Checked against when there is no stored hash, so a refusal takes as long as a real check."""
    return hash_password(secrets.token_urlsafe(16))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
