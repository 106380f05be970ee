"""Sender authentication of inbound mail: SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489),
reported as one ``AuthVerdict`` whichever ingress delivered the mail.

Only what we verify ourselves (or what Amazon SES states in its receipt) counts: an
``Authentication-Results`` header that arrives with the message is never read, since anyone can
write one (RFC 8601 §5). Every DNS question goes through the one dnspython ``Resolver`` given to
``verify``: dkimpy gets it as its ``dnsfunc``, pyspf through its ``DNSLookup`` hook (below), and the
DMARC policy lookup is ours. DMARC uses the Public Suffix List that the ``publicsuffixlist``
package ships, so finding an organizational domain never touches the network.

``verify`` never raises: hostile or broken mail becomes permerror, DNS trouble temperror.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import ipaddress
import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.util
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
from publicsuffixlist import PublicSuffixList

from waypost.errors import ConfigError

with warnings.catch_warnings():
    # pyspf 2.0.14 has invalid escape sequences in docstrings: Python warns when it compiles them
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", SyntaxWarning)
    import spf

log = logging.getLogger(__name__)

MAX_DKIM_SIGNATURES = 10  # more are listed in the detail but not verified: each costs a body hash and a lookup
# Local policy (RFC 8601 dkim=policy) against mail built to burn CPU: dkimpy scans the whole
# header block once per h= entry, and verifies RSA in pure Python, where a sender's own key record
# can publish a huge modulus and exponent. RFC 8301 §3.2 only asks verifiers for 1024-4096 bits.
# Real signatures list 5 to 50 fields; real mail has tens of header fields, a few hundred at most.
MAX_SIGNED_FIELDS = 100
MAX_HEADER_FIELDS = 5000
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT_BITS = 64
SPF_TIME_LIMIT = 20.0  # seconds for one check_host(); RFC 7208 §4.6.4 says allow at least 20
_ATTEMPT_TIMEOUT = 2.0  # one try at one server; the resolver retries within its lifetime
_TEXT_LIMIT = 300

SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
DKIM_RESULTS = frozenset({"pass", "fail", "neutral", "none", "policy", "temperror", "permerror"})
DMARC_RESULTS = frozenset({"pass", "fail", "none", "temperror", "permerror"})
DMARC_POLICIES = frozenset({"none", "quarantine", "reject"})
SOURCES = frozenset({"smtp", "ses"})
SPF_SCOPES = frozenset({"mailfrom", "helo"})


# ---------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class DkimResult:
    """One DKIM-Signature: its d= and s=, the RFC 8601 result, and whether d= aligns with the
    From domain under the DMARC record's adkim (relaxed when there is no record)."""

    domain: str
    selector: str
    result: str
    aligned: bool
    reason: str = ""

    def __post_init__(self) -> None:
        if self.result not in DKIM_RESULTS:
            raise ValueError(f"not a DKIM result: {self.result!r}")


@dataclass(frozen=True)
class AuthVerdict:
    """SPF, DKIM and DMARC results for one message (result words of RFC 8601 §2.7 and, for
    DMARC, RFC 7489 §11.2).

    ``spf_domain`` is the identity SPF checked: the MAIL FROM domain, or the HELO name when MAIL
    FROM was null (``spf_scope`` "helo", RFC 7208 §2.4). ``dmarc_policy`` is the policy that
    applies to the From domain (``sp=`` for a subdomain covered by its organizational domain's
    record). ``spam`` and ``virus`` carry SES's scan verdicts and are None for SMTP.
    Construction raises ``ValueError`` for a word outside those sets.
    """

    spf: str
    spf_domain: str | None
    spf_aligned: bool
    dkim: tuple[DkimResult, ...]
    dmarc: str
    dmarc_policy: str | None
    dmarc_record_found: bool
    from_domain: str | None
    source: str
    detail: str = ""
    spam: str | None = None
    virus: str | None = None
    spf_scope: str = "mailfrom"

    def __post_init__(self) -> None:
        checks = ((self.spf, SPF_RESULTS, "SPF result"), (self.dmarc, DMARC_RESULTS, "DMARC result"),
                  (self.source, SOURCES, "source"), (self.spf_scope, SPF_SCOPES, "SPF scope"))
        for value, allowed, what in checks:
            if value not in allowed:
                raise ValueError(f"not a {what}: {value!r}")
        if self.dmarc_policy is not None and self.dmarc_policy not in DMARC_POLICIES:
            raise ValueError(f"not a DMARC policy: {self.dmarc_policy!r}")

    @property
    def spf_aligned_pass(self) -> bool:
        return self.spf == "pass" and self.spf_aligned

    @property
    def dkim_aligned_pass(self) -> bool:
        """A signature by the From domain (or, relaxed, its organizational domain) verified."""
        return any(sig.result == "pass" and sig.aligned for sig in self.dkim)

    @property
    def aligned_pass(self) -> bool:
        """An aligned SPF or DKIM pass, whether or not the From domain publishes DMARC."""
        return self.spf_aligned_pass or self.dkim_aligned_pass

    @property
    def dmarc_pass(self) -> bool:
        """DMARC passed: the From domain publishes a policy and SPF or DKIM passed aligned
        (for SES: SES said so)."""
        return self.dmarc == "pass"

    def to_header(self, authserv_id: str) -> str:
        """The value of an ``Authentication-Results:`` field (RFC 8601 §2.2). Every domain and
        selector is a token or a quoted-string, so hostile text cannot add fields."""
        if not authserv_id.strip():
            raise ValueError("authserv-id must not be empty")
        note = " (via Amazon SES)" if self.source == "ses" else ""
        spf_part = f"spf={self.spf}{note}" + _prop(f"smtp.{self.spf_scope}", self.spf_domain)
        dkim_parts = [f"dkim={sig.result}{note}" + _prop("header.d", sig.domain) + _prop("header.s", sig.selector)
                      for sig in self.dkim] or [f"dkim=none{note}"]
        policy = f" (p={self.dmarc_policy})" if self.dmarc_policy else ""
        dmarc_part = f"dmarc={self.dmarc}{note}{policy}" + _prop("header.from", self.from_domain)
        return "; ".join([_value(authserv_id.strip()), spf_part, *dkim_parts, dmarc_part])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for a database JSON column); ``from_json`` reads it back."""
        data = dataclasses.asdict(self)
        data["dkim"] = [dataclasses.asdict(sig) for sig in self.dkim]
        return {"version": 1, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthVerdict:
        """Raises ``ValueError`` when ``data`` is not what ``to_json`` writes."""
        if not isinstance(data, Mapping) or data.get("version") != 1:
            raise ValueError("not a stored AuthVerdict (version 1)")
        signatures = data.get("dkim")
        if not isinstance(signatures, list):
            raise ValueError("dkim: expected a list")
        fields = {f.name: _typed(data, f.name, _JSON_TYPES[f.name])
                  for f in dataclasses.fields(cls) if f.name != "dkim"}
        dkim_results = tuple(DkimResult(**{f.name: _typed(sig, f.name, _JSON_TYPES[f.name])
                                           for f in dataclasses.fields(DkimResult)})
                             for sig in signatures)
        return cls(dkim=dkim_results, **fields)


_OPTIONAL_TEXT = (str, type(None))
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "spf": (str,), "spf_domain": _OPTIONAL_TEXT, "spf_aligned": (bool,), "dmarc": (str,),
    "dmarc_policy": _OPTIONAL_TEXT, "dmarc_record_found": (bool,), "from_domain": _OPTIONAL_TEXT,
    "source": (str,), "detail": (str,), "spam": _OPTIONAL_TEXT, "virus": _OPTIONAL_TEXT, "spf_scope": (str,),
    "domain": (str,), "selector": (str,), "result": (str,), "aligned": (bool,), "reason": (str,),
}


def _typed(data: Any, key: str, types: tuple[type, ...]) -> Any:
    if not isinstance(data, Mapping) or key not in data or not isinstance(data[key], types):
        raise ValueError(f"{key}: missing or not {' or '.join(t.__name__ for t in types)}")
    return data[key]


_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")  # RFC 2045 token characters a domain or selector needs


def _value(text: str) -> str:
    """A token when it is one, else a quoted-string (RFC 5322 §3.2.4) with every character
    outside printable ASCII replaced: no CR/LF, ';' or '(' can leave the quotes."""
    if _TOKEN.fullmatch(text):
        return text
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prop(name: str, value: str | None) -> str:
    return f" {name}={_value(value)}" if value else ""


# ---------------------------------------------------------------- DNS


def make_resolver(nameservers: tuple[str, ...], timeout: float) -> dns.resolver.Resolver:
    """The resolver for every authentication lookup. Empty ``nameservers``: the system's
    (/etc/resolv.conf); else exactly those ("ip", "ip:port", "[ipv6]:port"), with no system
    fallback. ``timeout`` bounds each lookup. Raises ``ValueError`` for a malformed server and
    ``ConfigError`` when the system has no resolver configured."""
    if not timeout > 0:
        raise ValueError("DNS timeout must be positive")
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*_split_nameserver(text)) for text in nameservers]
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise ConfigError("no system DNS resolver is configured: set dns_nameservers") from None
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, _ATTEMPT_TIMEOUT)
    return resolver


def _split_nameserver(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [ipv6]:port")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    try:
        address, number = ipaddress.ip_address(host), int(port or 53)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address with an optional :port") from None
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return str(address), number


class _DnsUnavailable(Exception):
    """No answer (SERVFAIL, timeout, refused): a later retry may get one, so RFC 8601 temperror.
    Not a dkimpy exception on purpose: dkimpy would turn its own DNS errors into a plain fail."""


def _lookup(resolver: dns.resolver.Resolver, name: str, rdtype: str, lifetime: float | None = None) -> list[Any]:
    """The records of ``rdtype`` at ``name``; [] when there are none or ``name`` is no DNS name."""
    try:
        qname = dns.name.from_text(name)
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return []
    try:
        answer = resolver.resolve(qname, rdtype, search=False, lifetime=lifetime)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as err:
        raise _DnsUnavailable(f"{name} {rdtype}: {err}") from err
    return list(answer)


def _txt(resolver: dns.resolver.Resolver, name: str) -> list[bytes]:
    """Each TXT record's strings joined into one (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
    return [b"".join(record.strings) for record in _lookup(resolver, name, "TXT")]


# pyspf asks the module-level function spf.DNSLookup for every record. We replace it once with
# one that uses the resolver of the current verify() call (a context variable, so concurrent
# checks in threads or tasks each keep their own); outside verify() pyspf behaves as shipped.
_SPF_RESOLVER: contextvars.ContextVar[dns.resolver.Resolver | None] = contextvars.ContextVar(
    "waypost_spf_resolver", default=None)
_PYSPF_LOOKUP = getattr(spf, "_waypost_original_lookup", spf.DNSLookup)
_SPF_RDATA = {
    "A": lambda r: r.address, "AAAA": lambda r: r.address,
    "MX": lambda r: (r.preference, r.exchange.to_text(omit_final_dot=True)),
    "PTR": lambda r: r.target.to_text(omit_final_dot=True),
    "TXT": lambda r: tuple(r.strings), "SPF": lambda r: tuple(r.strings),
}


def _spf_dns_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[tuple[Any, Any]]:
    """pyspf's lookup contract: [((name, qtype), value)], [] for no data, TempError for none."""
    resolver = _SPF_RESOLVER.get()
    if resolver is None:
        return _PYSPF_LOOKUP(name, qtype, strict, timeout)
    convert = _SPF_RDATA.get(qtype)
    if convert is None:
        return []
    try:
        records = _lookup(resolver, name, qtype, lifetime=max(0.1, min(timeout, resolver.lifetime)))
    except _DnsUnavailable as err:
        raise spf.TempError(f"DNS {err}") from err
    return [((name, qtype), convert(record)) for record in records]


spf._waypost_original_lookup = _PYSPF_LOOKUP  # type: ignore[attr-defined]
spf.DNSLookup = _spf_dns_lookup


# ---------------------------------------------------------------- domains


@functools.cache
def _suffix_list() -> PublicSuffixList:
    return PublicSuffixList()  # the list bundled with the package; no download


def organizational_domain(domain: str) -> str:
    """The registrable domain (RFC 7489 §3.2): one label below the public suffix, by the whole
    bundled Public Suffix List, private section included, so user1.github.io and user2.github.io
    never align. A name that is itself a public suffix is its own organizational domain."""
    return _suffix_list().privatesuffix(domain) or domain


_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def normalise_domain(domain: str | None) -> str | None:
    """Lower-case A-label form without the root dot; None when it is no DNS host name
    (letters, digits, '-' and '_' in labels of at most 63 octets, RFC 1035 §2.3.4)."""
    if not isinstance(domain, str) or not domain.strip().rstrip("."):
        return None
    try:
        text = dns.name.from_text(domain.strip().rstrip(".")).to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return None
    return text if _HOST_NAME.fullmatch(text) else None


def _aligned(identifier: str | None, from_domain: str | None, mode: str) -> bool:
    """RFC 7489 §3.1: strict means the same name, relaxed the same organizational domain."""
    if not identifier or not from_domain:
        return False
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


def _clip(text: str, limit: int = _TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---------------------------------------------------------------- SPF


@dataclass(frozen=True)
class _Spf:
    result: str
    domain: str | None
    scope: str
    explanation: str


def _check_spf(resolver: dns.resolver.Resolver, peer_ip: str | None, helo: str | None,
               mail_from: str | None) -> _Spf:
    sender = (mail_from or "").strip().removeprefix("<").removesuffix(">").strip()
    scope = "mailfrom" if sender else "helo"
    # pyspf splits at the first '@', but a quoted local part may hold one: split at the last
    local, _, raw_domain = sender.rpartition("@") if sender else ("postmaster", "", helo or "")
    domain = normalise_domain(raw_domain)
    if domain is None:
        return _Spf("none", None, scope, f"no valid {scope} domain to check")
    try:
        address = str(ipaddress.ip_address((peer_ip or "").strip()))
    except ValueError:
        return _Spf("none", domain, scope, "no usable client IP address")
    local = local if local and "@" not in local else "postmaster"
    query = spf.query(i=address, s=f"{local}@{domain}", h=normalise_domain(helo) or "unknown",
                      querytime=SPF_TIME_LIMIT)
    token = _SPF_RESOLVER.set(resolver)
    try:
        result, _code, explanation = query.check()
    except Exception as err:  # pyspf raises bare exceptions on some hostile input
        return _Spf("permerror", domain, scope, f"SPF evaluation failed: {type(err).__name__}: {err}")
    finally:
        _SPF_RESOLVER.reset(token)
    if result not in SPF_RESULTS:
        return _Spf("permerror", domain, scope, f"unexpected SPF result {result!r}: {explanation}")
    return _Spf(result, domain, scope, str(explanation) or ("no SPF record" if result == "none" else ""))


# ---------------------------------------------------------------- DKIM


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
        records = _txt(self.resolver, self.name) if name.isascii() else []
        self.record = records[0] if records else None  # several keys: RFC 6376 §3.6.2.2 lets us pick one
        if self.record is not None:
            _refuse_costly_key(self.name, self.record)
        return self.record

    def failure(self, domain: str, selector: str) -> DkimResult:
        if self.record is None:  # RFC 6376 §6.1.2: no key for the signature is a PERMFAIL
            return DkimResult(domain, selector, "permerror", False, _clip(f"no key record at {self.name}"))
        try:
            dkim.evaluate_pk(self.name.encode("ascii", "replace"), self.record)
        except Exception as err:
            return DkimResult(domain, selector, "permerror", False, _clip(f"unusable key record: {err}"))
        return DkimResult(domain, selector, "fail", False, "signature did not verify")


def _identity(tags: Mapping[bytes, bytes]) -> tuple[str, str]:
    domain = tags.get(b"d", b"").decode("ascii", "replace").strip().lower().rstrip(".")
    return _clip(domain, 255), _clip(tags.get(b"s", b"").decode("ascii", "replace").strip(), 255)


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
        return DkimResult(domain, selector, "permerror", False, _clip(f"malformed signature: {err}"))
    domain, selector = _identity(sig)
    if len(include_headers) > MAX_SIGNED_FIELDS:
        return DkimResult(domain, selector, "policy", False,
                          f"h= lists {len(include_headers)} fields, over the local limit of {MAX_SIGNED_FIELDS}")
    keys = _KeyFetcher(resolver)
    try:
        valid = message.verify_sig(sig, include_headers, sig_headers[idx], keys)
    except _DnsUnavailable as err:
        return DkimResult(domain, selector, "temperror", False, _clip(f"key lookup failed: {err}"))
    except _KeyRefused as err:
        return DkimResult(domain, selector, "policy", False, _clip(str(err)))
    except dkim.ValidationError as err:  # after the tags were checked, only the body hash raises this
        return DkimResult(domain, selector, "fail", False, _clip(str(err)))
    except Exception as err:  # short key, bad base64, unknown algorithm
        return DkimResult(domain, selector, "permerror", False, _clip(f"{type(err).__name__}: {err}"))
    if not valid:
        return keys.failure(domain, selector)
    return DkimResult(domain, selector, "pass", False, "signature verified")


def _check_dkim(raw: bytes, resolver: dns.resolver.Resolver) -> tuple[list[DkimResult], str]:
    """Every DKIM-Signature, top first, up to MAX_DKIM_SIGNATURES; alignment is set later."""
    try:
        message = dkim.DKIM(raw)
    except Exception as err:
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
        if b"dkim-signature" not in head:
            return [], "no signature (header block unparseable)"
        return [DkimResult("", "", "permerror", False, _clip(f"header block unparseable: {err}"))], "unparseable"
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


# ---------------------------------------------------------------- DMARC


@dataclass(frozen=True)
class _Discovery:
    """Outcome of DMARC policy discovery (RFC 7489 §6.6.3)."""

    status: str  # "found", "none", "temperror" or "permerror"
    note: str
    policy: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    record_found: bool = False


_DMARC_VERSION = re.compile(rb"\s*v\s*=\s*DMARC1\s*(;|$)")


def _dmarc_tags(record: bytes) -> dict[str, str]:
    """Tag names and values; a tag without '=' is a syntax error to ignore (RFC 7489 §6.3)."""
    tags: dict[str, str] = {}
    for part in record.decode("ascii", "replace").split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip(), value.strip())
    return tags


def _parse_record(record: bytes, location: str, for_subdomain: bool) -> _Discovery:
    tags = _dmarc_tags(record)
    p, sp = tags.get("p", "").lower(), tags.get("sp", "").lower() or None
    where = f"_dmarc.{location}" + (" (organizational domain)" if for_subdomain else "")
    modes = {key: tags.get(key, "r").lower() if tags.get(key, "r").lower() in ("r", "s") else "r"
             for key in ("adkim", "aspf")}
    if p in DMARC_POLICIES and sp in (None, *DMARC_POLICIES):
        policy = (sp or p) if for_subdomain else p
    elif tags.get("rua"):  # RFC 7489 §6.6.3 step 6: a bad p=/sp= with rua= acts as p=none
        policy = "none"
    else:
        return _Discovery("permerror", _clip(f"{where}: invalid p= or sp= and no rua="), record_found=True)
    note = f"{where}: p={policy} adkim={modes['adkim']} aspf={modes['aspf']}"
    return _Discovery("found", note, policy, modes["adkim"], modes["aspf"], True)


def _discover_policy(resolver: dns.resolver.Resolver, from_domain: str) -> _Discovery:
    """_dmarc.<From domain>, then _dmarc.<organizational domain> (no tree walk, RFC 7489 §6.6.3)."""
    for location in dict.fromkeys((from_domain, organizational_domain(from_domain))):
        try:
            texts = _txt(resolver, f"_dmarc.{location}")
        except _DnsUnavailable as err:
            return _Discovery("temperror", _clip(f"policy lookup failed: {err}"))
        records = [text for text in texts if _DMARC_VERSION.match(text)]
        if len(records) > 1:
            return _Discovery("permerror", f"{len(records)} DMARC records at _dmarc.{location}", record_found=True)
        if records:
            return _parse_record(records[0], location, for_subdomain=location != from_domain)
    return _Discovery("none", f"no DMARC record for {from_domain}")


def _dmarc_result(discovery: _Discovery, spf: _Spf, spf_aligned: bool, signatures: tuple[DkimResult, ...]) -> str:
    if discovery.status != "found":
        return discovery.status
    if (spf.result == "pass" and spf_aligned) or any(s.result == "pass" and s.aligned for s in signatures):
        return "pass"
    # an aligned identifier whose check could not finish might still pass on a retry
    if (spf.result == "temperror" and spf_aligned) or any(s.result == "temperror" and s.aligned for s in signatures):
        return "temperror"
    return "fail"


# ---------------------------------------------------------------- entry points


def verify(raw: bytes, *, peer_ip: str | None, helo: str | None, mail_from: str | None,
           from_domain: str | None, resolver: dns.resolver.Resolver) -> AuthVerdict:
    """Check SPF for the client IP and MAIL FROM (HELO when MAIL FROM is null), every DKIM
    signature (up to MAX_DKIM_SIGNATURES), and DMARC for ``from_domain`` (the RFC5322.From
    domain, which the caller extracts; None gives dmarc=none). Never raises."""
    try:
        return _verify(raw, peer_ip, helo, mail_from, from_domain, resolver)
    except Exception as err:  # a bug or a library surprise must not lose the message: fail closed
        log.exception("authentication checks failed")
        return AuthVerdict("temperror", None, False, (), "temperror", None, False, normalise_domain(from_domain),
                           "smtp", _clip(f"internal error: {type(err).__name__}: {err}"))


def _verify(raw: bytes, peer_ip: str | None, helo: str | None, mail_from: str | None,
            from_domain: str | None, resolver: dns.resolver.Resolver) -> AuthVerdict:
    spf_outcome = _check_spf(resolver, peer_ip, helo, mail_from)
    signatures, dkim_note = _check_dkim(bytes(raw), resolver)
    domain = normalise_domain(from_domain)
    if domain is None:
        # RFC 7489 §11.2: none also means that no aligned identifier could be extracted
        discovery = _Discovery("none", f"no usable RFC5322.From domain ({from_domain!r})")
    else:
        discovery = _discover_policy(resolver, domain)
    spf_aligned = _aligned(spf_outcome.domain, domain, discovery.aspf)
    dkim_results = tuple(dataclasses.replace(s, aligned=_aligned(s.domain, domain, discovery.adkim))
                         for s in signatures)
    detail = (f"spf: {spf_outcome.result} for {spf_outcome.scope} {spf_outcome.domain}: "
              f"{_clip(spf_outcome.explanation)}; dkim: {dkim_note}"
              f"{''.join(f' [{s.domain}/{s.selector}: {s.reason}]' for s in dkim_results)}; dmarc: {discovery.note}")
    return AuthVerdict(
        spf=spf_outcome.result, spf_domain=spf_outcome.domain, spf_aligned=spf_aligned, dkim=dkim_results,
        dmarc=_dmarc_result(discovery, spf_outcome, spf_aligned, dkim_results), dmarc_policy=discovery.policy,
        dmarc_record_found=discovery.record_found, from_domain=domain, source="smtp",
        detail=_clip(detail, 2000), spf_scope=spf_outcome.scope,
    )


_SES_WORDS = {"PASS": "pass", "FAIL": "fail", "GRAY": "none", "PROCESSING_FAILED": "temperror"}
_SES_VERDICTS = ("spfVerdict", "dkimVerdict", "dmarcVerdict", "spamVerdict", "virusVerdict")


def _ses_status(value: Any, *, bare_string: bool = False) -> str | None:
    """The upper-cased ``status`` of a verdict object; None when absent, "MALFORMED" when it
    is there in a shape SES does not send (a bare string only where ``bare_string``)."""
    if value is None:
        return None
    status = value if bare_string and isinstance(value, str) else \
        value.get("status") if isinstance(value, Mapping) else None
    return status.strip().upper() if isinstance(status, str) and status.strip() else "MALFORMED"


def _ses_word(status: str | None) -> str:
    """GRAY (no verdict: unsigned, no record) is none; a status SES never documented is permerror."""
    return "none" if status is None else _SES_WORDS.get(status, "permerror")


def from_ses_receipt(receipt: Mapping[str, Any], from_domain: str | None) -> AuthVerdict:
    """Map the ``receipt`` of an SES inbound notification (REFERENCE-SES §1c) to an AuthVerdict.

    SES says whether some DKIM signature passed, not whose, and whether DMARC passed, not by
    which identifier. So DKIM becomes one DkimResult for the From domain (no selector), marked
    aligned only when SES reports both DKIM and DMARC pass; SPF likewise counts as aligned only
    when SPF and DMARC pass. When both pass, at least one of them was aligned but SES does not
    say which: both are marked. ``dmarc`` itself is SES's word, so ``dmarc_pass`` stays exact.
    ``dmarcPolicy`` (a string, or an object with ``status`` in older documents) is present only
    when DMARC failed. Never raises.
    """
    receipt = receipt if isinstance(receipt, Mapping) else {}
    status = {key: _ses_status(receipt.get(key)) for key in _SES_VERDICTS}
    spf_word, dkim_word, dmarc_word = (_ses_word(status[key]) for key in _SES_VERDICTS[:3])
    dmarc_passed = dmarc_word == "pass"
    domain = normalise_domain(from_domain)
    dkim_results = () if status["dkimVerdict"] is None else (
        DkimResult(domain or "", "", dkim_word, dmarc_passed and dkim_word == "pass",
                   f"SES dkimVerdict {status['dkimVerdict']}: no per-signature detail"),)
    policy = (_ses_status(receipt.get("dmarcPolicy"), bare_string=True) or "").lower()
    policy = policy if policy in DMARC_POLICIES else None
    detail = "Amazon SES receipt: " + " ".join(f"{key}={status[key] or '-'}" for key in _SES_VERDICTS)
    return AuthVerdict(
        spf=spf_word, spf_domain=None, spf_aligned=dmarc_passed and spf_word == "pass", dkim=dkim_results,
        dmarc=dmarc_word, dmarc_policy=policy, dmarc_record_found=dmarc_word in ("pass", "fail") or policy is not None,
        from_domain=domain, source="ses", detail=_clip(detail + (f" dmarcPolicy={policy}" if policy else "")),
        spam=(status["spamVerdict"] or "").lower() or None, virus=(status["virusVerdict"] or "").lower() or None,
    )
