"""DKIM signing (RFC 6376) of finished outbound messages, and the keys behind it.

The signer works on the exact bytes that go on the wire: line endings are normalised to CRLF
first, the signature is computed over that form, and the same form is returned, so no later
step can change what was signed. RSA keys sign with rsa-sha256 (RFC 8301: at least 1024 bits,
2048 recommended); Ed25519 keys with ed25519-sha256 (RFC 8463).
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
from pathlib import Path
from typing import Literal, Protocol

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from waypost.errors import ConfigError
from waypost.mail.addresses import AddressError, normalise_domain

KeyKind = Literal["rsa", "ed25519"]

# Header fields a receiver relies on to judge or act on our mail. RFC 8058 §4 needs h= to
# cover List-Unsubscribe and List-Unsubscribe-Post before a receiver offers one-click.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id", "in-reply-to",
    "references", "list-unsubscribe", "list-unsubscribe-post", "list-id", "mime-version",
    "content-type", "content-transfer-encoding", "auto-submitted", "feedback-id",
)
MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers must reject shorter keys
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_SELECTOR = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")  # RFC 6376 §3.1: one or more DNS labels
_LINE_END = re.compile(rb"\r\n|\r|\n")


def to_crlf(raw: bytes) -> bytes:
    """Every line ended by CRLF, the last one included: the only form SMTP carries
    (RFC 5321 §2.3.8), so the form that must be signed and sent."""
    message = _LINE_END.sub(b"\r\n", raw)
    return message if message.endswith(b"\r\n") else message + b"\r\n"


class DkimKeySettings(Protocol):
    """The ``[dkim]`` settings group as the signer reads it (``config.DkimSettings`` is one); a
    Protocol, so mail/ never imports the configuration package that imports mail/."""

    @property
    def selector(self) -> str | None: ...
    @property
    def private_key_path(self) -> Path | None: ...


class DkimSigner:
    """Signs messages for one domain and selector with one private key.

    Raises ``ValueError`` at construction for a key or name that could never produce a
    signature receivers accept, so a bad key stops start-up instead of every send.
    """

    def __init__(self, domain: str, selector: str, private_key_pem: bytes) -> None:
        try:
            self.domain = normalise_domain(domain)
        except AddressError as err:
            raise ValueError(f"DKIM domain: {err}") from None
        if not _SELECTOR.match(selector):
            raise ValueError(f"DKIM selector {selector!r} is not a DNS name (letters, digits, '-', '_', '.')")
        self.selector = selector
        self.kind, self._key = _dkimpy_key(_load_private_key(private_key_pem))

    @property
    def algorithm(self) -> str:
        return "rsa-sha256" if self.kind == "rsa" else "ed25519-sha256"

    @classmethod
    def from_settings(cls, dkim_settings: DkimKeySettings, *, domain: str) -> DkimSigner | None:
        """The configured signer for ``domain`` (the d= domain: ``dkim.domain`` or the mail
        domain); None when signing is off (neither selector nor key file set). Raises
        ``ConfigError`` when only one is set or the key cannot be used."""
        selector, key_file = dkim_settings.selector, dkim_settings.private_key_path
        if not selector and key_file is None:
            return None
        if not selector or key_file is None:
            missing = "dkim.selector" if not selector else "dkim.private_key_path"
            raise ConfigError(f"{missing} is not set: DKIM signing needs both dkim.selector and "
                              "dkim.private_key_path (set neither to send unsigned)")
        try:
            pem = Path(key_file).read_bytes()
        except OSError as err:
            raise ConfigError(f"dkim.private_key_path: cannot read {key_file}: {err.strerror or err}") from None
        try:
            return cls(domain, selector, pem)
        except ValueError as err:
            raise ConfigError(f"dkim.private_key_path {key_file}: {err}") from None

    def sign(self, raw: bytes) -> bytes:
        """Return the message in CRLF form with a DKIM-Signature header prepended.

        Relaxed/relaxed canonicalisation survives the header refolding and trailing-space
        edits relays make. Raises ``ValueError`` for a message that cannot be signed (no
        From header, malformed header block): retrying cannot fix it.
        """
        message = to_crlf(raw)
        try:
            names = [name.decode("ascii").lower() for name, _ in dkim.rfc822_parse(message)[0]]
            signature = dkim.sign(
                message, self.selector.encode("ascii"), self.domain.encode("ascii"), self._key,
                signature_algorithm=self.algorithm.encode("ascii"),
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[name.encode("ascii") for name in _header_list(names)],
                linesep=b"\r\n",
            )
        except (dkim.DKIMException, UnicodeDecodeError) as err:
            raise ValueError(f"cannot DKIM-sign the message: {err}") from err
        return signature + message


# Fields signed once more than they occur ("over-signing", RFC 6376 §8.15): a verifier then
# finds a null field where an added copy would sit, so nobody can add a second From, Subject
# or unsubscribe header to a replayed message without breaking the signature.
OVERSIGNED = ("from", "subject", "list-unsubscribe", "list-unsubscribe-post")


def _header_list(present: list[str]) -> list[str]:
    """The h= list: each wanted field once per occurrence, and the OVERSIGNED ones once more.

    dkimpy puts every name it is given into h=, present or not, so absent fields are left
    out to keep h= to what the message carries.
    """
    if "from" not in present:
        raise ValueError("the message has no From header (RFC 5322 §3.6 requires one)")
    listed = [name for name in SIGNED_HEADERS for _ in range(present.count(name))]
    return [*listed, *(name for name in OVERSIGNED if name in present)]


def _load_private_key(pem: bytes) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ValueError("the key is encrypted; store it unencrypted and protect the file with mode 0600") from None
    except ValueError:
        raise ValueError("not a PEM private key (expected RSA or Ed25519, as `waypost dkim` writes)") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key has {key.key_size} bits; DKIM needs at least {MIN_RSA_BITS} "
                             "(RFC 8301), 2048 recommended")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        if importlib.util.find_spec("nacl") is None:
            raise ValueError("Ed25519 signing needs PyNaCl, which dkimpy uses for it: install dkimpy[ed25519]")
        return key
    raise ValueError(f"unsupported key type {type(key).__name__}; DKIM signs with RSA (2048 bits) or Ed25519")


def _dkimpy_key(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> tuple[KeyKind, bytes]:
    """The key in the form dkimpy reads: PKCS#1 PEM with LF line ends for RSA, the base64
    of the raw 32-byte seed for Ed25519 (what PyNaCl's SigningKey takes)."""
    if isinstance(key, rsa.RSAPrivateKey):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        return "rsa", pem
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    return "ed25519", base64.b64encode(seed)


def public_record(private_pem: bytes) -> str:
    """The DNS TXT value publishing the public half of ``private_pem`` (RFC 6376 §3.6.1;
    RFC 8463 §4 for Ed25519, whose p= is the raw 32-byte key, not SubjectPublicKeyInfo)."""
    key = _load_private_key(private_pem)
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"


def generate_key(path: Path, kind: str = "rsa") -> str:
    """Write a new private key (RSA 2048 or Ed25519, PKCS#8 PEM) to ``path`` and return its
    DNS TXT record value.

    The file is created with mode 0600 in one step (never readable by others, not even
    briefly) and never overwrites: replacing a published key would break every signature
    still in flight, so an existing file raises ``FileExistsError``.
    """
    if kind not in ("rsa", "ed25519"):
        raise ValueError(f"unknown DKIM key kind {kind!r}; choose 'rsa' or 'ed25519'")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" \
        else ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; refusing to overwrite a DKIM key (pick a new selector "
                              "and file to rotate keys)") from None
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # the umask may only have narrowed it, but be exact
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    return public_record(pem)
