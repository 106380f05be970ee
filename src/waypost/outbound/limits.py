"""The sending limits in force: the configured ones, or in SES mode the account's own."""

from __future__ import annotations

import logging

from waypost.config import OutboundSettings
from waypost.outbound.ratelimit import Limits
from waypost.outbound.senders.base import Sender

log = logging.getLogger(__name__)


def send_limits(outbound: OutboundSettings, sender: Sender) -> Limits:
    """The configured limits; in SES mode the account's own when it can be read (a limit set
    explicitly in the configuration still caps them)."""
    configured = Limits(outbound.max_per_second, outbound.max_per_day or None)
    if not outbound.limits_from_provider or outbound.transport != "ses":
        return configured
    account = sender.account_limits()
    if account is None or account.max_per_second <= 0:
        log.warning("could not read the sending limits from %s; using %s", sender.name, configured.describe())
        return configured
    per_second, per_day = account.max_per_second, account.max_per_day
    if "max_per_second" in outbound.model_fields_set:
        per_second = min(per_second, outbound.max_per_second)
    if "max_per_day" in outbound.model_fields_set and outbound.max_per_day:
        per_day = outbound.max_per_day if per_day is None else min(per_day, outbound.max_per_day)
    limits = Limits(per_second, per_day, f"{sender.name} account")
    log.info("sending limits: %s", limits.describe())
    return limits
