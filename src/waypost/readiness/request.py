"""The SES production-access request, written from the settings and the records.

Every statement is a ``Claim`` that names its source (a setting, a doctor or drill run, a
table); a statement whose evidence is missing, stale (older than 30 days) or against us is
left out and becomes a ``Gap`` under "Not yet shown", with what to do to show it. The
sections follow the SES request form. Tone: plain, specific, transactional only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from waypost.config import Settings
from waypost.doctor.results import Finding, Status
from waypost.readiness.evidence import WINDOW, Evidence

# the pages web/legal.py generates from the settings
PRIVACY_PATH, TERMS_PATH = "/privacy", "/terms"


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    source: str


@dataclass(frozen=True)
class Gap:
    key: str
    what: str
    how: str


@dataclass(frozen=True)
class Sample:
    """A rendered reply as a person gets it: the whole message, and its HTML part."""

    raw: bytes
    html: str

    @classmethod
    def from_raw(cls, raw: bytes) -> Sample:
        message = message_from_bytes(raw, policy=default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("html",))
        return cls(raw, part.get_content() if part is not None else "")

    def header(self, name: str) -> str | None:
        value = message_from_bytes(self.raw, policy=default).get(name)
        return str(value) if value is not None else None


@dataclass
class Section:
    title: str
    claims: list[Claim] = field(default_factory=list)


@dataclass
class Request:
    settings: Settings
    evidence: Evidence
    sections: list[Section] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    def claim(self, key: str, text: str, source: str) -> None:
        self.sections[-1].claims.append(Claim(key, text, source))

    def gap(self, key: str, what: str, how: str) -> None:
        self.gaps.append(Gap(key, what, how))

    @property
    def claims(self) -> dict[str, Claim]:
        return {c.key: c for s in self.sections for c in s.claims}

    def render(self, sample_names: tuple[str, str] | None = None) -> str:
        s, ev = self.settings, self.evidence
        lines = [f"# Amazon SES production access request: {s.mail_domain}", "",
                 f"Written by `waypost ses-request` on {ev.now:%Y-%m-%d %H:%M}Z from the configuration and the "
                 "recorded evidence. Each statement gives its source in brackets.", ""]
        for section in self.sections:
            if section.claims:
                lines += [f"## {section.title}", ""]
                lines += [f"- {c.text} [{c.source}]" for c in section.claims]
                lines.append("")
        if sample_names:
            lines += ["## Sample reply", "",
                      f"A reply rendered with the templates in use, as a person receives it: `{sample_names[0]}` "
                      f"(the whole message, headers included) and `{sample_names[1]}` (its HTML part).", ""]
        lines += ["## Not yet shown", ""]
        lines += [f"- {g.what}: {g.how}" for g in self.gaps] or ["- nothing: every section rests on evidence"]
        return "\n".join(lines) + "\n"


def write_request(settings: Settings, evidence: Evidence, sample: Sample | None, streams: Sequence[str]) -> Request:
    request = Request(settings, evidence)
    for title, build in SECTIONS:
        request.sections.append(Section(title))
        build(request, sample, streams)
    return request


# -- the sections ----------------------------------------------------------------------------

Build = Callable[[Request, "Sample | None", Sequence[str]], None]


def _mail_type(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    r.claim("mail_type", "Transactional only. Waypost sends no marketing and no newsletters: every message is a "
            "reply to mail a person sent it, or an alarm to the operator.",
            f"outbound streams: {', '.join(streams)}")


def _website(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    s = r.settings
    if s.base_url and s.base_url.startswith("https://"):
        r.claim("website", f"{s.public_base_url} (the journey pages the replies link to)", "setting base_url")
    else:
        r.gap("website", "no public https website", "set base_url to this server's public https address")


def _use_case(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    s = r.settings
    r.claim("use_case", f"People email photos to {s.journeys_address}; Waypost reads where and when each was taken "
            "and answers once with a short email linking to a page that shows the journey on a map.",
            "settings mail_domain, journeys.mailbox")
    r.claim("operator", f"Operated by {s.operator_name}, reachable at {s.operator_address}.",
            "settings operator_name, operator_email")


def _email_types(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    r.claim("email_types", "Replies to the sender: the journey is ready, the journey was updated, no photos were "
            "found (with the commands a person can send), the answer to each command (list, rename, new or "
            "revoked link, delete, stop, start), too many messages in a short time; alarms, digests and "
            "forwarded mail to the operator.",
            "templates journeys/journey_ready, journey_updated, help, list, renamed, link_new, link_revoked, "
            "deleted, stopped, started, which_journey, rate_limited; operator alarm, digest, forward")


def _volumes(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    ev, s = r.evidence, r.settings
    if ev.sent:
        r.claim("volumes", f"{ev.sent} messages to people in the last {WINDOW.days} days "
                f"(about {ev.sent / WINDOW.days:.1f} a day).", "outbound_messages, state sent")
    else:
        r.gap("volumes", f"no message sent to a person in the last {WINDOW.days} days",
              "send replies to your own verified addresses from the sandbox first")
    if s.outbound.max_per_day:
        r.claim("volume_cap", f"At most {s.outbound.max_per_day} messages in any 24 hours, enforced by the outbox.",
                "setting outbound.max_per_day")


def _recipients(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    ev, s = r.evidence, r.settings
    if ev.allowlisted:
        r.claim("opt_in", f"Waypost answers only senders on its allowlist ({ev.allowlisted} entries) whose mail "
                "passes DMARC; it never mails an address that did not write to it first, and never buys or "
                "imports lists.", "allowlist table; the gate's authentication check")
    else:
        r.gap("opt_in", "nobody on the allowlist yet", "add the people who will use it: `waypost allowlist add`")
    r.claim("per_sender_limit", f"A sender gets at most {s.gate.sender_max_messages} answers in "
            f"{s.gate.sender_window_minutes:g} minutes.", "settings gate.sender_max_messages, sender_window_minutes")


def _bounces(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    ev, s, fb = r.evidence, r.settings, r.settings.feedback
    r.claim("bounce_policy", f"A hard bounce or a complaint puts the address on the suppression list at once; "
            f"{fb.soft_bounce_limit} soft bounces within {fb.soft_bounce_window_days:g} days suppress it for "
            f"{fb.soft_suppression_days:g} days. Every message is checked against the list before it is sent.",
            "settings feedback.soft_bounce_limit, soft_bounce_window_days, soft_suppression_days")
    if s.outbound.transport == "ses":
        if fb.sqs_queue_url:
            r.claim("feedback_path", f"SES bounce and complaint events are read from SQS ({fb.sqs_queue_url}).",
                    "setting feedback.sqs_queue_url")
        elif fb.sns_topic_arns:
            r.claim("feedback_path", "SES events arrive at this server's SNS endpoint (/hooks/sns), signature "
                    f"checked, from {', '.join(fb.sns_topic_arns)}.", "setting feedback.sns_topic_arns")
        else:
            r.gap("feedback_path", "no path for SES events configured",
                  "set feedback.sqs_queue_url or feedback.sns_topic_arns (docs/readiness.md step 2)")
    drill, last = ev.drill, ev.last_drill
    # a local drill proves the mail-borne loop, not SES's: in SES mode only an SES drill counts
    if drill is not None and ev.current(drill.started_at) and (s.outbound.transport != "ses" or drill.mode == "ses"):
        names = ", ".join(o.scenario for o in drill.outcomes)
        r.claim("drill", f"Drilled end to end on {drill.started_at:%Y-%m-%d}: {names}; {drill.detail}.",
                f"drill run {drill.id}, {drill.mode} mode")
    else:
        failed = f" (the latest, run {last.id} on {last.started_at:%Y-%m-%d}, did not pass)" if last else ""
        r.gap("drill", f"no passing drill in the last {WINDOW.days} days{failed}",
              "run `waypost drill` and fix what it reports")
    suppressed = ", ".join(f"{n} {reason.lower()}" for reason, n in sorted(ev.suppressed.items())) or "none"
    r.claim("suppressions", f"Suppression list today: {suppressed}.", "suppressions table")


def _unsubscribe(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    post = sample.header("List-Unsubscribe-Post") if sample else None
    links = sample.header("List-Unsubscribe") if sample else None
    if links and "<https://" in links and "<mailto:" in links and post == "List-Unsubscribe=One-Click":
        r.claim("unsubscribe", "Every reply carries List-Unsubscribe with an https one-click link (RFC 8058, "
                "List-Unsubscribe-Post) and a mailto address, and a removal link in the text; removal is immediate.",
                "headers of the sample reply")
    else:
        r.gap("unsubscribe", "the sample reply has no one-click List-Unsubscribe",
              "set base_url to an https address so the one-click link can be built")


def _authentication(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    ev, s = r.evidence, r.settings
    doctor = ev.doctor
    if doctor is None or not ev.current(doctor.at):
        r.gap("doctor", f"no `waypost doctor` run in the last {WINDOW.days} days",
              "run `waypost doctor` (it records each run)")
        return
    when = f"doctor run {doctor.id}, {doctor.at:%Y-%m-%d}"
    counts = ", ".join(f"{n} {status}" for status, n in doctor.report.counts().items() if n)
    r.claim("doctor", f"DNS{' and the SES account' if doctor.report.mode == 'ses' else ''} checked with "
            f"`waypost doctor` on {doctor.at:%Y-%m-%d %H:%M}Z: {counts}.", when)
    found = {f.name: f for f in doctor.report.findings}
    _checked(r, found.get("spf"), "spf", "SPF", when)
    dkim = "ses.dkim" if s.outbound.transport == "ses" else "dkim"
    selector = f" (selector {s.dkim.selector})" if dkim == "dkim" and s.dkim.selector else ""
    _checked(r, found.get(dkim), "dkim", f"DKIM{selector}", when)
    dmarc = found.get(f"dmarc:{s.mail_domain}")
    _checked(r, dmarc, "dmarc", "DMARC", when)
    _checked(r, found.get(f"alignment:{s.mail_domain}"), "alignment", "DMARC alignment", when)


def _checked(r: Request, finding: Finding | None, key: str, what: str, when: str) -> None:
    if finding is None:
        r.gap(key, f"{what} not checked by the latest doctor run", "run `waypost doctor`")
    elif finding.status == Status.OK:
        r.claim(key, f"{what}: {finding.found}.", when)
    else:
        r.gap(key, f"{what} {finding.status.value}: {finding.found}", finding.fix or "see `waypost doctor`")


def _infrastructure(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    s = r.settings
    how = {"ses": f"the SES v2 API in {s.ses.region}" + (f", configuration set {s.ses.configuration_set}"
                                                          if s.ses.configuration_set else ""),
           "smtp": f"an SMTP smarthost ({s.smarthost.host}), DKIM-signed by Waypost",
           "catcher": "nothing yet (the local catcher keeps every message)"}[s.outbound.transport]
    r.claim("infrastructure", f"Sent through {how}, envelope sender {s.outbound.bounce_mailbox}+<id>@"
            f"{s.bounce_domain} (one address per message, so every bounce names its message).",
            "settings outbound.transport, outbound.bounce_domain")


def _monitoring(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    g, s = r.settings.guard, r.settings
    r.claim("guard", f"Sending pauses by itself at a bounce rate of {g.bounce_pause:.1%} or a complaint rate of "
            f"{g.complaint_pause:.2%} (warnings at {g.bounce_warn:.1%} and {g.complaint_warn:.2%}).",
            "settings guard.bounce_pause, complaint_pause, bounce_warn, complaint_warn")
    if s.alarms.mail_operator:
        r.claim("alarms", f"Alarms are mailed to the operator ({s.operator_delivery_address}).",
                "setting alarms.mail_operator")
    if s.doctor.interval_hours and s.outbound.transport != "catcher":
        r.claim("doctor_watch", f"DNS and the SES account are rechecked every {s.doctor.interval_hours:g} hours; "
                "a check that starts failing raises an alarm.", "setting doctor.interval_hours")


def _rate_limiting(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    out = r.settings.outbound
    r.claim("rate", f"At most {out.max_per_second:g} message{'' if out.max_per_second == 1 else 's'} a second"
            + (", or less when the SES account's own rate is lower." if out.limits_from_provider else "."),
            "settings outbound.max_per_second, limits_from_provider")


def _policy_urls(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    s = r.settings
    if s.base_url and s.base_url.startswith("https://"):
        r.claim("policy_urls", f"Privacy policy {s.public_base_url}{PRIVACY_PATH}, terms {s.public_base_url}"
                f"{TERMS_PATH}; both linked from every reply.", "setting base_url; pages generated by Waypost")
    else:
        r.gap("policy_urls", "no public privacy policy or terms", "set base_url; the pages are generated from it")


def _history(r: Request, sample: Sample | None, streams: Sequence[str]) -> None:
    ev = r.evidence
    if ev.first_sent is None or not ev.sent:
        r.gap("history", "no sending history", "send from the sandbox to verified addresses for a while")
        return
    r.claim("history", f"Sending since {ev.first_sent:%Y-%m-%d}.", "outbound_messages")
    bounces, complaints = ev.counted.get("bounce", 0), ev.counted.get("complaint", 0)
    r.claim("reputation", f"In the last {WINDOW.days} days: {bounces} counted bounces ({bounces / ev.sent:.2%}) and "
            f"{complaints} complaints ({complaints / ev.sent:.3%}) for {ev.sent} messages.",
            "feedback_events, outbound_messages")


SECTIONS: tuple[tuple[str, Build], ...] = (
    ("Mail type", _mail_type), ("Website", _website), ("Use case", _use_case), ("Email types", _email_types),
    ("Volumes", _volumes), ("Recipient management and opt-in", _recipients),
    ("Bounce and complaint handling", _bounces), ("Unsubscribe", _unsubscribe),
    ("Authentication", _authentication), ("Infrastructure", _infrastructure), ("Monitoring", _monitoring),
    ("Rate limiting", _rate_limiting), ("Policy URLs", _policy_urls), ("Sending history", _history),
)


SAMPLE_RECIPIENT = "traveller@example.org"  # RFC 2606: a sample, never a person


def render_sample(settings: Settings) -> Sample:
    """A reply as the journeys app composes it (template journeys/help, its answer to a mail
    without photos, the one that needs no journey), with the headers, footer and unsubscribe
    links every reply carries."""
    from waypost.apps.journeys.handler import TEMPLATES
    from waypost.keys import signing_keys
    from waypost.outbound.compose import Composer, Draft
    from waypost.outbound.unsubscribe import UnsubscribeTokens

    composer = Composer(settings, [TEMPLATES], UnsubscribeTokens(signing_keys(settings)))
    from waypost.apps.journeys.commands import COMMANDS

    draft = Draft(template="journeys/help", to=SAMPLE_RECIPIENT, subject="No photos found in “Weekend walk”",
                  stream="journeys", context={"asked": False, "commands": COMMANDS, "ignored": ["notes.pdf"],
                                              "notes": [], "journeys_address": settings.journeys_address},
                  in_reply_to="<sample-1@example.org>", references=("<sample-1@example.org>",))
    return Sample.from_raw(composer.compose(draft).raw)
