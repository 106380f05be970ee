"""Unsubscribe tokens and the unsubscribe action (RFC 8058 one-click, RFC 2369 mailto).

A token names the recipient and the stream, encrypted and authenticated (AES-256-GCM, RFC 5116)
under a key derived by HKDF (RFC 5869) from the configured signing keys, newest first: the
first encrypts, every one decrypts, so rotated keys keep old links working. Whoever sees the
URL (a proxy's log, a forwarded mail, a link scanner) learns nothing about the address or the
stream, and nobody without a key can make one. A token carries everything needed: no database
row has to survive for a link in an old mail to work.

Tokens of the first format (itsdangerous: readable base64 JSON with an HMAC-SHA256) are in
mail already sent. They are still accepted, for as long as the key that signed them is
configured, and never issued again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.engine import Connection

from waypost.errors import PermanentError
from waypost.mail.addresses import AddressError, normalise_address
from waypost.outbound import suppression

VERSION = b"\x02"  # first byte of every opaque token; the legacy format has none
HKDF_INFO = b"waypost.unsubscribe.v2 aes-256-gcm"  # a key of its own, never the HMAC key itself
NONCE_BYTES = 12  # random per token: 2^32 tokens per key stay far inside AES-GCM's bound (NIST SP 800-38D §8.3)
PAD_TO = 32  # plaintext padded to a multiple, so a token's length hardly hints at the address's
# an opaque token: base64url without padding of VERSION + nonce + ciphertext + 16-byte tag
OPAQUE_PATTERN = re.compile(r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_-]{64,700}(?![A-Za-z0-9_-])")

LEGACY_SALT = "waypost.unsubscribe.v1"
# itsdangerous URL-safe tokens: base64url payload '.' base64url signature; a payload that
# compresses well is zlib-compressed and marked by a leading '.'
LEGACY_PATTERN = re.compile(r"(?<![A-Za-z0-9_.-])\.?[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{20,}")


class InvalidToken(PermanentError):
    """Not a token we made (forged, truncated, or made with a key no longer configured)."""


@dataclass(frozen=True)
class Subscription:
    address: str
    stream: str


def _aead(key: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(key))


def _b64decode(token: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as err:
        raise InvalidToken("this unsubscribe link is not valid") from err


def _subscription(data: object) -> Subscription:
    if not isinstance(data, dict):
        raise InvalidToken("this unsubscribe link is not valid")
    try:
        return Subscription(normalise_address(str(data["a"])), str(data["s"]))
    except (KeyError, AddressError) as err:
        raise InvalidToken("this unsubscribe link is not valid") from err


class UnsubscribeTokens:
    """Makes opaque tokens with the first key; reads tokens of either format made with any key.

    ``read`` raises ``InvalidToken`` for anything else; ``find`` returns None instead.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._aeads = [_aead(key) for key in keys]
        # itsdangerous verifies with every key (it signs with the last, which we never do now)
        self._legacy = URLSafeSerializer(list(reversed(keys)), salt=LEGACY_SALT,
                                         signer_kwargs={"digest_method": hashlib.sha256})

    def make(self, address: str, stream: str) -> str:
        plaintext = json.dumps({"a": address, "s": stream}, separators=(",", ":")).encode()
        plaintext += b" " * (-len(plaintext) % PAD_TO)  # JSON ignores trailing whitespace
        nonce = os.urandom(NONCE_BYTES)
        sealed = VERSION + nonce + self._aeads[0].encrypt(nonce, plaintext, VERSION)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def read(self, token: str) -> Subscription:
        if "." in token:  # only the legacy format has one
            return self._read_legacy(token)
        sealed = _b64decode(token)
        if sealed[:1] != VERSION:
            raise InvalidToken("this unsubscribe link is not valid")
        return _subscription(json.loads(self._open(sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:])))

    def _open(self, nonce: bytes, ciphertext: bytes) -> bytes:
        for aead in self._aeads:  # newest key first: most tokens in use were made with it
            try:
                return aead.decrypt(nonce, ciphertext, VERSION)
            except (InvalidTag, ValueError):  # another key's token, or too short for nonce and tag
                continue
        raise InvalidToken("this unsubscribe link is not valid")

    def _read_legacy(self, token: str) -> Subscription:
        try:
            data = self._legacy.loads(token)
        except BadSignature as err:
            raise InvalidToken("this unsubscribe link is not valid") from err
        return _subscription(data)

    def find(self, text: str) -> Subscription | None:
        """The first valid token anywhere in ``text`` (a subject or body of a mailto reply)."""
        for pattern in (OPAQUE_PATTERN, LEGACY_PATTERN):
            for match in pattern.finditer(text):
                try:
                    return self.read(match.group(0))
                except InvalidToken:
                    continue
        return None

    def links(self, address: str, stream: str, *, base_url: str, mailto: str) -> tuple[str, str]:
        """The one-click https URL and the mailto URI for ``List-Unsubscribe``. The mailto
        form carries the token in its subject: a token is too long for a local part (64)."""
        token = self.make(address, stream)
        return f"{base_url}/u/{token}", f"mailto:{mailto}?subject={quote('unsubscribe ' + token)}"


# what else leaving a stream means, per stream (journeys: off the allowlist too)
StreamHook = Callable[[Connection, str], object]  # its result is ignored


class Unsubscriber:
    def __init__(self, tokens: UnsubscribeTokens, hooks: dict[str, StreamHook] | None = None) -> None:
        self.tokens = tokens
        self.hooks = dict(hooks or {})

    def apply(self, conn: Connection, subscription: Subscription, source: str) -> bool:
        """Suppress the address and run the stream's hook, inside the caller's transaction.
        Idempotent; True when the address was not suppressed before."""
        hook = self.hooks.get(subscription.stream)
        # the detail says whether the hook took an allowlist entry off, so ``start`` can give it back
        removed = hook(conn, subscription.address) is True if hook is not None else False
        return suppression.add(conn, subscription.address, suppression.Reason.UNSUBSCRIBE, source,
                               detail=f"stream {subscription.stream}" + (suppression.LEFT_ALLOWLIST if removed else ""))
