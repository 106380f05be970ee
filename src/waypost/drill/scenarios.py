"""What each drill address must produce, and how an observed feedback event is judged.

SES mode mails the SES mailbox simulator (REFERENCE-SES.md §3) with a label per run
(``bounce+<token>@simulator.amazonses.com``): SES sends to it from the sandbox too, does not
count it against the quota or the reputation, and the feedback policy never suppresses it.
SMTP and catcher mode mail the same scenarios on ``drill.waypost.invalid`` (RFC 2606: can never
be a real address) through the local simulator; the policy never suppresses those either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from waypost.feedback.policy import DRILL_DOMAIN, SIMULATOR_DOMAIN

SENT = "sent"  # the transport accepted the message; there is no event to wait for (SMTP has none)


@dataclass(frozen=True)
class Expectation:
    """The event a scenario waits for: its kind, and the classification fields that must match."""

    kind: str  # a feedback.events.Kind value, or SENT
    bounce_type: str | None = None
    bounce_subtype: str | None = None
    feedback_type: str | None = None
    reason: str | None = None

    def describe(self) -> str:
        details = [v for v in (self.bounce_type, self.bounce_subtype, self.feedback_type, self.reason) if v]
        return self.kind + (f" ({', '.join(details)})" if details else "")

    def matches(self, event: Mapping[str, Any]) -> bool:
        wanted = {"kind": self.kind, "bounce_type": self.bounce_type, "bounce_subtype": self.bounce_subtype,
                  "feedback_type": self.feedback_type, "reason": self.reason}
        return all(value is None or str(event.get(key) or "").lower() == value.lower()
                   for key, value in wanted.items())


@dataclass(frozen=True)
class Scenario:
    name: str  # the simulator's local part: success, bounce, complaint, suppressionlist, ooto
    expect: Expectation
    # event kinds that contradict the scenario: seen, the scenario fails at once
    contradicted_by: tuple[str, ...] = ()

    def address(self, token: str, domain: str) -> str:
        return f"{self.name}+{token}@{domain}"


_PROBLEMS = ("bounce", "complaint")

LOCAL = (
    Scenario("success", Expectation(SENT), _PROBLEMS),
    Scenario("bounce", Expectation("bounce", bounce_type="Permanent", reason="userunknown"), ("complaint",)),
    Scenario("complaint", Expectation("complaint", feedback_type="abuse"), ("bounce",)),
    Scenario("ooto", Expectation("auto-reply"), _PROBLEMS),
)

SES = (
    Scenario("success", Expectation("delivery"), _PROBLEMS),
    Scenario("bounce", Expectation("bounce", bounce_type="Permanent"), ("complaint",)),
    Scenario("complaint", Expectation("complaint"), ("bounce",)),
    Scenario("suppressionlist", Expectation("bounce", bounce_type="Permanent", bounce_subtype="Suppressed"),
             ("complaint",)),
    # the out-of-office answer goes to the Return-Path; SES itself reports the delivery
    Scenario("ooto", Expectation("delivery"), _PROBLEMS),
)


def scenarios_for(mode: str) -> tuple[tuple[Scenario, ...], str]:
    """The scenarios of a transport mode, and the domain their addresses are on."""
    return (SES, SIMULATOR_DOMAIN) if mode == "ses" else (LOCAL, DRILL_DOMAIN)


def scenario_of(address: str) -> str:
    """``bounce+d12-ab@drill.waypost.invalid`` → ``bounce``."""
    return address.partition("@")[0].partition("+")[0].lower()
