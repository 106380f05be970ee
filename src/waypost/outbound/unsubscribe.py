"""Unsubscribe tokens and the unsubscribe action (RFC 8058 one-click, RFC 2369 mailto).

A token names the recipient and the stream and is signed (itsdangerous, HMAC-SHA256) with
the configured keys, newest first, so rotated keys keep old links working. It carries
everything needed: no database row has to survive for a link in an old mail to work.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.engine import Connection

from waypost.errors import PermanentError
from waypost.mail.addresses import AddressError, normalise_address
from waypost.outbound import suppression

SALT = "waypost.unsubscribe.v1"
# itsdangerous URL-safe tokens: base64url payload '.' base64url signature; a payload that
# compresses well is zlib-compressed and marked by a leading '.'
TOKEN_PATTERN = re.compile(r"(?<![A-Za-z0-9_.-])\.?[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{20,}")


class InvalidToken(PermanentError):
    """Not a token we signed (forged, truncated, or signed with a key no longer configured)."""


@dataclass(frozen=True)
class Subscription:
    address: str
    stream: str


class UnsubscribeTokens:
    def __init__(self, keys: Sequence[bytes]) -> None:
        # itsdangerous signs with the last key and verifies with all of them
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt=SALT,
                                             signer_kwargs={"digest_method": hashlib.sha256})

    def make(self, address: str, stream: str) -> str:
        return str(self._serializer.dumps({"a": address, "s": stream}))

    def read(self, token: str) -> Subscription:
        try:
            data = self._serializer.loads(token)
            return Subscription(normalise_address(str(data["a"])), str(data["s"]))
        except (BadSignature, KeyError, TypeError, AddressError) as err:
            raise InvalidToken("this unsubscribe link is not valid") from err

    def find(self, text: str) -> Subscription | None:
        """The first valid token anywhere in ``text`` (a subject or body of a mailto reply)."""
        for match in TOKEN_PATTERN.finditer(text):
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
        new = suppression.add(conn, subscription.address, suppression.Reason.UNSUBSCRIBE, source,
                              detail=f"stream {subscription.stream}")
        hook = self.hooks.get(subscription.stream)
        if hook is not None:
            hook(conn, subscription.address)
        return new
