"""Which checks a configuration needs, run in order, each failure kept to its own finding.

SMTP mode checks what receivers see of this host (SPF with our addresses, our DKIM key,
reverse DNS, HELO, the STARTTLS certificate); SES mode what SES needs (include:amazonses.com,
the identity, Easy DKIM, the custom MAIL FROM, the account and its event destinations). Both
check the receiving MX and DMARC of every From domain. Catcher mode sends nothing, so it
checks only the DNS that would matter once it does.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import dns.resolver

from waypost.clock import utcnow
from waypost.config import Settings
from waypost.doctor import dns_checks, tls
from waypost.doctor.records import Lookups
from waypost.doctor.results import Finding, Report, Status
from waypost.mail.resolver import DnsUnavailable, make_resolver

Check = Callable[[], Finding | list[Finding]]
Labelled = tuple[str, str, Check]  # the name and title its findings carry, so a DNS outage keeps them
AccountCheck = Callable[[Lookups], list[Finding]]  # the SES account part (doctor.ses), given by the caller


def run_doctor(settings: Settings, *, resolver: dns.resolver.Resolver | None = None,
               ses_account: AccountCheck | None = None) -> Report:
    """Every check for the configured transport. ``ses_account`` replaces the SES checks built
    from the settings (None in SES mode: ``doctor.ses`` with boto3's credentials)."""
    lookups = Lookups(resolver or make_resolver(settings.dns_nameservers, settings.dns_timeout))
    mode = settings.outbound.transport
    checks: list[Labelled] = [("mx", "receiving MX", partial(_receiving, lookups, settings)),
                              *_sending_checks(settings, lookups, mode), *_dmarc_checks(settings, lookups, mode)]
    if mode == "ses":
        checks.append(("ses.account", "SES account", partial(ses_account or _ses_account(settings), lookups)))
    findings: list[Finding] = []
    for name, title, check in checks:
        findings += _guarded(name, title, check)
    return Report(utcnow(), mode, tuple(findings))


def _guarded(name: str, title: str, check: Check) -> list[Finding]:
    """A DNS lookup that got no answer makes its check a warning: nothing could be shown."""
    try:
        found = check()
    except DnsUnavailable as err:
        return [Finding(name, title, Status.WARN, f"no answer from DNS: {err}",
                        "a check that cannot read DNS cannot show anything", "check dns_nameservers and try again")]
    return found if isinstance(found, list) else [found]


def _receiving(lookups: Lookups, settings: Settings) -> Finding:
    if settings.doctor.receiving == "ses":
        return dns_checks.receiving(lookups, settings.mail_domain, dns_checks.ses_inbound(settings.ses.region),
                                    via="SES receiving")
    return dns_checks.receiving(lookups, settings.mail_domain, settings.smtp_hostname, via="this host, smtp.hostname")


CATCHER = Finding("transport", "outbound transport", Status.INFO, "catcher: mail is kept in the outbox, nothing is "
                  "sent", "the sending checks apply once a transport sends", 'outbound.transport = "ses" or "smtp"')


def _sending_checks(settings: Settings, lookups: Lookups, mode: str) -> list[Labelled]:
    envelope = settings.bounce_domain
    spf = ("spf", f"SPF of the envelope domain {envelope}")
    if mode == "ses":
        return [(*spf, partial(dns_checks.envelope_spf, lookups, envelope, include="amazonses.com", ips=())),
                ("mail_from.mx", f"custom MAIL FROM MX of {envelope}",
                 partial(dns_checks.mail_from_mx, lookups, envelope, settings.ses.region))]
    if mode == "catcher":
        return [(*spf, partial(dns_checks.envelope_spf, lookups, envelope, include=None, ips=())),
                ("transport", "outbound transport", lambda: CATCHER)]
    return _smtp_checks(settings, lookups)


def _smtp_checks(settings: Settings, lookups: Lookups) -> list[Labelled]:
    helo = settings.smtp_hostname

    def ips() -> tuple[str, ...]:
        return settings.doctor.sending_ips or tuple(lookups.addresses(helo))

    def spf() -> Finding:
        return dns_checks.envelope_spf(lookups, settings.bounce_domain, include=None, ips=ips())

    def reverse() -> list[Finding]:
        return [dns_checks.reverse_dns(lookups, ip, helo) for ip in ips()]

    return [("spf", f"SPF of the envelope domain {settings.bounce_domain}", spf),
            ("dkim", "DKIM key", partial(dns_checks.dkim_key, lookups, settings.dkim_domain, settings.dkim.selector,
                                         settings.dkim.private_key_path)),
            ("ptr", "reverse DNS", reverse),
            ("helo", f"HELO name {helo}", lambda: dns_checks.helo_name(lookups, helo, settings.doctor.sending_ips)),
            ("tls.certificate", "STARTTLS certificate",
             lambda: tls.certificate(settings.smtp.tls_cert_path, helo, utcnow())),
            ("mta_sts", "MTA-STS and TLS-RPT", partial(dns_checks.transport_security, lookups, settings.mail_domain))]


def from_domains(settings: Settings) -> list[str]:
    """mail_domain and the domain of every From address Waypost writes (replies, alarms)."""
    return list(dict.fromkeys([settings.mail_domain, settings.reply_address.rpartition("@")[2].lower()]))


def _dmarc_checks(settings: Settings, lookups: Lookups, mode: str) -> list[Labelled]:
    return [(f"dmarc:{domain}", f"DMARC policy of {domain}", partial(_dmarc, settings, lookups, mode, domain))
            for domain in from_domains(settings)]


def _dmarc(settings: Settings, lookups: Lookups, mode: str, domain: str) -> list[Finding]:
    policy, tags = dns_checks.dmarc(lookups, domain)
    signing = settings.dkim.selector and settings.dkim.private_key_path
    # SES's Easy DKIM signs with the identity's domain: the From domain's (doctor.ses checks it)
    dkim_domain = domain if mode == "ses" else settings.dkim_domain if signing else None
    return [policy, dns_checks.alignment(domain, tags, dkim_domain=dkim_domain,
                                         envelope_domain=settings.bounce_domain)]


def _ses_account(settings: Settings) -> AccountCheck:
    from waypost.doctor.ses import SesAccount, SesTargets, check_account

    targets = SesTargets(region=settings.ses.region, from_domain=settings.reply_address.rpartition("@")[2].lower(),
                         envelope_domain=settings.bounce_domain, configuration_set=settings.ses.configuration_set,
                         topic_arns=settings.feedback.sns_topic_arns, queue_url=settings.feedback.sqs_queue_url,
                         from_identity_arn=settings.ses.from_identity_arn,
                         feedback_identity_arn=settings.ses.feedback_forwarding_identity_arn)

    def check(lookups: Lookups) -> list[Finding]:
        try:
            account = SesAccount.from_settings(settings.ses.region, settings.ses.endpoint_url)
        except Exception as err:  # boto3 could not even build a client (no region, bad endpoint)
            return [Finding("ses.account", "SES account", Status.FAIL, f"no SES client: {err}",
                            "the SES checks need the API", "set ses.region and AWS credentials")]
        return check_account(account, targets, lookups)

    return check
