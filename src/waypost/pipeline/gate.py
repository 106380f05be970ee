"""The gate decides whether a message may be processed and answered.

Invariant 3 (no backscatter): a refused message gets no reply of any kind; the refusal and
its reason are recorded by the caller. The gate sees a ``GateInput`` built from whichever
ingress delivered the mail, so SES receipt verdicts and our own SMTP-time checks can feed the
same decision (the sender-trust work adds those checks as further steps).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from waypost.pipeline.allowlist import Allowlist

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refusal(StrEnum):
    NO_FROM = "no-single-from-address"
    NOT_ALLOWLISTED = "sender-not-allowlisted"
    UNSUBSCRIBED = "sender-unsubscribed"


@dataclass(frozen=True)
class GateInput:
    from_address: str | None
    peer_ip: str | None
    ingress: str


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: Refusal | None = None
    detail: str = ""
    trusted_network: bool = False

    @classmethod
    def refuse(cls, reason: Refusal, detail: str) -> Verdict:
        return cls(False, reason, detail)


Check = Callable[[GateInput], Verdict | None]  # None: this check has nothing against it
# why a sender has left (unsubscribed, complained), or None; such a sender is refused even
# when their whole domain is allowlisted
HasLeft = Callable[[str], str | None]


class Gate:
    def __init__(self, allowlist: Allowlist, trusted_networks: Sequence[Network],
                 has_left: HasLeft | None = None) -> None:
        self.allowlist = allowlist
        self.trusted_networks = tuple(trusted_networks)
        self.has_left = has_left
        self.checks: tuple[Check, ...] = (self._has_sender,)
        self.member_checks: tuple[Check, ...] = (self._allowlisted, self._not_left)

    def decide(self, mail: GateInput, *, open_to_all: bool = False) -> Verdict:
        """``open_to_all``: the mail is for an app anyone may write to (unsubscribe), so the
        membership checks (allowlist, left) do not apply."""
        checks = self.checks if open_to_all else (*self.checks, *self.member_checks)
        for check in checks:
            verdict = check(mail)
            if verdict is not None:
                return verdict
        return Verdict(True, trusted_network=self.is_trusted(mail.peer_ip))

    def is_trusted(self, peer_ip: str | None) -> bool:
        if not peer_ip:
            return False
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_networks)

    @staticmethod
    def _has_sender(mail: GateInput) -> Verdict | None:
        if mail.from_address is None:
            return Verdict.refuse(Refusal.NO_FROM, "the From header holds no single valid address")
        return None

    def _not_left(self, mail: GateInput) -> Verdict | None:
        assert mail.from_address is not None
        why = self.has_left(mail.from_address) if self.has_left else None
        if why is not None:
            return Verdict.refuse(Refusal.UNSUBSCRIBED, f"{mail.from_address} {why}")
        return None

    def _allowlisted(self, mail: GateInput) -> Verdict | None:
        assert mail.from_address is not None
        if not self.allowlist.allows(mail.from_address):
            return Verdict.refuse(Refusal.NOT_ALLOWLISTED, f"{mail.from_address} is not on the allowlist")
        return None
