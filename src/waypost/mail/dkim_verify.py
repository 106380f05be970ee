"""DKIM verification (RFC 6376) of every signature on an inbound message, with local limits
against mail built to burn CPU.

dkimpy verifies; its ``dnsfunc`` is a ``_KeyFetcher`` that asks our resolver for the selector's
key record, so a DNS failure is told apart from a missing key (temperror, not permerror) and a
key too costly to verify with is refused (RFC 8601 dkim=policy). Alignment with the From domain
is DMARC's business and is set by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping

import dkim
import dkim.util
import dns.resolver

from waypost.mail.dkim_body import SpooledDKIM
from waypost.mail.resolver import DnsUnavailable, txt_records
from waypost.mail.spooled import SpooledMessage
from waypost.mail.verdict import DkimResult, clip

MAX_DKIM_SIGNATURES = 10  # more are listed in the detail but not verified: each costs a body hash and a lookup
# Local policy (RFC 8601 dkim=policy) against mail built to burn CPU: dkimpy scans the whole
# header block once per h= entry, and verifies RSA in pure Python, where a sender's own key record
# can publish a huge modulus and exponent. RFC 8301 §3.2 only asks verifiers for 1024-4096 bits.
# Real signatures list 5 to 50 fields; real mail has tens of header fields, a few hundred at most.
MAX_SIGNED_FIELDS = 100
MAX_HEADER_FIELDS = 5000
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT_BITS = 64


class _KeyRefused(Exception):
    """A key record too costly to verify with (RFC 8601 dkim=policy); not a dkimpy exception, so
    dkimpy cannot turn it into a plain fail."""


def _refuse_costly_key(name: str, record: bytes) -> None:
    try:
        key, bits, kind, _tlsrpt = dkim.evaluate_pk(name.encode("ascii", "replace"), record)
    except Exception:
        return  # malformed: dkimpy refuses it itself, and failure() explains
    if kind == b"rsa" and (bits > MAX_RSA_BITS or key["publicExponent"].bit_length() > MAX_RSA_EXPONENT_BITS):
        raise _KeyRefused(f"RSA key at {name} of {bits} bits, exponent {key['publicExponent'].bit_length()} bits: "
                          f"over the local limit ({MAX_RSA_BITS}, {MAX_RSA_EXPONENT_BITS})")


class _KeyFetcher:
    """dkimpy's ``dnsfunc``: the selector's TXT record through our resolver, remembered so a
    failed verification can be told apart (no key, bad key, bad signature)."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver
        self.name = ""
        self.record: bytes | None = None

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        self.name = name.decode("ascii", "replace").rstrip(".")
        records = txt_records(self.resolver, self.name) if name.isascii() else []
        self.record = records[0] if records else None  # several keys: RFC 6376 §3.6.2.2 lets us pick one
        if self.record is not None:
            _refuse_costly_key(self.name, self.record)
        return self.record

    def failure(self, domain: str, selector: str) -> DkimResult:
        if self.record is None:  # RFC 6376 §6.1.2: no key for the signature is a PERMFAIL
            return DkimResult(domain, selector, "permerror", False, clip(f"no key record at {self.name}"))
        try:
            dkim.evaluate_pk(self.name.encode("ascii", "replace"), self.record)
        except Exception as err:
            return DkimResult(domain, selector, "permerror", False, clip(f"unusable key record: {err}"))
        return DkimResult(domain, selector, "fail", False, "signature did not verify")


def _identity(tags: Mapping[bytes, bytes]) -> tuple[str, str]:
    domain = tags.get(b"d", b"").decode("ascii", "replace").strip().lower().rstrip(".")
    return clip(domain, 255), clip(tags.get(b"s", b"").decode("ascii", "replace").strip(), 255)


def _loose_identity(header_value: bytes) -> tuple[str, str]:
    """d= and s= of a signature that dkimpy refused, for the record, if they can be read."""
    try:
        return _identity(dkim.util.parse_tag_value(header_value))
    except Exception:
        return "", ""


def _verify_signature(message: dkim.DKIM, idx: int, header_value: bytes,
                      resolver: dns.resolver.Resolver) -> DkimResult:
    domain, selector = _loose_identity(header_value)
    try:  # tag syntax, required tags, expiry: a malformed signature is a PERMFAIL (RFC 6376 §6.1.1)
        sig, include_headers, sig_headers = message.verify_headerprep(idx)
    except Exception as err:
        return DkimResult(domain, selector, "permerror", False, clip(f"malformed signature: {err}"))
    domain, selector = _identity(sig)
    if len(include_headers) > MAX_SIGNED_FIELDS:
        return DkimResult(domain, selector, "policy", False,
                          f"h= lists {len(include_headers)} fields, over the local limit of {MAX_SIGNED_FIELDS}")
    keys = _KeyFetcher(resolver)
    try:
        valid = message.verify_sig(sig, include_headers, sig_headers[idx], keys)
    except DnsUnavailable as err:
        return DkimResult(domain, selector, "temperror", False, clip(f"key lookup failed: {err}"))
    except _KeyRefused as err:
        return DkimResult(domain, selector, "policy", False, clip(str(err)))
    except dkim.ValidationError as err:  # after the tags were checked, only the body hash raises this
        return DkimResult(domain, selector, "fail", False, clip(str(err)))
    except Exception as err:  # short key, bad base64, unknown algorithm
        return DkimResult(domain, selector, "permerror", False, clip(f"{type(err).__name__}: {err}"))
    if not valid:
        return keys.failure(domain, selector)
    return _body_coverage(message, sig) or DkimResult(domain, selector, "pass", False, "signature verified")


def _body_coverage(message: dkim.DKIM, sig: Mapping[bytes, bytes]) -> DkimResult | None:
    """None when the signature covers the whole body; else why a verified signature still does
    not authenticate the message.

    RFC 6376 §8.2: with l= anyone may append content (a new MIME part, a different link) and the
    signature still verifies, so a pass would vouch for text the signer never wrote. Content
    after l= is unsigned; the gate must not rest on such a signature, so it is local policy
    (RFC 8601 dkim=policy), which no DMARC alignment counts. An l= covering the body exactly
    changes nothing and passes.
    """
    if b"l" not in sig:
        return None
    domain, selector = _identity(sig)
    signed_octets = int(sig[b"l"])  # decimal: dkimpy checked the tag and already hashed that many
    c_value = sig.get(b"c", b"simple/simple")
    if isinstance(message, SpooledDKIM):
        body_octets = message.canonical_body_length(c_value)
    else:
        body_octets = len(dkim.CanonicalizationPolicy.from_c_value(c_value).canonicalize_body(message.body))
    if signed_octets > body_octets:  # RFC 6376 §3.5: l= MUST NOT be larger than the body
        return DkimResult(domain, selector, "permerror", False,
                          f"body length limit l={signed_octets} exceeds the body of {body_octets} octets")
    if signed_octets < body_octets:
        return DkimResult(domain, selector, "policy", False,
                          f"body length limit covers only {signed_octets} of {body_octets} octets")
    return None


def check_dkim(raw: bytes | SpooledMessage, resolver: dns.resolver.Resolver) -> tuple[list[DkimResult], str]:
    """Every DKIM-Signature, top first, up to MAX_DKIM_SIGNATURES; alignment is set later. A
    spooled message is read from its file in pieces (``mail/dkim_body.py``), with the same
    results."""
    if isinstance(raw, SpooledMessage) and raw.body_at is None:  # all header: small, read whole
        raw = raw.read(0, raw.size)
    try:
        message = SpooledDKIM(raw) if isinstance(raw, SpooledMessage) else dkim.DKIM(raw)
    except Exception as err:
        whole = raw.header if isinstance(raw, SpooledMessage) else raw
        head = whole.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
        if b"dkim-signature" not in head:
            return [], "no signature (header block unparseable)"
        return [DkimResult("", "", "permerror", False, clip(f"header block unparseable: {err}"))], "unparseable"
    values = [value for name, value in message.headers if name.lower() == b"dkim-signature"]
    checked = values[:MAX_DKIM_SIGNATURES]
    if len(message.headers) > MAX_HEADER_FIELDS:
        reason = f"{len(message.headers)} header fields, over the local limit of {MAX_HEADER_FIELDS}"
        results = [DkimResult(*_loose_identity(value), "policy", False, reason) for value in checked]
    else:
        results = [_verify_signature(message, idx, value, resolver) for idx, value in enumerate(checked)]
    note = f"{len(values)} signature(s)" if values else "no signature"
    if len(values) > MAX_DKIM_SIGNATURES:
        note += f", only the first {MAX_DKIM_SIGNATURES} verified"
    return results, note
