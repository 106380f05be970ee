"""Email addresses as the domain sees them: normalised, comparable, classifiable."""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.utils import getaddresses, parseaddr

from waypost.errors import PermanentError

# Local parts that say "do not write back". RFC 2142 role names such as postmaster are fine;
# these are the ones mailbox providers and SES reviewers treat as a sign of a careless sender.
_NOREPLY = re.compile(r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|nobody|noresponse)([-+_.].*)?$")


class AddressError(PermanentError):
    """A string that is not a usable mailbox address."""


def normalise_domain(domain: str) -> str:
    """Lower-case, strip the root dot, and convert to IDNA (punycode) form."""
    domain = domain.strip().rstrip(".").lower()
    if not domain:
        raise AddressError("empty domain")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as err:
        raise AddressError(f"domain {domain!r} is not a valid IDNA name") from err


# the common case, ``local@ascii.domain`` with nothing around it: parseaddr would return it
# unchanged, so it is taken as it is (parseaddr costs several microseconds a call, and every
# feedback event and suppression check normalises an address)
_PLAIN = re.compile(r"[A-Za-z0-9._%+=-]+@([A-Za-z0-9-]{1,63}\.)+[A-Za-z0-9-]{1,63}")


def normalise_address(address: str) -> str:
    """Return ``local@domain`` with the domain normalised; the local part keeps its case
    (RFC 5321 §2.4 lets it matter) but comparison helpers below fold it."""
    address = address.strip()
    if _PLAIN.fullmatch(address) and len(address) <= 320:
        local, domain = address.rsplit("@", 1)
        if len(domain) <= 253:
            return f"{local}@{domain.lower()}"
    _, bare = parseaddr(address)
    if bare.count("@") != 1:
        raise AddressError(f"{address!r} is not an email address")
    local, domain = bare.rsplit("@", 1)
    if not local or any(ch.isspace() for ch in local):
        raise AddressError(f"{address!r} has no usable local part")
    return f"{local}@{normalise_domain(domain)}"


def address_key(address: str) -> str:
    """The comparison key: case-folded local part with any ``+tag`` removed, IDNA domain."""
    local, domain = normalise_address(address).rsplit("@", 1)
    return f"{local.split('+', 1)[0].lower()}@{domain}"


def domain_of(address: str) -> str:
    return normalise_address(address).rsplit("@", 1)[1]


def is_noreply_style(address: str) -> bool:
    local = normalise_address(address).rsplit("@", 1)[0].lower()
    return bool(_NOREPLY.match(local))


def first_mailbox(header_value: str | None) -> str | None:
    """The single address of a From header, or None when it holds none or several."""
    if not header_value:
        return None
    pairs = [pair for pair in getaddresses([header_value]) if pair[1]]
    if len(pairs) != 1:
        return None
    try:
        return normalise_address(pairs[0][1])
    except AddressError:
        return None


def format_mailbox(display_name: str, address: str) -> str:
    local, domain = address.rsplit("@", 1)
    return str(Address(display_name=display_name, username=local, domain=domain))
