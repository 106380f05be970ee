"""The gate decides whether a message may be processed and answered.

Invariant 3 (no backscatter): a refused message gets no reply of any kind; the refusal and
its reason are recorded by the caller. The gate sees a ``GateInput`` built from whichever
ingress delivered the mail: our own SMTP-time SPF/DKIM/DMARC verdict or SES's receipt
verdicts feed the same decision.

Decision, for the apps only members may use (journeys), which are the apps that answer:

0. the mail was written by a person, not a program (mail/robots.py, RFC 3834): no null
   reverse-path, no ``Auto-Submitted`` other than ``no``, no bulk or list mail, no auto-reply
   marker, no report, no MAILER-DAEMON-style sender, nothing from Waypost's own addresses.
   This holds for every sender, ``trusted_networks`` included: an allowed person's
   out-of-office must not be answered either;
1. exactly one From address;
2. that sender is allowlisted (address, ``+tag`` tolerant, or domain), or left by their own
   ``stop`` by mail (``stopped_by_self``: they may still ask to ``start``, step 4);
3. the mail is authenticated for the From domain: DMARC pass (an aligned SPF or DKIM pass
   under a published policy, whatever the policy says); for a domain without a DMARC record,
   an aligned DKIM pass (``gate.require_dkim_without_dmarc``, default) or an aligned SPF
   pass. SES spam or virus verdicts of FAIL refuse too. Mail from ``trusted_networks`` (local
   submission) skips this step; mail that was never checked is refused;
4. the sender has not left (unsubscribed or complained), unless they left by their own ``stop``
   by mail and this mail's command is ``start`` (``GateInput.asks_to_start``): that command
   alone passes;
5. the sender is within ``gate.sender_max_messages`` per ``gate.sender_window_minutes``.

Apps anyone may write to (unsubscribe) need only step 1.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from waypost.mail.robots import IsOwnAddress, RobotInput, robot_sign
from waypost.mail.verdict import AuthVerdict
from waypost.pipeline.allowlist import Allowlist

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refusal(StrEnum):
    AUTOMATIC = "automatic-mail"
    NO_FROM = "no-single-from-address"
    NOT_ALLOWLISTED = "sender-not-allowlisted"
    NOT_AUTHENTICATED = "not-authenticated"
    SPAM_OR_VIRUS = "spam-or-virus"
    UNSUBSCRIBED = "sender-unsubscribed"
    RATE_LIMITED = "sender-rate-limited"


@dataclass(frozen=True)
class GateInput:
    from_address: str | None
    peer_ip: str | None
    ingress: str
    auth: AuthVerdict | None = None
    envelope_sender: str | None = None  # MAIL FROM: "" is the null reverse-path; None: not known
    # the headers mail/robots.py reads (ParsedMessage.robot_headers)
    robot_headers: tuple[tuple[str, str], ...] = field(default=())
    asks_to_start: bool = False  # the mail's command is ``start`` (mail/commands.py)


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
# messages this sender had processed within the rate window
RecentCount = Callable[[str], int]
# whether a sender left by their own ``stop`` by mail (the one leaving they may undo)
StoppedBySelf = Callable[[str], bool]


class Gate:
    def __init__(self, allowlist: Allowlist, trusted_networks: Sequence[Network],
                 has_left: HasLeft | None = None, *, require_dkim_without_dmarc: bool = True,
                 sender_limit: int | None = None, recent_count: RecentCount | None = None,
                 is_own: IsOwnAddress | None = None, stopped_by_self: StoppedBySelf | None = None) -> None:
        """``is_own``: whether an address is Waypost's own (mail from it is a loop)."""
        self.stopped_by_self = stopped_by_self
        self.allowlist = allowlist
        self.is_own = is_own
        self.trusted_networks = tuple(trusted_networks)
        self.has_left = has_left
        self.require_dkim_without_dmarc = require_dkim_without_dmarc
        self.sender_limit = sender_limit
        self.recent_count = recent_count
        self.checks: tuple[Check, ...] = (self._written_by_a_person, self._has_sender)
        self.member_checks: tuple[Check, ...] = (self._allowlisted, self._authenticated, self._not_left,
                                                 self._within_rate)

    def decide(self, mail: GateInput, *, open_to_all: bool = False) -> Verdict:
        """``open_to_all``: the mail is for an app anyone may write to (unsubscribe, bounces),
        which authorises by what the mail carries (a token, a signed VERP address), so no
        check applies: a bounce from the null sender may not even have a From."""
        checks = () if open_to_all else (*self.checks, *self.member_checks)
        for check in checks:
            verdict = check(mail)
            if verdict is not None:
                return verdict
        return Verdict(True, trusted_network=self.is_trusted(mail.peer_ip))

    def screen(self, mail: GateInput, *, authenticated: bool) -> Verdict | None:
        """What refuses a mail for an app only members may use while its sending server still
        waits for our answer (``pipeline/arrival.py``): before authentication, steps 1 and 2
        (they need only the header); after it, step 3. Steps 4 and 5 stay with ``decide``:
        their answer can change (a ``start``, a quieter hour) and a rate refusal sends a
        notice. None: nothing against the mail so far."""
        checks = (self._authenticated,) if authenticated else (self._has_sender, self._allowlisted)
        for check in checks:
            verdict = check(mail)
            if verdict is not None:
                return verdict
        return None

    def is_trusted(self, peer_ip: str | None) -> bool:
        return bool(peer_ip) and _within(peer_ip, self.trusted_networks)

    def _written_by_a_person(self, mail: GateInput) -> Verdict | None:
        sign = robot_sign(RobotInput(mail.envelope_sender, mail.from_address, dict(mail.robot_headers)), self.is_own)
        if sign is not None:
            return Verdict.refuse(Refusal.AUTOMATIC, f"{sign.describe()}; never answered (RFC 3834)")
        return None

    @staticmethod
    def _has_sender(mail: GateInput) -> Verdict | None:
        if mail.from_address is None:
            return Verdict.refuse(Refusal.NO_FROM, "the From header holds no single valid address")
        return None

    def _authenticated(self, mail: GateInput) -> Verdict | None:
        if self.is_trusted(mail.peer_ip):
            return None  # local submission (documented: trusted_networks is for that only)
        auth = mail.auth
        if auth is None:
            return Verdict.refuse(Refusal.NOT_AUTHENTICATED, "the mail's authentication was never checked")
        if "fail" in (auth.spam, auth.virus):
            return Verdict.refuse(Refusal.SPAM_OR_VIRUS, f"SES verdicts: spam {auth.spam}, virus {auth.virus}")
        from_domain = mail.from_address.rsplit("@", 1)[1].lower() if mail.from_address else None
        if auth.source == "smtp" and auth.from_domain != from_domain:
            # the verdict was made for another reading of the From header than the one we act on
            return Verdict.refuse(Refusal.NOT_AUTHENTICATED, f"the verdict is for {auth.from_domain}, the mail "
                                                             f"is from {from_domain}")
        summary = (f"spf={auth.spf} dkim={','.join(d.result for d in auth.dkim) or 'none'} dmarc={auth.dmarc} "
                   f"for {auth.from_domain}")
        if auth.dmarc_record_found or auth.dmarc != "none":
            if auth.dmarc_pass:
                return None
            return Verdict.refuse(Refusal.NOT_AUTHENTICATED, f"DMARC did not pass ({summary})")
        passed = auth.dkim_aligned_pass if self.require_dkim_without_dmarc else auth.aligned_pass
        if passed:
            return None
        wanted = "an aligned DKIM pass" if self.require_dkim_without_dmarc else "an aligned SPF or DKIM pass"
        return Verdict.refuse(Refusal.NOT_AUTHENTICATED,
                              f"{auth.from_domain} publishes no DMARC record and the mail has no {wanted} ({summary})")

    def _within_rate(self, mail: GateInput) -> Verdict | None:
        assert mail.from_address is not None
        if self.sender_limit is None or self.recent_count is None:
            return None
        count = self.recent_count(mail.from_address)
        if count >= self.sender_limit:
            return Verdict.refuse(Refusal.RATE_LIMITED,
                                  f"{mail.from_address} sent {count} messages within the window "
                                  f"(limit {self.sender_limit})")
        return None

    def _not_left(self, mail: GateInput) -> Verdict | None:
        assert mail.from_address is not None
        why = self.has_left(mail.from_address) if self.has_left else None
        if why is not None and not (mail.asks_to_start and self._left_by_own_stop(mail.from_address)):
            return Verdict.refuse(Refusal.UNSUBSCRIBED, f"{mail.from_address} {why}")
        return None

    def _allowlisted(self, mail: GateInput) -> Verdict | None:
        assert mail.from_address is not None
        if not self.allowlist.allows(mail.from_address) and not self._left_by_own_stop(mail.from_address):
            return Verdict.refuse(Refusal.NOT_ALLOWLISTED, f"{mail.from_address} is not on the allowlist")
        return None

    def _left_by_own_stop(self, address: str) -> bool:
        return self.stopped_by_self is not None and self.stopped_by_self(address)


@functools.lru_cache(maxsize=4096)
def _within(peer_ip: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``peer_ip`` lies in one of ``networks``; remembered, since every SMTP message asks
    more than once (screen, authenticate) and the same peers come back."""
    try:
        address = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    return any(address in network for network in networks)
