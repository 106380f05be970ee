"""The ``own_mail_failing_dmarc`` alarm: receivers report mail from our own sources that failed
DMARC (neither DKIM nor SPF passed aligned), so some of our mail is quarantined or refused, or
someone sends in our name from our addresses.

Our own sources: the addresses we send from (``doctor.sending_ips``, SMTP mode); in SES mode,
whose sending addresses are Amazon's and shared, every record whose header From is one of our
domains (spoofed mail counts too: it is mail in our name failing, which the operator should
hear about as well). Evaluated by the worker at each alarm check, recorded like the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy.engine import Engine

from waypost.config import Settings
from waypost.dmarc.store import OwnFailure, own_failures
from waypost.reputation.alarms import Alarm, AlarmMonitor
from waypost.store.models import utcnow

ALARM = "own_mail_failing_dmarc"


def own_sources(settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(source IPs, header From domains) that count as our own mail."""
    domains: tuple[str, ...] = ()
    if settings.outbound.transport == "ses":
        domains = tuple(sorted({settings.mail_domain, settings.reply_address.rsplit("@", 1)[1].lower()}))
    return settings.doctor.sending_ips, domains


def failing_alarm(failures: Iterable[OwnFailure], minimum: int, days: float) -> Alarm:
    found = list(failures)
    total = sum(f.messages for f in found)
    detail = "; ".join(f"{f.messages} from {f.source_ip} ({f.header_from or 'no From'}) reported by {f.reporter}"
                       for f in found[:5])
    return Alarm(ALARM, total >= minimum, total, minimum,
                 f"{total} messages of ours failed DMARC in {days:g} days" + (f": {detail}" if detail else ""),
                 "see `waypost dmarc summary`: check DKIM signing (d= aligned with From) and SPF of the MAIL FROM "
                 "domain with `waypost doctor`; a source you do not know is someone sending in your name")


class DmarcWatch:
    def __init__(self, engine: Engine, settings: Settings, alarms: AlarmMonitor) -> None:
        self.engine = engine
        self.settings = settings.dmarc
        self.ips, self.domains = own_sources(settings)
        self.alarms = alarms

    def check(self) -> Alarm:
        since = utcnow() - timedelta(days=self.settings.alarm_days)
        with self.engine.connect() as conn:
            failures = own_failures(conn, since, ips=self.ips, domains=self.domains)
        alarm = failing_alarm(failures, self.settings.alarm_min_messages, self.settings.alarm_days)
        self.alarms.record([alarm])
        return alarm
