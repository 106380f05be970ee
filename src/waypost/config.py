"""Settings: one typed, frozen object built at the edge.

Sources, strongest first: explicit overrides (CLI flags), ``WAYPOST_*`` environment
variables (nested keys with ``__``: ``WAYPOST_SMTP__PORT``), secrets read from files named by
``WAYPOST_<KEY>_FILE``, ``<data dir>/waypost.toml``, defaults. Every key is documented in
``docs/configuration.md``. A bad value raises :class:`ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from waypost import DEFAULT_DATA_DIR
from waypost.errors import ConfigError
from waypost.mail.addresses import AddressError, is_noreply_style, normalise_address

ENV_PREFIX = "WAYPOST_"
CONFIG_FILE_NAME = "waypost.toml"
SES_MAX_MESSAGE_BYTES = 40 * 1024 * 1024  # SES receiving limit, also our SMTP SIZE default


def network_list(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Networks from a list, or from one string separated by commas or spaces (an environment
    variable); a bare address is its own /32 or /128."""
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split() if part]
    return tuple(ipaddress.ip_network(str(v), strict=False) for v in value)


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SmtpSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(2525, ge=0, le=65535)
    max_message_size: int = Field(SES_MAX_MESSAGE_BYTES, gt=0)
    hostname: str | None = None  # name we announce in the greeting; defaults to mail_domain
    max_recipients: int = Field(100, ge=1, le=1000)  # RFC 5321 §4.5.3.1.8: room for at least 100
    max_line_length: int = Field(10_000, ge=1000)  # octets per line of message data, CRLF included
    max_header_bytes: int = Field(256 * 1024, ge=1024)  # the whole header section
    max_header_count: int = Field(1000, ge=10)
    max_connections_per_ip: int = Field(20, ge=1)  # at once
    # sessions at once over the SMTP and submission ports together; None: derived from the
    # open-file limit, and an explicit value is capped the same way (server.connection_ceiling)
    max_connections: int | None = Field(None, ge=1)
    timeout: float = Field(300.0, gt=0)  # idle seconds before the session is closed (RFC 5321 §4.5.3.2.7)
    # bytes of message data held in memory at once over all sessions; the rest waits on disk in
    # <data_dir>/spool (ingress/spool.py). A message bigger than this is handled alone.
    inflight_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    tls_cert_path: Path | None = None  # PEM chain; with tls_key_path, STARTTLS is offered
    tls_key_path: Path | None = None
    submission_port: int | None = Field(None, ge=0, le=65535)  # AUTH required there (devices)
    submission_users_path: Path | None = None  # "user:scrypt-hash" lines; `waypost submission passwd`


class GateSettings(_Group):
    # a From domain that publishes no DMARC record is accepted only with an aligned DKIM pass
    require_dkim_without_dmarc: bool = True
    sender_max_messages: int = Field(30, ge=1)  # per sender within sender_window_minutes
    sender_window_minutes: float = Field(60.0, gt=0)
    # a second copy of a mail (same sender, same Message-ID) within this many days is recorded
    # as a duplicate and not answered: a sender retries when a crash lost our 250; 0: off
    duplicate_window_days: float = Field(7.0, ge=0)


class MimeSettings(_Group):
    max_parts: int = Field(200, ge=1)
    max_depth: int = Field(10, ge=1)  # multipart and message/rfc822 nesting
    max_header_bytes: int = Field(256 * 1024, ge=1024)  # per message or part header section
    max_attachment_bytes: int = Field(200 * 1024 * 1024, ge=1)  # decoded, all attachments together
    max_filename_length: int = Field(120, ge=16)


class HttpSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(8025, ge=0, le=65535)


class DatabaseSettings(_Group):
    url: str | None = None  # None: SQLite file waypost.sqlite3 in the data directory


class WorkerSettings(_Group):
    embedded: bool = True  # `waypost serve` runs a worker in-process
    max_attempts: int = Field(5, ge=1)
    visibility_timeout: float = Field(300.0, gt=0)
    retry_base_delay: float = Field(5.0, gt=0)
    retry_max_delay: float = Field(3600.0, gt=0)
    poll_interval: float = Field(0.5, gt=0)


class JourneySettings(_Group):
    thumbnail_px: int = Field(512, ge=64, le=4096)
    display_px: int = Field(1600, ge=256, le=8192)
    mailbox: str = "journeys"  # local part people write to
    link_days: float = Field(0, ge=0)  # share links expire this long after the journey starts; 0: never
    keep_originals_days: float = Field(0, ge=0)  # 0: raw mail and its originals go once processed
    export_link_days: float = Field(7, gt=0)  # a person's export (zip) is downloadable this long, then deleted
    erasure_confirm_days: float = Field(7, gt=0)  # a "delete my data" waits this long for its "yes"
    image_workers: int = Field(0, ge=0, le=64)  # processes decoding photos; 0: one per CPU, at most 4
    stop_radius_m: float = Field(300, gt=0, le=100_000)
    stop_max_gap_minutes: float = Field(180, gt=0)
    estimate_max_gap_minutes: float = Field(30, ge=0)
    max_speed_kmh: float = Field(1200, gt=0)
    flight_min_km: float = Field(150, gt=0)
    flight_min_speed_kmh: float = Field(250, gt=0)


class WebSettings(_Group):
    admin_token: SecretStr | None = None
    # the console's password, as a scrypt hash written by `waypost admin passwd`
    # (None: <data_dir>/admin-password)
    admin_password_path: Path | None = None
    admin_remote: bool = False  # False: /admin answers loopback clients only
    admin_session_minutes: float = Field(720.0, gt=0)  # a console login lasts this long
    tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    tile_attribution: str = "&copy; OpenStreetMap contributors"
    # reverse proxies (addresses or networks) whose X-Forwarded-For names the client; empty:
    # the direct peer is the client, whatever a request claims
    trusted_proxies: Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode] = ()

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        return network_list(value)


class LegalSettings(_Group):
    """What /privacy and /terms say about who runs the service and under which law; the rest
    (data kept, retention, processors) comes from the running configuration itself."""

    postal_address: str | None = None  # where the operator can be reached by post
    jurisdiction: str | None = None  # the law the terms fall under, e.g. "England and Wales"
    effective_date: date = date(2026, 11, 23)  # when the current text took effect
    changes: Annotated[tuple[str, ...], NoDecode] = ()  # "2026-11-23: first version", newest first

    @field_validator("changes", mode="before")
    @classmethod
    def _changes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(";") if part.strip())
        return tuple(value)


class OutboundSettings(_Group):
    transport: Literal["catcher", "smtp", "ses"] = "catcher"
    # SES sandbox defaults; in SES mode the account's own limits replace them when readable
    max_per_second: float = Field(1.0, gt=0, le=100_000)
    max_per_day: int = Field(200, ge=0)  # rolling 24 hours; 0: no daily quota
    limits_from_provider: bool = True
    bounce_domain: str | None = None  # envelope sender domain (VERP); None: mail_domain
    bounce_mailbox: str = "bounces"  # VERP local part: bounces+<token>@bounce_domain
    unsubscribe_mailbox: str = "unsubscribe"  # the mailto: form of List-Unsubscribe
    paused_recheck_seconds: float = Field(3600.0, gt=0)  # a resume wakes paused messages at once
    # sends retry far longer than inbound jobs: mail servers keep trying for days (RFC 5321
    # §4.5.4.1); the defaults give up after about two days of temporary failures
    max_attempts: int = Field(60, ge=1)
    retry_base_delay: float = Field(30.0, gt=0)
    retry_max_delay: float = Field(3600.0, gt=0)
    # before the first send to a domain: its MX, or the A/AAAA fallback, through dns_nameservers;
    # a null MX or no mail host fails the message (outbound/recipient_domains.py). None: on when
    # mail really leaves (smtp, ses), off for the catcher, which delivers nowhere (and so works
    # on a laptop without DNS, the demo included)
    check_recipient_domains: bool | None = None
    recipient_domain_cache_seconds: float = Field(3600.0, gt=0)

    @field_validator("bounce_domain")
    @classmethod
    def _bounce_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower().rstrip(".")
        if not value or "@" in value or " " in value:
            raise ValueError("must be a bare domain such as bounces.example.org")
        return value


class SmarthostSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"  # none: only for loopback relays
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(60.0, gt=0)
    ca_path: Path | None = None  # trust these CAs for the smarthost's certificate; None: system store


def _words(value: Any) -> Any:
    """A comma/space separated string (environment variables) or a list (TOML)."""
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    return tuple(value)


class FeedbackSettings(_Group):
    # transient bounces: at most one counts per address and day, and each stops counting
    # after soft_bounce_window_days; soft_bounce_limit of them still counting suppresses the
    # address for soft_suppression_days. A delivery to the address clears its count.
    soft_bounce_limit: int = Field(3, ge=1)
    soft_bounce_window_days: float = Field(7.0, gt=0)
    soft_suppression_days: float = Field(14.0, gt=0)
    # bounces whose reason is about our own sending (authentication, blocklists, reverse DNS,
    # spam verdicts, rate limits: see docs/feedback.md) never suppress anyone; this many of
    # them within 24 hours raise the sending_setup alarm
    setup_alarm_count: int = Field(3, ge=1)
    # ARF reports from mailbox providers' feedback loops go to <complaints_mailbox>@<mail_domain>
    complaints_mailbox: str = "fbl"
    keep_reports_days: float = Field(30.0, ge=0)  # raw bounce and complaint mail, then deleted
    # SES feedback through SNS → SQS: the worker consumes this queue (raw delivery on or off)
    sqs_queue_url: str | None = None
    sqs_wait_seconds: int = Field(20, ge=0, le=20)  # long polling (SQS allows at most 20)
    # SNS topics whose messages are accepted, by SQS and by POST /hooks/sns; empty: none
    sns_topic_arns: Annotated[tuple[str, ...], NoDecode] = ()
    # where SNS signing certificates may come from, and whom to trust for that download
    sns_cert_host_pattern: str = r"^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$"
    sns_cert_ca_path: Path | None = None  # None: the system's trust store
    # POST /hooks/sns refuses a signed message older than this (SNS stops retrying after an
    # hour, so older is a replay); 0: no age check
    sns_max_age_minutes: float = Field(60.0, ge=0)
    ses_sync_pause_seconds: float = Field(1.0, ge=0)  # between ListSuppressedDestinations pages (1 call/s)

    @field_validator("sns_topic_arns", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        topics = _words(value)
        for topic in topics:
            if not str(topic).startswith("arn:aws") or str(topic).count(":") != 5:
                raise ValueError(f"{topic!r} is not a topic ARN (arn:aws:sns:<region>:<account>:<name>)")
        return topics


class GuardSettings(_Group):
    """The reputation guard: SES reviews an account at 5 % bounces / 0.1 % complaints and may
    pause it at 10 % / 0.5 % (REFERENCE-SES §4); Waypost warns and pauses itself earlier."""

    bounce_warn: float = Field(0.05, gt=0, lt=1)
    bounce_pause: float = Field(0.08, gt=0, lt=1)
    complaint_warn: float = Field(0.001, gt=0, lt=1)
    complaint_pause: float = Field(0.003, gt=0, lt=1)
    last_sends: int = Field(1000, ge=10)  # the "last N sends" window, besides 24 hours and 7 days
    min_sends: int = Field(50, ge=1)  # a window with fewer sends is shown but never acted on
    # feedback batches are judged at most this often per process (the alarm check judges too)
    check_seconds: float = Field(5.0, ge=0)
    # streams that only ever answer people who wrote in: a send to an address never seen
    # inbound means something else is sending through us
    known_recipients_only: Annotated[tuple[str, ...], NoDecode] = ("journeys",)
    compromise_checks: bool = True  # the two checks below, made for every message at admission
    spike_factor: float = Field(10.0, gt=1)  # sends in the last hour over this × the hourly mean of 7 days
    spike_min_per_hour: int = Field(200, ge=1)  # ... and over this many: a spike pauses sending

    @field_validator("known_recipients_only", mode="before")
    @classmethod
    def _streams(cls, value: Any) -> Any:
        return _words(value)

    @model_validator(mode="after")
    def _warn_before_pause(self) -> GuardSettings:
        for what in ("bounce", "complaint"):
            if getattr(self, f"{what}_warn") > getattr(self, f"{what}_pause"):
                raise ValueError(f"{what}_warn must not be above {what}_pause: the warning comes first")
        return self


class AlarmSettings(_Group):
    # the thresholds of AWS's reference design for an SES mail pipeline
    dead_letters: int = Field(50, ge=0)  # more dead-lettered jobs than this
    oldest_job_seconds: float = Field(180.0, gt=0)  # a due job has waited longer than this
    stale_jobs: int = Field(180, ge=0)  # more due jobs older than stale_job_seconds than this
    stale_job_seconds: float = Field(300.0, gt=0)
    check_interval_seconds: float = Field(60.0, gt=0)
    mail_operator: bool = True  # mail operator_email when an alarm fires (never users)
    mail_interval_hours: float = Field(6.0, gt=0)  # at most one mail per alarm in this time
    # complaints, abuse@ reports, removal requests without a token and new suppressions other
    # than a person's own stop reach the operator in one digest mail at most this often
    digest_interval_minutes: float = Field(60.0, gt=0)


class RetentionSettings(_Group):
    # raw bytes of mail nobody will answer (refused) or that gave up (dead, kept for a retry),
    # deleted this long after the outcome; the row and its reason stay for the operator
    refused_raw_days: float = Field(7.0, ge=0)
    dead_raw_days: float = Field(30.0, ge=0)
    # a blob no row refers to (a crash between writing it and committing its row) goes once this
    # old; long enough that a message or photo being stored right now is never taken for one
    orphan_grace_minutes: float = Field(60.0, ge=1)
    sweep_interval_minutes: float = Field(60.0, gt=0)  # each worker sweeps at start, then this often
    # the other stores of personal data (pipeline/retention.py), each this long after its own
    # moment (docs/configuration.md); 0: at the next sweep, "keep" (None): never
    service_mail_days: float | None = Field(30.0, ge=0)  # raw mail of unsubscribe@, postmaster@, abuse@…
    sent_raw_days: float | None = Field(30.0, ge=0)  # the bytes of our own messages, once final
    message_rows_days: float | None = Field(90.0, ge=0)  # message rows once their bytes are gone
    feedback_raw_days: float | None = Field(30.0, ge=0)  # the payload of each feedback event
    audit_days: float | None = Field(180.0, ge=0)  # audit entries
    audit_views_days: float | None = Field(30.0, ge=0)  # journey.view entries (truncated IPs)
    idle_journeys_days: float | None = Field(None, gt=0)  # journeys untouched this long; None: kept

    @field_validator("service_mail_days", "sent_raw_days", "message_rows_days", "feedback_raw_days",
                     "audit_days", "audit_views_days", "idle_journeys_days", mode="before")
    @classmethod
    def _keep(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("keep", "never", "") else value


# No key may end in "_file": WAYPOST_<KEY>_FILE names a secret file (see _FileSecretsSource).
class DkimSettings(_Group):
    selector: str | None = None  # set selector and private_key_path to sign (SMTP mode)
    private_key_path: Path | None = None  # PEM, RSA 2048+ (rsa-sha256) or Ed25519 (ed25519-sha256)
    domain: str | None = None  # d= tag; None: mail_domain


class SesSettings(_Group):
    region: str = "eu-west-1"
    endpoint_url: str | None = None  # only for tests and VPC endpoints
    configuration_set: str | None = None  # ConfigurationSetName on every send (event publishing)
    # sending authorization (another account's identity, docs/deploy-aws.md): SES v2
    # FromEmailAddressIdentityArn and FeedbackForwardingEmailAddressIdentityArn on every send
    from_identity_arn: str | None = None
    feedback_forwarding_identity_arn: str | None = None

    @field_validator("from_identity_arn", "feedback_forwarding_identity_arn")
    @classmethod
    def _identity_arn(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"arn:aws[a-z-]*:ses:[a-z0-9-]+:\d{12}:identity/\S+", value):
            raise ValueError(f"{value!r} is not an SES identity ARN (arn:aws:ses:<region>:<account>:identity/<domain "
                             "or address>)")
        return value


class SesIngressSettings(_Group):
    """Mail received by SES: receipt notifications (SES → SNS → SQS, or S3 events) on one queue."""

    sqs_queue_url: str | None = None  # set: every worker (and the Lambda handler) consumes it
    sqs_wait_seconds: int = Field(20, ge=0, le=20)  # long polling (SQS allows at most 20)
    # SNS topics whose notifications are accepted; empty: any (the queue policy decides)
    sns_topic_arns: Annotated[tuple[str, ...], NoDecode] = ()
    region: str | None = None  # of the queue and the receiving bucket; None: ses.region
    # delete SES's copy of a mail (its S3 action's object) once the mail is committed into
    # Waypost's own blobs, so raw mail is not kept twice; the bucket's lifecycle rule is the backstop
    delete_received: bool = True

    @field_validator("sns_topic_arns", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        return FeedbackSettings._topics(value)


class BlobSettings(_Group):
    """Where raw mail and photos are kept: the data directory, or an S3 bucket."""

    backend: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_prefix: str = ""  # put before every object key ("waypost/"); lifecycle rules can use it
    s3_region: str | None = None  # None: ses.region
    s3_endpoint_url: str | None = None  # only for tests and VPC endpoints
    s3_kms_key_id: str | None = None  # SSE-KMS with this key; None: SSE-S3 (AES256)
    # encrypts object names so they reveal nothing (no dates, ids or hashes); shared by every
    # process using the bucket and never changed once objects exist (use: openssl rand -hex 32)
    s3_name_key: SecretStr | None = None
    photo_urls: Literal["waypost", "presigned"] = "waypost"  # photos streamed by Waypost, or a redirect
    presigned_seconds: int = Field(300, ge=1, le=7 * 24 * 3600)  # lifetime of a presigned photo URL

    @model_validator(mode="after")
    def _s3_complete(self) -> BlobSettings:
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("blobs.backend = \"s3\" needs blobs.s3_bucket")
        if self.backend == "s3" and (self.s3_name_key is None or len(self.s3_name_key.get_secret_value()) < 32):
            raise ValueError("blobs.backend = \"s3\" needs blobs.s3_name_key of 32+ characters "
                             "(openssl rand -hex 32), the same in every process")
        if self.photo_urls == "presigned" and self.backend != "s3":
            raise ValueError("blobs.photo_urls = \"presigned\" needs blobs.backend = \"s3\"")
        return self


class DoctorSettings(_Group):
    """`waypost doctor` and its rerun by the worker (see docs/readiness.md)."""

    interval_hours: float = Field(24.0, ge=0)  # the worker reruns the doctor this often; 0: never
    receiving: Literal["smtp", "ses"] = "smtp"  # where mail_domain's MX should lead: this host or SES inbound
    # the public addresses mail leaves from in SMTP mode (SPF, reverse DNS); empty: the
    # addresses of the HELO name (smtp.hostname)
    sending_ips: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("sending_ips", mode="before")
    @classmethod
    def _ips(cls, value: Any) -> Any:
        return tuple(str(ipaddress.ip_address(word)) for word in _words(value))


class DmarcSettings(_Group):
    """DMARC aggregate and failure reports and SMTP TLS reports (see docs/readiness.md)."""

    # the rua/ruf (and TLS-RPT) mailbox on mail_domain: publish rua=mailto:<mailbox>@<mail_domain>
    mailbox: str = "dmarc"
    # a gzip or zip report unpacks to at most this many bytes; a larger one is kept as malformed
    max_report_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    keep_reports_days: float = Field(400.0, gt=0)  # aggregate and TLS reports, then deleted
    # failure reports quote the failed mail's headers (personal data): deleted sooner
    keep_failure_reports_days: float = Field(30.0, gt=0)
    # own_mail_failing_dmarc fires when this many of our messages failed DMARC in the last alarm_days
    alarm_min_messages: int = Field(1, ge=1)
    alarm_days: float = Field(7.0, gt=0)


class RelaySettings(_Group):
    """The device relay (apps/relay, docs/relay.md)."""

    mailbox: str = "relay"  # devices write to <mailbox>@<mail_domain> (or <mailbox>+<device>@)
    # attachment types a device may send (type/subtype, or type/* for a whole type)
    attachment_types: Annotated[tuple[str, ...], NoDecode] = (
        "application/pdf", "image/*", "text/csv", "text/plain", "application/json", "application/xml")
    max_attachments: int = Field(20, ge=1)
    purge_interval_minutes: int = Field(60, ge=1)  # how often attachments past retention are deleted
    # a device sending more than guard.spike_factor × its usual hourly messages, and at least this
    # many in the hour, is paused (disabled) and its owner told
    spike_min_per_hour: int = Field(20, ge=1)
    # the longest retention a device may be given; on S3 the bucket's lifecycle rule for the relay's
    # files (the stack's "relay-files") expires them one day after this, behind the purge job
    max_retention_days: int = Field(365, ge=1)

    @field_validator("attachment_types", mode="before")
    @classmethod
    def _types(cls, value: Any) -> Any:
        return _words(value)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    mail_domain: str = "waypost.test"
    base_url: str | None = None  # None: http://<http.host>:<bound port>
    operator_name: str = "Waypost operator"
    operator_email: str | None = None  # None: operator@<mail_domain>
    # where mail to the operator mailboxes on mail_domain (operator_email there, postmaster@,
    # abuse@) is forwarded, DMARC-safe; None: it is only kept in the console's operator inbox
    operator_forward_to: str | None = None
    # local parts on mail_domain kept in the operator inbox like postmaster@, for the mail that asks
    # to prove the address is ours: SES identity verification, registrars, certificate authorities
    # (CA/Browser Forum baseline requirements 3.2.2.4.4: admin, administrator, hostmaster, postmaster,
    # webmaster; RFC 2142 §4-5), and the no-reply sender one verifies with SES. Those an app serves
    # stay the app's. Comma/space list in the environment.
    verification_mailboxes: Annotated[tuple[str, ...], NoDecode] = (
        "no-reply", "noreply", "verify", "hostmaster", "webmaster", "admin", "administrator", "info")
    reply_from: str | None = None  # None: <journeys.mailbox>@<mail_domain>
    reply_from_name: str = "Waypost journeys"
    # NoDecode: the env value is a comma/space list, not JSON; _networks splits it
    trusted_networks: Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode] = ()

    # DNS servers ("host:port") for SPF, DKIM and DMARC lookups instead of the system's resolver
    dns_nameservers: Annotated[tuple[str, ...], NoDecode] = ()
    dns_timeout: float = Field(5.0, gt=0)

    smtp: SmtpSettings = SmtpSettings()
    gate: GateSettings = GateSettings()
    mime: MimeSettings = MimeSettings()
    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    worker: WorkerSettings = WorkerSettings()
    journeys: JourneySettings = JourneySettings()
    web: WebSettings = WebSettings()
    outbound: OutboundSettings = OutboundSettings()
    smarthost: SmarthostSettings = SmarthostSettings()
    dkim: DkimSettings = DkimSettings()
    ses: SesSettings = SesSettings()
    doctor: DoctorSettings = DoctorSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    ses_ingress: SesIngressSettings = SesIngressSettings()
    blobs: BlobSettings = BlobSettings()
    guard: GuardSettings = GuardSettings()
    alarms: AlarmSettings = AlarmSettings()
    retention: RetentionSettings = RetentionSettings()
    dmarc: DmarcSettings = DmarcSettings()
    legal: LegalSettings = LegalSettings()
    relay: RelaySettings = RelaySettings()
    # signing keys for unsubscribe tokens and VERP addresses, newest first; the first signs,
    # all verify (rotation). Empty: a key generated once in <data_dir>/secret.key
    secret_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()

    @field_validator("mail_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if not value or "@" in value or " " in value:
            raise ValueError("must be a bare domain such as waypost.example.org")
        return value

    @field_validator("trusted_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        return network_list(value)

    @field_validator("dns_nameservers", mode="before")
    @classmethod
    def _nameservers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        return tuple(_nameserver(str(item)) for item in value)

    @field_validator("verification_mailboxes", mode="before")
    @classmethod
    def _local_parts(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        parts = tuple(dict.fromkeys(str(item).strip().lower() for item in value))
        if any(not part or "@" in part or "+" in part for part in parts):
            raise ValueError("list bare local parts such as hostmaster, webmaster (no @domain, no +tag)")
        return parts

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, str | SecretStr):
            raw = value.get_secret_value() if isinstance(value, SecretStr) else value
            value = [part for part in raw.replace(",", " ").split() if part]
        keys = tuple(SecretStr(v.get_secret_value() if isinstance(v, SecretStr) else str(v)) for v in value)
        if any(len(k.get_secret_value()) < 16 for k in keys):
            raise ValueError("each key needs at least 16 characters (use: openssl rand -hex 32)")
        return keys

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        data_dir = Path(init_settings.init_kwargs.get("data_dir") or _env_data_dir())  # type: ignore[attr-defined]
        toml_path = data_dir / CONFIG_FILE_NAME
        # WAYPOST_<KEY>_FILE names a secret file (_FileSecretsSource), not a key of its own
        env_vars = env_settings.env_vars  # type: ignore[attr-defined]
        env_settings.env_vars = {k: v for k, v in env_vars.items() if not k.endswith("_file")}  # type: ignore[attr-defined]
        return (
            init_settings,
            env_settings,
            _FileSecretsSource(settings_cls),
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    # Derived values: one place, so nothing else re-derives them differently.
    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'waypost.sqlite3').resolve()}"

    @property
    def operator_address(self) -> str:
        return self.operator_email or f"operator@{self.mail_domain}"

    @property
    def operator_delivery_address(self) -> str:
        """Where mail for the operator (alarms, digests, forwards) is sent: operator_forward_to when
        set, else the operator address itself."""
        return self.operator_forward_to or self.operator_address

    @property
    def reply_address(self) -> str:
        return self.reply_from or f"{self.journeys.mailbox}@{self.mail_domain}"

    @property
    def journeys_address(self) -> str:
        return f"{self.journeys.mailbox}@{self.mail_domain}"

    @property
    def smtp_hostname(self) -> str:
        return self.smtp.hostname or self.mail_domain

    @property
    def public_base_url(self) -> str:
        return self.base_url or f"http://{self.http.host}:{self.http.port}"

    @property
    def bounce_domain(self) -> str:
        return self.outbound.bounce_domain or self.mail_domain

    @property
    def dkim_domain(self) -> str:
        return self.dkim.domain or self.mail_domain

    @property
    def unsubscribe_address(self) -> str:
        return f"{self.outbound.unsubscribe_mailbox}@{self.mail_domain}"

    @property
    def admin_password_file(self) -> Path:
        return self.web.admin_password_path or self.data_dir / "admin-password"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def masked(self) -> dict[str, Any]:
        """A dump for logs and `waypost config`; secrets appear as '**********'."""
        return self.model_dump(mode="json")


class _FileSecretsSource(PydanticBaseSettingsSource):
    """``WAYPOST_<KEY>_FILE=/run/secrets/x`` reads the value of KEY from that file
    (nested keys with ``__``: ``WAYPOST_WEB__ADMIN_TOKEN_FILE``)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, path in os.environ.items():
            upper = name.upper()
            if not (upper.startswith(ENV_PREFIX) and upper.endswith("_FILE")):
                continue
            if upper == "WAYPOST_DATA_DIR_FILE":
                continue
            keys = upper[len(ENV_PREFIX) : -len("_FILE")].lower().split("__")
            try:
                value = Path(path).read_text(encoding="utf-8").strip()
            except OSError as err:
                raise ConfigError(f"{name}: cannot read secret file {path!r}: {err}") from err
            target = found
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = value
        return found


def _nameserver(text: str) -> str:
    """``1.2.3.4``, ``1.2.3.4:5353``, ``::1`` or ``[::1]:5353`` → ``ip:port`` / ``[ip]:port``."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    try:
        address = ipaddress.ip_address(host)
        number = int(port or 53)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address with an optional :port") from None
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return f"[{address}]:{number}" if address.version == 6 else f"{address}:{number}"


def _env_data_dir() -> str:
    return os.environ.get(f"{ENV_PREFIX}DATA_DIR", DEFAULT_DATA_DIR)


def load_settings(data_dir: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings; raise ConfigError naming each bad key and how to fix it."""
    kwargs = {key: value for key, value in overrides.items() if value is not None}
    if data_dir is not None:
        kwargs["data_dir"] = Path(data_dir)
    toml_path = Path(kwargs.get("data_dir") or _env_data_dir()) / CONFIG_FILE_NAME
    _check_toml_syntax(toml_path)
    try:
        settings = Settings(**kwargs)
    except ValidationError as err:
        raise ConfigError(_explain(err, toml_path)) from None
    except SettingsError as err:
        raise ConfigError(f"{err}; a group takes one variable per key, such as WAYPOST_SMTP__PORT") from None
    _check_addresses(settings)
    _check_public_links(settings)
    _check_operator_forward(settings)
    return settings


def _check_toml_syntax(path: Path) -> None:
    if not path.exists():
        return
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err}); fix the file and start again") from None


def _explain(err: ValidationError, toml_path: Path) -> str:
    lines = ["invalid configuration:"]
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        env = ENV_PREFIX + "__".join(str(p) for p in problem["loc"]).upper()
        if problem["type"] == "extra_forbidden":
            hint = "unknown key: remove it or check its spelling in docs/configuration.md"
        else:
            hint = f"{problem['msg']} (got {problem.get('input')!r})"
        lines.append(f"  {key}: {hint}; set it in {toml_path} or with {env}")
    return "\n".join(lines)


def _check_public_links(settings: Settings) -> None:
    """Mail that really leaves links to base_url, and RFC 8058 one-click needs an https URI:
    a loopback or http:// default would put dead links into every message."""
    if settings.outbound.transport == "catcher":
        return
    if settings.base_url is None or not settings.base_url.startswith("https://"):
        raise ConfigError(
            f"base_url: with outbound.transport = {settings.outbound.transport!r} every message links to "
            f"base_url, and one-click unsubscribe (RFC 8058) needs https; set base_url to the public https "
            f"address of this server (got {settings.base_url or 'none'})")


def _on_our_domains(settings: Settings, address: str) -> bool:
    return normalise_address(address).rsplit("@", 1)[1] in {settings.mail_domain, settings.bounce_domain}


def _check_operator_forward(settings: Settings) -> None:
    """A forward to our own domains would only come back to us."""
    forward = settings.operator_forward_to
    if forward is None:
        return
    try:
        forward = normalise_address(forward)
    except AddressError as err:
        raise ConfigError(f"operator_forward_to: {err}; set a full address such as you@example.org") from None
    if _on_our_domains(settings, forward):
        raise ConfigError(f"operator_forward_to: {forward} is on this Waypost's own domain, so forwarded "
                          "mail would come straight back; set a mailbox you read elsewhere")


def check_operator_reachable(settings: Settings) -> None:
    """Raise ConfigError, saying how to fix it, when the contact shown in every mail leads nowhere:
    outside catcher mode, an operator address on mail_domain only lands in the console's operator
    inbox, where nobody is told of it, unless operator_forward_to passes it on. Checked when the
    service starts (`waypost serve`, `waypost worker`), not by every command."""
    if settings.outbound.transport == "catcher" or settings.operator_forward_to is not None:
        return
    if _on_our_domains(settings, settings.operator_address):
        raise ConfigError(
            f"operator_email: {settings.operator_address} is on {settings.mail_domain}, whose mail Waypost "
            "receives itself: alarms and people's questions would only wait in the console's operator inbox. "
            "Set operator_forward_to to a mailbox you read elsewhere (each mail is forwarded there), or set "
            "operator_email to that mailbox")


def _check_addresses(settings: Settings) -> None:
    for key, value in (
        ("operator_email", settings.operator_address),
        ("reply_from", settings.reply_address),
    ):
        try:
            normalise_address(value)
        except AddressError as err:
            raise ConfigError(f"{key}: {err}; set a full address such as journeys@example.org") from None
        if is_noreply_style(value):
            raise ConfigError(
                f"{key}: {value!r} is a noreply-style address; replies must come from a "
                "mailbox a person reads (for example journeys@your-domain)"
            )
