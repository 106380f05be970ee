"""DKIM body hashes (RFC 6376 §3.4.3, §3.4.4, §3.7) of a message in a file, read in pieces.

dkimpy canonicalizes the body whole, in several copies of it, and splits the whole message into
lines first; for a spooled message (``mail/spooled.py``) that would hold it in memory many times
over. ``SpooledDKIM`` hands dkimpy only the header section and computes each signature's body
hash here, streaming, with dkimpy's own canonicalization functions applied to runs of whole
lines, so the result is the octets dkimpy would hash:

- line ends: dkimpy splits the message at ``\\r?\\n`` and joins the body with CRLF, so a bare LF
  counts as CRLF (a bare CR stays as it is);
- relaxed: trailing white space removed from each line and runs of it made one space;
- empty lines at the end ignored, the body then ending in exactly one CRLF; an empty body is
  CRLF for simple and nothing for relaxed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from typing import Any

import dkim
from dkim.canonicalization import (
    ALGORITHMS,
    CanonicalizationPolicy,
    Relaxed,
    compress_whitespace,
    strip_trailing_whitespace,
)

from waypost.mail.spooled import SpooledMessage

_LINE_END = re.compile(rb"\r?\n")
# dkimpy's end of the header section: the first empty line, however the lines end
_EMPTY_LINE = re.compile(rb"(?:\A|\n)(\r?\n)")
_CRLFS = b"\r\n" * 32 * 1024  # held empty lines are let out this many at a time


class CanonicalBody:
    """Feeds the canonical form of a body, given in pieces that each end at a line end (the
    last may not), to ``sink``."""

    def __init__(self, algorithm: Any, sink: Callable[[bytes], None]) -> None:
        self.relaxed = algorithm is Relaxed
        self.sink = sink
        self.held = 0  # CRLFs at the end of what was fed so far: dropped if nothing else follows
        self.any = False  # anything but empty lines fed so far

    def feed(self, piece: bytes) -> None:
        text = _LINE_END.sub(b"\r\n", piece)
        if self.relaxed:
            text = compress_whitespace(strip_trailing_whitespace(text))
        trailing = _trailing_crlfs(text)
        if len(text) == 2 * trailing:
            self.held += trailing
            return
        self._let_out()
        self.sink(text[:len(text) - 2 * trailing])
        self.any, self.held = True, trailing

    def end(self) -> None:
        if self.any or not self.relaxed:  # one CRLF ends the body; relaxed keeps an empty body empty
            self.sink(b"\r\n")

    def _let_out(self) -> None:
        while self.held:
            count = min(self.held, len(_CRLFS) // 2)
            self.sink(_CRLFS[:2 * count])
            self.held -= count


def _trailing_crlfs(text: bytes) -> int:
    """How many CRLF pairs ``text`` ends with. Every LF in it follows a CR (line ends are made
    CRLF first), so the run of CR and LF at its end is CRs and CRLFs, and the pairs are what
    follows its last lone CR."""
    tail = len(text) - len(text.rstrip(b"\r\n"))
    if not tail or text.endswith(b"\r"):
        return 0
    run = text[len(text) - tail:]
    lone = run.rfind(b"\r\r")
    return (tail - (lone + 1)) // 2 if lone >= 0 else tail // 2


def body_pieces(message: SpooledMessage, start: int) -> Iterable[bytes]:
    """The data from ``start`` in pieces that end at a line end (the last may not)."""
    rest = b""
    for piece in message.pieces(start):
        piece = rest + piece
        cut = piece.rfind(b"\n") + 1
        rest = piece[cut:]
        if cut:
            yield piece[:cut]
    if rest:
        yield rest


class _Digest:
    """The hash of the first ``limit`` octets of what it is fed (all with None), and the count."""

    def __init__(self, hasher: Any, limit: int | None) -> None:
        self.hash = hasher()
        self.limit = limit
        self.length = 0

    def __call__(self, data: bytes) -> None:
        if self.limit is None:
            self.hash.update(data)
        elif self.length < self.limit:
            self.hash.update(data[:self.limit - self.length])
        self.length += len(data)


class SpooledDKIM(dkim.DKIM):
    """dkimpy's verifier over the header section of a spooled message, with body hashes computed
    here from the file (``verify_sig_process`` checks bh= and hands the rest to dkimpy, which
    skips the body when there is no bh=). Raises what ``dkim.DKIM`` raises for a bad header."""

    def __init__(self, message: SpooledMessage) -> None:
        assert message.body_at is not None, "a message without a body is read whole"
        prefix = message.header + b"\r\n"  # the data up to its body
        found = _EMPTY_LINE.search(prefix)
        assert found is not None  # prefix ends with an empty line
        super().__init__(prefix[:found.start(1)] + b"\r\n")
        self.spooled = message
        self.body_start = found.end(1)  # where dkimpy's body starts: a bare LF may end the header
        self._digests: dict[tuple[bytes, bytes, int | None], _Digest] = {}

    def canonical_body(self, body_algorithm: bytes, hash_name: bytes, limit: int | None) -> _Digest:
        """The body's hash and canonical length, read from the file once per combination."""
        key = (body_algorithm, hash_name, limit)
        if key not in self._digests:
            digest = _Digest(dkim.HASH_ALGORITHMS[hash_name], limit)
            body = CanonicalBody(ALGORITHMS[body_algorithm], digest)
            for piece in body_pieces(self.spooled, self.body_start):
                body.feed(piece)
            body.end()
            self._digests[key] = digest
        return self._digests[key]

    def verify_sig_process(self, sig: dict[bytes, bytes], include_headers: list[bytes], sig_header: Any,
                           dnsfunc: Any) -> Any:
        # dkimpy's own order: the TLSRPT checks, the c= value, then the body hash
        if (self.tlsrpt == "strict" and not self.seqtlsrpt) or (not self.tlsrpt and self.seqtlsrpt) \
                or b"bh" not in sig:
            return super().verify_sig_process(sig, include_headers, sig_header, dnsfunc)
        try:
            policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
        except Exception:
            return super().verify_sig_process(sig, include_headers, sig_header, dnsfunc)  # raises for c=
        limit = int(sig[b"l"]) if b"l" in sig and not self.tlsrpt else None
        bodyhash = self.canonical_body(policy.body_algorithm.name, sig[b"a"], limit).hash.digest()
        try:
            bh = base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"]))
        except TypeError as err:
            raise dkim.MessageFormatError(str(err)) from err
        if bodyhash != bh:
            raise dkim.ValidationError(
                f"body hash mismatch (got {base64.b64encode(bodyhash)!s}, expected {sig[b'bh']!s})")
        return super().verify_sig_process({k: v for k, v in sig.items() if k != b"bh"}, include_headers,
                                          sig_header, dnsfunc)

    def canonical_body_length(self, c_value: bytes) -> int:
        """Octets of the canonical body under the body part of ``c_value``: counted by any digest
        of that canonicalization made already (whatever its hash or l=), the file read only if none."""
        name = CanonicalizationPolicy.from_c_value(c_value).body_algorithm.name
        made = next((digest for (algorithm, _, _), digest in self._digests.items() if algorithm == name), None)
        return (made or self.canonical_body(name, b"rsa-sha256", None)).length
