"""What the stack is built from: Waypost's own settings (``waypost.config``), plus the few
choices that only matter when deploying (source IPs allowed to send, the Lambda's code).

Pure values, no CDK import: ``waypost aws synth`` checks them before Node.js starts, and a
bad value is a ``ConfigError`` that names the setting to change.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from ipaddress import ip_network

from waypost.config import Settings
from waypost.errors import ConfigError

# Where the receipt rule writes each mail in the bucket (S3 action's ObjectKeyPrefix); Waypost's
# own blobs (blobs.s3_prefix + encrypted names) never start with it.
RECEIPT_PREFIX = "ses-inbound/"
DEFAULT_CONFIGURATION_SET = "waypost"
# Regions where SES receives mail (AWS's "Email receiving endpoints" page, as of 2025-06). A
# region outside it still synthesizes; `waypost aws synth` warns, since the receipt rule could
# not be created there.
RECEIVING_REGIONS = frozenset({"us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-west-1",
                               "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "eu-south-1",
                               "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-south-1",
                               "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "il-central-1",
                               "af-south-1"})
MAX_RECEIVE_COUNT = 5  # deliveries of one SQS message before it moves to its dead-letter queue
# the device relay's files: the folder of apps/relay's blob keys (relay/<message id>/<n>), which the
# S3 blob store keeps readable before the sealed rest of the name (store/s3blobs.py)
RELAY_FOLDER = "relay/"
_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")
_KEY_ID = re.compile(r"(mrk-)?[A-Za-z0-9-]{32,36}")


@dataclass(frozen=True)
class LambdaCode:
    """A zip of Waypost and its dependencies, uploaded beforehand (docs/deploy-aws.md)."""

    bucket: str
    key: str
    handler: str = "waypost.aws.lambda_handler.lambda_handler"


@dataclass(frozen=True)
class StackParameters:
    stack_name: str
    region: str
    mail_domain: str
    mail_from_domain: str  # custom MAIL FROM (outbound.bounce_domain), a subdomain of mail_domain
    configuration_set: str
    operator_email: str  # alarms are mailed here (an SNS email subscription)
    bucket_name: str | None  # blobs.s3_bucket; None: CloudFormation names it
    receipt_days: int  # the receipt objects' lifetime (receipt_days below)
    blob_prefix: str = ""  # blobs.s3_prefix, before every folder of Waypost's own objects
    relay_days: int = 366  # the relay's files' lifetime: relay.max_retention_days + 1
    # blobs.s3_kms_key_id: the key's ARN, or its id (the stack's account and region complete it)
    kms_key: str | None = None
    sending_source_ips: tuple[str, ...] = ()  # empty: sending from anywhere with the role
    lambda_code: LambdaCode | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, *, stack_name: str = "Waypost",
                      sending_source_ips: tuple[str, ...] = (),
                      lambda_code: LambdaCode | None = None) -> StackParameters:
        """Raises ``ConfigError`` naming the setting or option to change."""
        mail_from = settings.bounce_domain
        if not mail_from.endswith("." + settings.mail_domain):
            raise ConfigError(f"outbound.bounce_domain must be a subdomain of mail_domain for SES's custom MAIL FROM "
                              f"(it is {mail_from}); set outbound.bounce_domain = \"bounces.{settings.mail_domain}\"")
        warnings = []
        if settings.ses.region not in RECEIVING_REGIONS:
            warnings.append(f"ses.region {settings.ses.region} is not among the regions where SES receives mail "
                            "(docs/deploy-aws.md, \"Region\"): the receipt rule would fail to deploy there")
        return cls(stack_name=stack_name, region=settings.ses.region, mail_domain=settings.mail_domain,
                   mail_from_domain=mail_from,
                   configuration_set=settings.ses.configuration_set or DEFAULT_CONFIGURATION_SET,
                   operator_email=settings.operator_delivery_address, bucket_name=settings.blobs.s3_bucket,
                   receipt_days=receipt_days(settings), blob_prefix=settings.blobs.s3_prefix,
                   relay_days=settings.relay.max_retention_days + 1,
                   kms_key=_kms_key(settings.blobs.s3_kms_key_id),
                   sending_source_ips=tuple(_network(ip) for ip in sending_source_ips),
                   lambda_code=lambda_code, warnings=tuple(warnings))


def receipt_days(settings: Settings) -> int:
    """Whole days (S3 expires objects by the day, at least one) that a receipt object lives:
    retention.dead_raw_days, as long as Waypost keeps a mail it could not take, so that a
    notification redriven from the dead-letter queue still finds its mail. A mail taken is
    copied into Waypost's own blobs at once, where Waypost's retention rules it."""
    return max(1, math.ceil(settings.retention.dead_raw_days))


def _kms_key(key: str | None) -> str | None:
    """IAM grants KMS rights on a key's ARN, so an alias (which names no key in a policy) is refused."""
    if key is None or _KEY_ARN.fullmatch(key) or _KEY_ID.fullmatch(key):
        return key
    raise ConfigError(f"blobs.s3_kms_key_id {key!r} must name the key itself, by its ARN "
                      "(arn:aws:kms:<region>:<account>:key/<id>) or its key id, not an alias: the stack "
                      "grants the roles kms:Decrypt and kms:GenerateDataKey on that key alone")


def _network(text: str) -> str:
    try:
        return str(ip_network(text.strip(), strict=False))
    except ValueError:
        raise ConfigError(f"--sending-source-ip {text!r} is not an IP address or network (203.0.113.7, "
                          "203.0.113.0/24, 2001:db8::/32)") from None
