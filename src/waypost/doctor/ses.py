"""The SES account as the v2 API reports it: production access, sending, quota, suppression,
the sending identity (verification, Easy DKIM, custom MAIL FROM) and the configuration set's
event destinations, down to the SNS subscription of the queue Waypost consumes; and, when the
settings name another account's identity, the sending authorization policy on it.

The only doctor module that talks to AWS (boto3 loads when ``from_settings`` runs). Errors are
findings, never exceptions: a doctor that cannot read the account says so and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waypost.doctor.dns_checks import ses_feedback
from waypost.doctor.records import Lookups
from waypost.doctor.results import Finding, Status
from waypost.mail.dmarc import organizational_domain

# the event types Waypost acts on (REFERENCE-SES §1): each must reach the topic we consume
REQUIRED_EVENTS = ("BOUNCE", "COMPLAINT", "DELIVERY", "REJECT", "RENDERING_FAILURE", "DELIVERY_DELAY", "SUBSCRIPTION")
Client = Any  # boto3 clients ("sesv2", "sns"); boto3 ships no types


class SesReadError(Exception):
    """An SES or SNS call failed for a reason other than "not found"."""


@dataclass(frozen=True)
class SesTargets:
    """What the checks compare the account with (plain values from the settings)."""

    region: str
    from_domain: str
    envelope_domain: str
    configuration_set: str | None
    topic_arns: tuple[str, ...]  # feedback.sns_topic_arns
    queue_url: str | None  # feedback.sqs_queue_url
    # sending authorization: ses.from_identity_arn, ses.feedback_forwarding_identity_arn
    from_identity_arn: str | None = None
    feedback_identity_arn: str | None = None


class SesAccount:
    def __init__(self, sesv2: Client, sns: Client) -> None:
        self.sesv2 = sesv2
        self.sns = sns

    @classmethod
    def from_settings(cls, region: str, endpoint_url: str | None) -> SesAccount:
        """Clients for ``region``; credentials from boto3's standard chain. ``endpoint_url``
        (ses.endpoint_url) serves SES only; SNS follows AWS_ENDPOINT_URL like every client."""
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        # three tries: SES throttles non-send calls at one a second (REFERENCE-SES §4)
        config = Config(retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=20)
        return cls(session.client("sesv2", region_name=region, endpoint_url=endpoint_url, config=config),
                   session.client("sns", region_name=region, config=config))

    def call(self, client: Client, operation: str, **params: Any) -> dict[str, Any] | None:
        """The response, or None when SES says the resource does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return dict(getattr(client, operation)(**params))
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NotFoundException", "NotFound"):
                return None
            raise SesReadError(f"{operation} failed: {code or 'error'}: {err}") from err
        except BotoCoreError as err:
            raise SesReadError(f"{operation} failed: {err}") from err


def check_account(account: SesAccount, targets: SesTargets, lookups: Lookups) -> list[Finding]:
    findings: list[Finding] = []
    for part in (_account, _identity, _configuration_set, _sending_authorization):
        findings += _guarded(part, account, targets, lookups)
    return findings


Part = Callable[[SesAccount, SesTargets, Lookups], list[Finding]]


def _guarded(part: Part, account: SesAccount, targets: SesTargets, lookups: Lookups) -> list[Finding]:
    try:
        return part(account, targets, lookups)
    except SesReadError as err:
        name = part.__name__.strip("_")
        return [Finding(f"ses.{name}", f"SES {name.replace('_', ' ')}", Status.FAIL, str(err),
                        "without reading the account nothing below this check could be shown",
                        "AWS credentials with ses:Get* and sns:ListSubscriptionsByTopic, and ses.region set to "
                        "the account's sending region")]


def _account(account: SesAccount, targets: SesTargets, lookups: Lookups) -> list[Finding]:
    found = account.call(account.sesv2, "get_account") or {}
    return [_production(found, targets.region), _sending(found), _quota(found), _suppression(found)]


def _production(found: dict[str, Any], region: str) -> Finding:
    why = "in the sandbox SES delivers only to verified addresses, 200 a day at 1 per second"
    if found.get("ProductionAccessEnabled"):
        return Finding("ses.production", "SES production access", Status.OK, f"production access in {region}", why)
    details = found.get("Details", {}).get("ReviewDetails", {})
    review = f" (review {details.get('Status')}, case {details.get('CaseId')})" if details else ""
    return Finding("ses.production", "SES production access", Status.WARN, f"sandbox in {region}{review}", why,
                   "request production access (`waypost ses-request` writes the request; docs/readiness.md)")


def _sending(found: dict[str, Any]) -> Finding:
    why = "SES pauses an account whose bounce or complaint rate is too high; nothing is sent while paused"
    enforcement = found.get("EnforcementStatus", "HEALTHY")
    text = f"sending {'enabled' if found.get('SendingEnabled') else 'disabled'}, enforcement {enforcement}"
    if not found.get("SendingEnabled") or enforcement == "SHUTDOWN":
        return Finding("ses.sending", "SES sending", Status.FAIL, text, why,
                       "read the notice in the SES console's reputation dashboard, fix the cause, then "
                       "`aws sesv2 put-account-sending-attributes --sending-enabled`")
    if enforcement != "HEALTHY":
        return Finding("ses.sending", "SES sending", Status.WARN, text, why,
                       "the account is under review: see the SES console's reputation dashboard")
    return Finding("ses.sending", "SES sending", Status.OK, text, why)


def _quota(found: dict[str, Any]) -> Finding:
    quota = found.get("SendQuota", {})
    daily = quota.get("Max24HourSend")
    text = (f"{'unlimited' if daily == -1 else f'{daily:g}'} per 24 h, {quota.get('MaxSendRate', 0):g} per second, "
            f"{quota.get('SentLast24Hours', 0):g} sent in the last 24 h")
    return Finding("ses.quota", "SES quota and rate", Status.INFO, text,
                   "Waypost paces itself to these (outbound.limits_from_provider)")


def _suppression(found: dict[str, Any]) -> Finding:
    reasons = sorted(found.get("SuppressionAttributes", {}).get("SuppressedReasons", []))
    why = ("SES's account-level list stops repeat sends to addresses that bounced or complained, which count "
           "against the account's reputation")
    text = f"account-level suppression for {', '.join(reasons) or 'nothing'}"
    if reasons == ["BOUNCE", "COMPLAINT"]:
        return Finding("ses.suppression", "SES account suppression", Status.OK, text, why)
    return Finding("ses.suppression", "SES account suppression", Status.WARN, text, why,
                   "aws sesv2 put-account-suppression-attributes --suppressed-reasons BOUNCE COMPLAINT")


def _identity(account: SesAccount, targets: SesTargets, lookups: Lookups) -> list[Finding]:
    why = "SES sends only from verified identities; Easy DKIM signs with d= the identity's domain"
    domain = targets.from_domain
    for candidate in dict.fromkeys((domain, organizational_domain(domain))):
        found = account.call(account.sesv2, "get_email_identity", EmailIdentity=candidate)
        if found is not None:
            return [_verified(candidate, found, why), _easy_dkim(candidate, found, lookups),
                    _mail_from(found, targets, lookups)]
    if targets.from_identity_arn:
        return [Finding("ses.identity", f"SES identity {domain}", Status.INFO, f"{domain} is not an identity of "
                        "this account: sending as another account's identity (ses.from_identity_arn)", why)]
    return [Finding("ses.identity", f"SES identity {domain}", Status.FAIL, f"{domain} is not an SES identity", why,
                    f"aws sesv2 create-email-identity --email-identity {domain} (then publish its three DKIM "
                    "CNAMEs)")]


def _verified(identity: str, found: dict[str, Any], why: str) -> Finding:
    text = f"{identity}: verified for sending {bool(found.get('VerifiedForSendingStatus'))}, " \
           f"status {found.get('VerificationStatus', 'unknown')}"
    if found.get("VerifiedForSendingStatus"):
        return Finding("ses.identity", f"SES identity {identity}", Status.OK, text, why)
    return Finding("ses.identity", f"SES identity {identity}", Status.FAIL, text, why,
                   "publish the DKIM CNAMEs below; SES verifies the domain once they resolve (up to 72 hours)")


def _easy_dkim(identity: str, found: dict[str, Any], lookups: Lookups) -> Finding:
    dkim = found.get("DkimAttributes", {})
    tokens = list(dkim.get("Tokens", []))
    why = "Easy DKIM signs every message with d=" + identity + ", which is what aligns DKIM for DMARC"
    wanted = {f"{t}._domainkey.{identity}": f"{t}.dkim.amazonses.com" for t in tokens}
    wrong = [name for name, target in wanted.items() if lookups.cname(name) != target]
    fix = "; ".join(f"{name}. CNAME {target}." for name, target in wanted.items())
    text = f"status {dkim.get('Status', 'unknown')}, signing {'on' if dkim.get('SigningEnabled') else 'off'}, " \
           f"{len(tokens) - len(wrong)} of {len(tokens)} CNAMEs resolve"
    if dkim.get("Status") == "SUCCESS" and dkim.get("SigningEnabled") and tokens and not wrong:
        return Finding("ses.dkim", f"Easy DKIM of {identity}", Status.OK, text, why)
    return Finding("ses.dkim", f"Easy DKIM of {identity}", Status.FAIL, text + (f"; missing: {', '.join(wrong)}"
                   if wrong else ""), why, fix or f"enable Easy DKIM on {identity} in the SES console")


def _mail_from(found: dict[str, Any], targets: SesTargets, lookups: Lookups) -> Finding:
    attributes = found.get("MailFromAttributes", {})
    domain, status = attributes.get("MailFromDomain"), attributes.get("MailFromDomainStatus")
    why = "only a custom MAIL FROM under the From domain lets SPF align for DMARC (REFERENCE-SES §9)"
    expected = targets.envelope_domain
    fix = (f"aws sesv2 put-email-identity-mail-from-attributes --email-identity {targets.from_domain} "
           f"--mail-from-domain {expected} --behavior-on-mx-failure REJECT_MESSAGE; {expected}. MX 10 "
           f"{ses_feedback(targets.region)}.")
    if not domain:
        return Finding("ses.mail_from", "SES custom MAIL FROM", Status.WARN, "no custom MAIL FROM: SES sends from "
                       "amazonses.com", why, fix)
    text = f"{domain}, status {status}, on MX failure {attributes.get('BehaviorOnMxFailure')}"
    if domain != expected:
        return Finding("ses.mail_from", "SES custom MAIL FROM", Status.WARN,
                       text + f"; outbound.bounce_domain is {expected}", why,
                       f'outbound.bounce_domain = "{domain}"')
    if status != "SUCCESS":
        return Finding("ses.mail_from", "SES custom MAIL FROM", Status.FAIL, text, why, fix)
    return Finding("ses.mail_from", "SES custom MAIL FROM", Status.OK, text, why)


def _configuration_set(account: SesAccount, targets: SesTargets, lookups: Lookups) -> list[Finding]:
    name = targets.configuration_set
    why = ("SES publishes bounce, complaint and the other events only through a configuration set's event "
           "destinations; Waypost learns of them from the topic it consumes")
    if not name:
        return [Finding("ses.configuration_set", "SES configuration set", Status.FAIL, "ses.configuration_set is "
                        "not set: sends publish no events", why, 'ses.configuration_set = "waypost" (and create it)')]
    if account.call(account.sesv2, "get_configuration_set", ConfigurationSetName=name) is None:
        return [Finding("ses.configuration_set", "SES configuration set", Status.FAIL, f"{name} does not exist",
                        why, f"aws sesv2 create-configuration-set --configuration-set-name {name}")]
    exists = Finding("ses.configuration_set", "SES configuration set", Status.OK, f"{name} exists", why)
    try:
        found = account.call(account.sesv2, "get_configuration_set_event_destinations", ConfigurationSetName=name)
        return [exists, _events(account, targets, (found or {}).get("EventDestinations", []))]
    except SesReadError as err:
        return [exists, Finding("ses.events", f"event destinations of {name}", Status.FAIL, str(err), why,
                                "allow ses:GetConfigurationSetEventDestinations and sns:ListSubscriptionsByTopic")]


def _events(account: SesAccount, targets: SesTargets, destinations: list[dict[str, Any]]) -> Finding:
    name, title = "ses.events", f"event destinations of {targets.configuration_set}"
    why = "a missing event type is feedback Waypost never hears of (a bounce not suppressed, a complaint ignored)"
    ours = [d for d in destinations if d.get("Enabled") and _leads_to_us(account, targets, d)]
    covered = {kind for d in ours for kind in d.get("MatchingEventTypes", [])}
    missing = [kind for kind in REQUIRED_EVENTS if kind not in covered]
    topic = targets.topic_arns[0] if targets.topic_arns else "<the topic in feedback.sns_topic_arns>"
    fix = (f"aws sesv2 create-configuration-set-event-destination --configuration-set-name "
           f"{targets.configuration_set} --event-destination-name waypost --event-destination "
           f"'Enabled=true,MatchingEventTypes={','.join(REQUIRED_EVENTS)},SnsDestination={{TopicArn={topic}}}'")
    text = (f"{len(ours)} of {len(destinations)} destinations lead to Waypost; "
            f"covered: {', '.join(sorted(covered)) or 'none'}")
    if missing:
        return Finding(name, title, Status.FAIL, text + f"; missing: {', '.join(missing)}", why, fix)
    return Finding(name, title, Status.OK, text, why)


def _leads_to_us(account: SesAccount, targets: SesTargets, destination: dict[str, Any]) -> bool:
    """An SNS destination whose topic Waypost accepts and, with SQS, that the queue subscribes to."""
    topic = destination.get("SnsDestination", {}).get("TopicArn")
    if not topic or topic not in targets.topic_arns:
        return False
    if not targets.queue_url:
        return True  # the HTTPS endpoint /hooks/sns: SNS's own delivery, nothing to read here
    queue = _queue_suffix(targets.queue_url)
    subscriptions = account.call(account.sns, "list_subscriptions_by_topic", TopicArn=topic) or {}
    return any(s.get("Protocol") == "sqs" and str(s.get("Endpoint", "")).endswith(queue)
               for s in subscriptions.get("Subscriptions", []))


def _queue_suffix(url: str) -> str:
    """https://sqs.<region>.amazonaws.com/<account>/<name> → ":<account>:<name>", the end of its ARN."""
    parts = url.rstrip("/").split("/")
    return f":{parts[-2]}:{parts[-1]}"


# --- sending authorization ------------------------------------------------------------------

_SEND_ACTIONS = frozenset({"ses:sendemail", "ses:sendrawemail", "ses:*", "*"})


def _sending_authorization(account: SesAccount, targets: SesTargets, lookups: Lookups) -> list[Finding]:
    """One finding per identity ARN in the settings: does a policy on it allow sending?"""
    named = (("ses.authorization", targets.from_identity_arn),
             ("ses.feedback_authorization", targets.feedback_identity_arn))
    return [_authorization(account, targets.region, name, arn) for name, arn in named if arn]


def _authorization(account: SesAccount, region: str, name: str, arn: str) -> Finding:
    title = f"sending authorization on {arn}"
    why = ("SES sends as another account's identity only when a sending authorization policy on that identity "
           "allows this account")
    arn_region, owner, identity = _identity_arn_parts(arn)
    fix = (f"the owner of account {owner} runs: aws sesv2 create-email-identity-policy --email-identity {identity} "
           "--policy-name waypost --policy '<a policy allowing ses:SendEmail and ses:SendRawEmail to this account>' "
           "(docs/deploy-aws.md)")
    if arn_region != region:
        return Finding(name, title, Status.FAIL, f"the identity is in {arn_region}, SES sends from {region}", why,
                       f'ses.region = "{arn_region}", or an identity ARN in {region}')
    try:
        found = account.call(account.sesv2, "get_email_identity_policies", EmailIdentity=identity)
    except SesReadError as err:  # the policy lives in the owner's account, which may not let us read it
        return Finding(name, title, Status.WARN, f"the policies could not be read: {err}", why,
                       f"run `waypost doctor` with credentials of account {owner}, or ask its owner to confirm")
    if found is None:
        return Finding(name, title, Status.FAIL, f"{identity} is not an identity in {region}", why, fix)
    allowing = sorted(policy for policy, text in found.get("Policies", {}).items() if _allows_sending(text))
    if not allowing:
        return Finding(name, title, Status.FAIL, f"{len(found.get('Policies', {}))} policies on {identity}, none "
                       "allows ses:SendEmail", why, fix)
    return Finding(name, title, Status.OK, f"{identity}: sending allowed by policy {', '.join(allowing)}", why)


def _identity_arn_parts(arn: str) -> tuple[str, str, str]:
    """arn:aws:ses:<region>:<account>:identity/<identity> → (region, account, identity); the
    settings have checked the form."""
    _, _, _, region, owner, resource = arn.split(":", 5)
    return region, owner, resource.partition("/")[2]


def _allows_sending(text: str) -> bool:
    try:
        statements = json.loads(text).get("Statement", [])
    except (ValueError, AttributeError):
        return False
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") == "Allow" and _SEND_ACTIONS & {str(a).lower() for a in actions}:
            return True
    return False
