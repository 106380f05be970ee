"""The checks that only need DNS: receiving MX, the envelope domain's SPF, the DKIM key of SMTP
mode, DMARC and alignment, SES's custom MAIL FROM MX, reverse DNS and the HELO name, MTA-STS
and TLS-RPT. Each takes the ``Lookups`` and plain values and returns ``Finding``s."""

from __future__ import annotations

import re
from pathlib import Path

from waypost.doctor import spf
from waypost.doctor.records import NULL_MX, Lookups
from waypost.doctor.results import Finding, Status
from waypost.mail.dkim_sign import public_record
from waypost.mail.dmarc import aligned, organizational_domain

REMOVED_BY_DMARCBIS = ("pct", "rf", "ri")  # RFC 9989 drops them; receivers ignore them
_DMARC_VERSION = re.compile(r"\s*v\s*=\s*DMARC1\s*(;|$)", re.IGNORECASE)


def ses_inbound(region: str) -> str:
    return f"inbound-smtp.{region}.amazonaws.com"


def ses_feedback(region: str) -> str:
    return f"feedback-smtp.{region}.amazonses.com"


def receiving(lookups: Lookups, domain: str, expected: str, *, via: str) -> Finding:
    """``expected``: this host's name (SMTP) or the region's SES inbound endpoint."""
    why = f"mail to {domain} (replies, bounces, DMARC reports, SES verification mail) arrives only where its MX points"
    fix = f"{domain}. MX 10 {expected}."
    exchanges = lookups.mx(domain)
    name, title = "mx", f"receiving MX of {domain}"
    if exchanges == [NULL_MX]:
        return Finding(name, title, Status.FAIL, f"null MX (RFC 7505): {domain} says it receives no mail", why,
                       f"replace the null MX with: {fix}")
    if not exchanges:
        return Finding(name, title, Status.FAIL, f"no MX record at {domain}", why, fix)
    listed = ", ".join(f"{pref} {host}" for pref, host in exchanges)
    if exchanges[0][1] == expected:
        return Finding(name, title, Status.OK, f"MX {listed}", why)
    status = Status.WARN if expected in (host for _, host in exchanges) else Status.FAIL
    return Finding(name, title, status, f"MX {listed}; the first does not lead to {expected} ({via})", why, fix)


def envelope_spf(lookups: Lookups, domain: str, *, include: str | None, ips: tuple[str, ...]) -> Finding:
    """``include``: the domain that must be included (SES: amazonses.com); ``ips``: the
    addresses that must be allowed (SMTP mode)."""
    name, title = "spf", f"SPF of the envelope domain {domain}"
    why = ("receivers check SPF against the envelope sender (MAIL FROM); a permerror or a missing sender "
           "fails SPF, and DMARC then rests on DKIM alone")
    wanted = " ".join([f"include:{include}"] if include else [f"ip{4 if ':' not in ip else 6}:{ip}" for ip in ips])
    fix = f'{domain}. TXT "v=spf1 {wanted or "a"} -all"'
    records = spf.spf_records(lookups.txt(domain))
    if len(records) != 1:
        found = "no SPF record" if not records else f"{len(records)} SPF records: " + " | ".join(records)
        return Finding(name, title, Status.FAIL, found, why + "; two records are a permerror (RFC 7208 §4.5)",
                       f"publish exactly one: {fix}")
    tree = spf.walk(lookups, domain)
    problems = _spf_problems(tree, include, ips)
    found = f'"{records[0]}": {tree.lookups} DNS-querying terms, {tree.void} void lookups (counted recursively)'
    if problems:
        worst = Status.FAIL if any(not p.startswith("~") for p in problems) else Status.WARN
        return Finding(name, title, worst, found + "; " + "; ".join(p.lstrip("~") for p in problems), why, fix)
    return Finding(name, title, Status.OK, found, why)


def _spf_problems(tree: spf.SpfTree, include: str | None, ips: tuple[str, ...]) -> list[str]:
    """What is wrong; a "~" in front marks a warning rather than a failure."""
    problems = list(tree.problems)
    if tree.lookups > spf.MAX_LOOKUPS:
        problems.append(f"{tree.lookups} lookups exceed {spf.MAX_LOOKUPS} (RFC 7208 §4.6.4: permerror)")
    if tree.void > spf.MAX_VOID_LOOKUPS:
        problems.append(f"{tree.void} void lookups exceed {spf.MAX_VOID_LOOKUPS} (RFC 7208 §4.6.4: permerror)")
    if include and include not in tree.includes:
        problems.append(f"include:{include} missing: the sender in use is not allowed")
    problems += [f"{ip} is not allowed by the record" for ip in ips if not include and not spf.covers(tree, ip)]
    if tree.all_qualifier == "?" or tree.all_qualifier is None:
        problems.append("~the record does not end in -all or ~all: anyone else may send as this domain")
    elif tree.all_qualifier == "+":
        problems.append("+all allows every server on the internet")
    return problems


def dkim_key(lookups: Lookups, domain: str, selector: str | None, key_path: Path | None) -> Finding:
    """SMTP mode: the key published for our selector is the public half of our private key."""
    name, title = "dkim", f"DKIM key {selector or '?'}._domainkey.{domain}"
    why = "receivers verify our signature with the published key; DMARC alignment and one-click unsubscribe need it"
    if not selector or not key_path:
        return Finding(name, title, Status.FAIL, "no DKIM key configured: mail leaves unsigned", why,
                       "`waypost dkim keygen`, then set dkim.selector and dkim.private_key_path")
    try:
        record = public_record(key_path.read_bytes())
    except (OSError, ValueError) as err:
        return Finding(name, title, Status.FAIL, f"cannot read {key_path}: {err}", why,
                       "point dkim.private_key_path at the PEM key `waypost dkim keygen` wrote")
    fix = f'{selector}._domainkey.{domain}. TXT "{record}"'
    published = [t for t in lookups.txt(f"{selector}._domainkey.{domain}") if "p=" in t]
    if not published:
        return Finding(name, title, Status.FAIL, f"no key published for selector {selector}", why, fix)
    ours = _tag(record, "p")
    theirs = [_tag(text, "p").replace(" ", "") for text in published]
    if ours in theirs:
        return Finding(name, title, Status.OK, f"published key matches {key_path.name}", why)
    found = "the published key is revoked (empty p=)" if theirs == [""] else \
        f"the published key is not the public half of {key_path.name}"
    return Finding(name, title, Status.FAIL, found, why, fix)


def _tag(record: str, name: str) -> str:
    tags = _tags(record)
    return tags.get(name, "")


def _tags(record: str) -> dict[str, str]:
    """Tag=value lists of DKIM (RFC 6376 §3.2) and DMARC (RFC 7489 §6.4) records; first wins."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    return tags


def dmarc(lookups: Lookups, domain: str) -> tuple[Finding, dict[str, str]]:
    """The policy record of ``domain`` (its organizational domain's when it has none, RFC 7489
    §6.6.3) and the tags read from it ({} when none was usable)."""
    name, title = f"dmarc:{domain}", f"DMARC policy of {domain}"
    why = ("DMARC tells receivers what to do with mail that fails authentication; Gmail and Yahoo require a "
           "record of bulk senders and the SES production-access review looks for one")
    org = organizational_domain(domain)
    fix = f'_dmarc.{org}. TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@{org}"'
    for location in dict.fromkeys((domain, org)):
        records = [t for t in lookups.txt(f"_dmarc.{location}") if _DMARC_VERSION.match(t)]
        if len(records) > 1:
            return Finding(name, title, Status.FAIL, f"{len(records)} DMARC records at _dmarc.{location}: "
                           "receivers then apply none (RFC 7489 §6.6.3)", why, f"keep exactly one: {fix}"), {}
        if records:
            return _dmarc_record(name, title, why, fix, location, records[0])
    return Finding(name, title, Status.FAIL, f"no DMARC record at _dmarc.{domain} or _dmarc.{org}", why, fix), {}


def _dmarc_record(name: str, title: str, why: str, fix: str, location: str,
                  record: str) -> tuple[Finding, dict[str, str]]:
    tags = _tags(record)
    found = f'_dmarc.{location}: "{record}"'
    if tags.get("p", "").lower() not in ("none", "quarantine", "reject"):
        return Finding(name, title, Status.FAIL, found + "; p= missing or invalid", why, fix), {}
    notes = []
    if tags["p"].lower() == "none":
        notes.append("p=none only monitors: failing mail is still delivered")
    if not tags.get("rua"):
        notes.append("no rua=: nobody receives the aggregate reports")
    removed = [tag for tag in REMOVED_BY_DMARCBIS if tag in tags]
    if removed:
        notes.append(f"{', '.join(removed)} removed by DMARCbis (RFC 9989): receivers ignore them")
    if notes:
        return Finding(name, title, Status.WARN, found + "; " + "; ".join(notes), why, fix), tags
    return Finding(name, title, Status.OK, found, why), tags


def alignment(from_domain: str, tags: dict[str, str], *, dkim_domain: str | None, envelope_domain: str) -> Finding:
    """Whether our DKIM d= and our MAIL FROM domain align with the From domain (RFC 7489 §3.1)."""
    name, title = f"alignment:{from_domain}", f"DMARC alignment of From {from_domain}"
    why = "DMARC passes only when SPF or DKIM passes for a domain aligned with the From domain"
    adkim, aspf = tags.get("adkim", "r").lower(), tags.get("aspf", "r").lower()
    dkim_ok = aligned(dkim_domain, from_domain, adkim)
    spf_ok = aligned(envelope_domain, from_domain, aspf)
    found = (f"DKIM d={dkim_domain or 'none'} {'aligned' if dkim_ok else 'not aligned'} (adkim={adkim}); "
             f"MAIL FROM {envelope_domain} {'aligned' if spf_ok else 'not aligned'} (aspf={aspf})")
    org = organizational_domain(from_domain)
    if dkim_ok and spf_ok:
        return Finding(name, title, Status.OK, found, why)
    if dkim_ok or spf_ok:
        fix = f"outbound.bounce_domain = \"bounces.{org}\"" if not spf_ok else f"dkim.domain = \"{org}\""
        return Finding(name, title, Status.WARN, found + "; DMARC rests on one of the two", why, fix)
    return Finding(name, title, Status.FAIL, found, why,
                   f"sign with d={org} (dkim.domain, or Easy DKIM on {org}) and send from a MAIL FROM under {org}")


def mail_from_mx(lookups: Lookups, domain: str, region: str) -> Finding:
    """SES custom MAIL FROM: exactly one MX, to the region's feedback endpoint (REFERENCE-SES §9)."""
    expected = ses_feedback(region)
    name, title = "mail_from.mx", f"custom MAIL FROM MX of {domain}"
    why = ("SES uses a custom MAIL FROM only while its MX leads to SES's feedback endpoint; without it mail "
           "goes out from amazonses.com (no SPF alignment) or is refused (MailFromDomainNotVerified)")
    fix = f"{domain}. MX 10 {expected}."
    exchanges = lookups.mx(domain)
    found = ", ".join(f"{pref} {host}" for pref, host in exchanges) or "no MX"
    if [host for _, host in exchanges] == [expected]:
        return Finding(name, title, Status.OK, f"MX {found}", why)
    return Finding(name, title, Status.FAIL, f"MX {found}; expected exactly one, to {expected}", why,
                   f"{fix} (and no other MX at that name)")


def reverse_dns(lookups: Lookups, address: str, helo: str) -> Finding:
    """FCrDNS (RFC 8601 §3 "iprev"): the PTR name leads back to the address."""
    name, title = f"ptr:{address}", f"reverse DNS of {address}"
    why = "Gmail, Microsoft and most receivers refuse or junk mail from an address without matching reverse DNS"
    fix = f"ask the owner of {address} (your hosting provider) for PTR {helo}, and publish {helo}. A {address}"
    names = lookups.ptr(address)
    if not names:
        return Finding(name, title, Status.FAIL, f"no PTR record for {address}", why, fix)
    confirmed = [host for host in names if address in lookups.addresses(host)]
    if not confirmed:
        return Finding(name, title, Status.FAIL, f"PTR {', '.join(names)} does not resolve back to {address}",
                       why, fix)
    if helo not in confirmed:
        return Finding(name, title, Status.WARN, f"PTR {', '.join(confirmed)} (forward-confirmed), but HELO is "
                       f"{helo}", why, f'smtp.hostname = "{confirmed[0]}"')
    return Finding(name, title, Status.OK, f"PTR {helo}, forward-confirmed", why)


def helo_name(lookups: Lookups, helo: str, addresses: tuple[str, ...]) -> Finding:
    name, title = "helo", f"HELO name {helo}"
    why = "receivers check that the HELO name is a real host name that resolves (RFC 5321 §4.1.1.1)"
    fix = f"smtp.hostname = a name with an A record of this host (e.g. mail.{helo}), and {helo}. A <your IP>"
    found = lookups.addresses(helo)
    if "." not in helo or not found:
        return Finding(name, title, Status.FAIL, f"{helo} has no address record", why, fix)
    missing = [ip for ip in addresses if ip not in found]
    if missing:
        return Finding(name, title, Status.WARN, f"{helo} resolves to {', '.join(found)}, not to the sending "
                       f"address {', '.join(missing)}", why, f"{helo}. A {missing[0]}")
    return Finding(name, title, Status.OK, f"{helo} resolves to {', '.join(found)}", why)


def transport_security(lookups: Lookups, domain: str) -> list[Finding]:
    """MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): reported when present, never required."""
    why_sts = "MTA-STS asks senders to insist on verified TLS when they deliver to us"
    why_rpt = "TLS-RPT asks senders to report failed TLS deliveries to us"
    sts = [t for t in lookups.txt(f"_mta-sts.{domain}") if t.lower().startswith("v=stsv1")]
    rpt = [t for t in lookups.txt(f"_smtp._tls.{domain}") if t.lower().startswith("v=tlsrptv1")]
    return [Finding("mta_sts", f"MTA-STS of {domain}", Status.INFO, f'"{sts[0]}"' if sts else "not published",
                    why_sts, None if sts else f'_mta-sts.{domain}. TXT "v=STSv1; id=<date>" and a policy at '
                    f"https://mta-sts.{domain}/.well-known/mta-sts.txt (optional)"),
            Finding("tls_rpt", f"TLS-RPT of {domain}", Status.INFO, f'"{rpt[0]}"' if rpt else "not published",
                    why_rpt, None if rpt else f'_smtp._tls.{domain}. TXT "v=TLSRPTv1; rua=mailto:tls@{domain}" '
                    "(optional)")]
