"""Tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` create the same schema;
``tests/unit/test_migrations.py`` checks the two agree."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from waypost.clock import utcnow as utcnow  # re-exported: the store's modules read the clock here
from waypost.store.states import InboundStatus as InboundStatus  # each beside the table it is for
from waypost.store.states import JobState as JobState
from waypost.store.states import OutboundState as OutboundState

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


inbound_messages = sa.Table(
    "inbound_messages",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("peer_ip", sa.String(64), nullable=True),
    sa.Column("helo", sa.String(255), nullable=True),
    sa.Column("mail_from", sa.String(320), nullable=True),
    sa.Column("rcpt_tos", sa.JSON, nullable=False),
    sa.Column("blob_key", sa.String(255), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("ingress", sa.String(16), nullable=False),  # smtp | ses
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("from_address", sa.String(320), nullable=True, index=True),  # the guard: ever written to us?
    sa.Column("message_id_header", sa.String(998), nullable=True),
    sa.Column("subject", sa.Text, nullable=True),
    sa.Column("processed_at", UTCDateTime, nullable=True),
    # set when the raw message (and with it the original attachments) was deleted after processing
    sa.Column("raw_deleted_at", UTCDateTime, nullable=True),
    # SPF/DKIM/DMARC verdict (mail/verdict.py AuthVerdict.to_json), made at SMTP time or by SES;
    # None: not checked (a trusted network, or mail that bypassed authentication)
    sa.Column("auth", sa.JSON, nullable=True),
    # mail.messageId of mail received by SES (ingress/ses.py): one row per SES mail, however
    # often its notification arrives; None for SMTP
    sa.Column("ses_message_id", sa.String(255), nullable=True),
    sa.Index("ux_inbound_messages_ses_message_id", "ses_message_id", unique=True),
    # the login that sent it over the submission port (ingress/submission.py); None for the others
    sa.Column("auth_user", sa.String(64), nullable=True),
)

# Which inbound message was handled for a (sender, Message-ID): claimed in the transaction that
# records it processed, so a second copy (a sender retrying after a crash lost our 250, perhaps
# on another worker at the same moment) finds the claim and is not answered again
# (pipeline/duplicates.py). Keyed by a digest: a Message-ID of 998 characters is too long for an
# index entry on PostgreSQL. No foreign key: a claim whose message is gone is simply taken over.
inbound_dedupe = sa.Table(
    "inbound_dedupe",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),  # SHA-256 hex of the sender key and Message-ID
    sa.Column("inbound_id", sa.String(32), nullable=False),  # the copy that was handled
    sa.Column("received_at", UTCDateTime, nullable=False, index=True),  # its arrival: the window's start
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("run_after", UTCDateTime, nullable=False),
    sa.Column("locked_until", UTCDateTime, nullable=True),
    sa.Column("locked_by", sa.String(64), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_jobs_state_run_after", "state", "run_after"),
)

allowlist = sa.Table(
    "allowlist",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),  # address | domain
    sa.Column("value", sa.String(320), nullable=False, unique=True),
    sa.Column("added_at", UTCDateTime, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)

journeys = sa.Table(
    "journeys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token", sa.String(64), nullable=False, unique=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("owner_address", sa.String(320), nullable=False, index=True),
    sa.Column("source_message_id", sa.String(32), sa.ForeignKey("inbound_messages.id"), nullable=False, unique=True),
    # a second secret, for the reply address (journeys+<reply_token>@domain): adding photos
    # must not be possible with only the share link
    # nullable only in the schema: adding NOT NULL to a table would make SQLite rebuild it,
    # and dropping the old table cascades into photos; the application always sets it
    sa.Column("reply_token", sa.String(64), nullable=True, unique=True, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # the share link stops working once revoked, or after it expires (rotating it replaces token)
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=True),
)

# Every mail of a journey's thread, inbound and ours, by its Message-ID header, so a reply
# (In-Reply-To / References) finds its journey; inbound rows also make a re-run idempotent.
journey_messages = sa.Table(
    "journey_messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("journey_id", sa.Integer, sa.ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("direction", sa.String(8), nullable=False),  # in | out
    sa.Column("inbound_message_id", sa.String(32), sa.ForeignKey("inbound_messages.id"), nullable=True,
              unique=True),
    sa.Column("message_id_header", sa.String(998), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_journey_messages_message_id_header", "message_id_header"),
)

photos = sa.Table(
    "photos",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("journey_id", sa.Integer, sa.ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("public_id", sa.String(32), nullable=False, unique=True),
    sa.Column("filename", sa.Text, nullable=True),
    sa.Column("mail_position", sa.Integer, nullable=False),
    sa.Column("taken_at", UTCDateTime, nullable=True),
    sa.Column("utc_offset_minutes", sa.Integer, nullable=True),
    sa.Column("time_source", sa.String(32), nullable=True),
    sa.Column("latitude", sa.Float, nullable=True),
    sa.Column("longitude", sa.Float, nullable=True),
    sa.Column("altitude", sa.Float, nullable=True),
    sa.Column("make", sa.Text, nullable=True),
    sa.Column("model", sa.Text, nullable=True),
    sa.Column("width", sa.Integer, nullable=True),
    sa.Column("height", sa.Integer, nullable=True),
    sa.Column("thumb_key", sa.String(255), nullable=True),
    sa.Column("display_key", sa.String(255), nullable=True),
    sa.Column("problem", sa.Text, nullable=True),
    sa.UniqueConstraint("journey_id", "content_sha256", name="uq_photos_journey_content"),
)

outbound_messages = sa.Table(
    "outbound_messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
    sa.Column("stream", sa.String(32), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False, index=True),
    sa.Column("envelope_sender", sa.String(320), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    # indexed: a DSN or ARF report that quotes our Message-ID finds its row
    sa.Column("message_id_header", sa.String(998), nullable=False, index=True),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("provider_message_id", sa.String(255), nullable=True, index=True),  # SES feedback names it
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    # when the rate limiter let this message through (the per-second and 24-hour windows
    # count these), and when its bytes were handed to the transport: a row still ``sending``
    # with handoff_at set may have been delivered, so it is never handed over again
    sa.Column("admitted_at", UTCDateTime, nullable=True),
    sa.Column("handoff_at", UTCDateTime, nullable=True),
    # the rate window's time for this message: a moment known to be after its bytes left
    # (taken once the handoff was committed); while ``sending``, a message holds its place
    # in the window whatever the clock says
    sa.Column("window_at", UTCDateTime, nullable=True, index=True),
    # sent, but the transport's answer was lost (crash or dropped connection after handoff)
    sa.Column("unconfirmed", sa.Boolean, nullable=False, server_default=sa.false()),
    # covers the reputation guard's send counts: without it SQLite walks past every row's raw
    # bytes to read the state, and a guard run grows with the size of the messages
    sa.Index("ix_outbound_messages_state_window_at", "state", "window_at", "stream"),
)

# Addresses nothing is sent to (checked inside the outbox before every send).
suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("address", sa.String(320), nullable=False, unique=True),  # suppression_key(): lower-case
    sa.Column("reason", sa.String(16), nullable=False),  # BOUNCE | COMPLAINT | UNSUBSCRIBE | MANUAL
    sa.Column("source", sa.String(64), nullable=False),  # who or what added it: cli, one-click, mailto, ...
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),  # None: until removed
)

# A row per paused scope: "*" pauses everything, a stream name only that stream.
sending_pauses = sa.Table(
    "sending_pauses",
    metadata,
    sa.Column("scope", sa.String(32), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("paused_by", sa.String(64), nullable=False),
    sa.Column("paused_at", UTCDateTime, nullable=False),
)

# Admissions per minute, for the rolling 24-hour quota: a sum over at most 1,441 rows
# instead of a count over every message of the day.
send_minutes = sa.Table(
    "send_minutes",
    metadata,
    sa.Column("minute", UTCDateTime, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

# One row ("send"), locked by every admission so the rate and quota checks of several worker
# processes are serialised on PostgreSQL (SQLite's BEGIN IMMEDIATE serialises them already).
send_locks = sa.Table(
    "send_locks",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
)

# Every piece of delivery feedback applied (SES events, DSNs, ARF reports), one row per
# recipient: the dedupe key drops repeats, ``counts_as`` feeds the reputation windows.
feedback_events = sa.Table(
    "feedback_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dedupe_key", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(24), nullable=False),  # feedback.events.Kind
    sa.Column("source", sa.String(8), nullable=False),  # ses | dsn | arf
    sa.Column("recipient", sa.String(320), nullable=True, index=True),
    sa.Column("outbound_id", sa.Integer, nullable=True, index=True),  # our outbound row, when linked
    sa.Column("stream", sa.String(32), nullable=True),
    sa.Column("bounce_type", sa.String(16), nullable=True),
    sa.Column("bounce_subtype", sa.String(32), nullable=True),
    sa.Column("status", sa.String(16), nullable=True),
    sa.Column("feedback_type", sa.String(32), nullable=True),
    sa.Column("diagnostic", sa.Text, nullable=True),
    # what the policy did: suppressed, scored, review, recorded, ignored
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    # bounce | complaint: counts toward the reputation rates; None: does not
    sa.Column("counts_as", sa.String(16), nullable=True),
    sa.Column("occurred_at", UTCDateTime, nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("provider_message_id", sa.String(255), nullable=True),
    sa.Column("raw", sa.Text, nullable=False),
    # why the recipient failed (feedback.reasons.Reason value); None before revision 0008
    sa.Column("reason", sa.String(24), nullable=True),
    # covers the reputation guard's counts (per window, per stream) without reading the rows
    sa.Index("ix_feedback_events_counts_as_received_at", "counts_as", "received_at", "stream"),
    sa.Index("ix_feedback_events_outcome_received_at", "outcome", "received_at"),
)

# Transient bounces per address: the score that suppresses an address that keeps bouncing softly.
bounce_scores = sa.Table(
    "bounce_scores",
    metadata,
    sa.Column("address", sa.String(320), primary_key=True),  # suppression_key()
    sa.Column("score", sa.Integer, nullable=False),  # counted bounces still inside the window
    sa.Column("bounces", sa.JSON, nullable=False),  # their times (ISO 8601, UTC), oldest first
    sa.Column("last_at", UTCDateTime, nullable=False),
)

# Who changed the suppression list, when and why (the operator's audit trail).
suppression_log = sa.Table(
    "suppression_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),  # add | remove
    sa.Column("address", sa.String(320), nullable=False, index=True),
    sa.Column("reason", sa.String(16), nullable=True),
    sa.Column("by", sa.String(64), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)

# Every pause and resume, kept after the pause itself is lifted.
pause_log = sa.Table(
    "pause_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("scope", sa.String(32), nullable=False),
    sa.Column("action", sa.String(8), nullable=False),  # pause | resume
    sa.Column("by", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
)

# Alarm states, so a firing alarm is mailed once per interval and its recovery is noticed.
alarm_states = sa.Table(
    "alarm_states",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("firing", sa.Boolean, nullable=False),
    sa.Column("since", UTCDateTime, nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("mailed_at", UTCDateTime, nullable=True),
)

# Feedback that could not be read (an SQS body, an SNS message): kept for the operator.
feedback_unreadable = sa.Table(
    "feedback_unreadable",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # sqs | sns
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)

# Who did what through the console, who viewed which share link, and failed logins.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(64), nullable=False),  # admin, token, cli, anonymous
    sa.Column("action", sa.String(48), nullable=False, index=True),  # e.g. allowlist.add, journey.view, login.failed
    sa.Column("target", sa.String(320), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
)

# Places a person keeps off every public output of their journeys (apps/journeys/privacy_zones.py):
# a circle per row, keyed by the address without its +tag; set by the person (`hide home`) or the
# operator (`waypost person zone add`).
privacy_zones = sa.Table(
    "privacy_zones",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("address", sa.String(320), nullable=False, index=True),
    sa.Column("latitude", sa.Float, nullable=False),
    sa.Column("longitude", sa.Float, nullable=False),
    sa.Column("radius_m", sa.Float, nullable=False),
    sa.Column("label", sa.Text, nullable=True),  # "home", or what the operator called it
    sa.Column("source", sa.String(16), nullable=False),  # mail | operator
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Each `waypost doctor` run, from the command or the worker's daily rerun: the drift alarm
# compares with the previous one, and the production-access request cites the latest.
doctor_runs = sa.Table(
    "doctor_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("origin", sa.String(16), nullable=False),  # cli | worker
    sa.Column("worst", sa.String(8), nullable=False),  # ok | warn | fail
    sa.Column("results", sa.JSON, nullable=False),  # the report as `waypost doctor --json` prints it
    sa.Column("drift", sa.JSON, nullable=False),  # names of checks that passed before and fail now
)

# Each `waypost drill` run: what was sent to which test address, what came back, the verdict;
# `drill --history`, the console and the production-access request read them.
drill_runs = sa.Table(
    "drill_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", UTCDateTime, nullable=False, index=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),  # None: still running (or the process died)
    sa.Column("mode", sa.String(16), nullable=False),  # ses | smtp | catcher
    sa.Column("verdict", sa.String(8), nullable=False),  # running | pass | fail
    sa.Column("scenarios", sa.JSON, nullable=False),  # one object per test address (drill.runner.Outcome)
    sa.Column("detail", sa.Text, nullable=False),  # a one-line summary, or why the run failed
)

# DMARC aggregate (rua) and failure (ruf) reports and SMTP TLS reports (RFC 8460), one row per
# report; the same report twice (same kind, reporter and report id) is one row (dedupe_key).
# A report that could not be read is kept with ``malformed`` and its bytes (``raw``).
dmarc_reports = sa.Table(
    "dmarc_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # aggregate | failure | tls
    sa.Column("dedupe_key", sa.String(255), nullable=False, unique=True),
    sa.Column("org_name", sa.String(255), nullable=True),
    sa.Column("report_id", sa.String(255), nullable=True),
    sa.Column("policy_domain", sa.String(255), nullable=True),
    sa.Column("date_begin", UTCDateTime, nullable=True),
    sa.Column("date_end", UTCDateTime, nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False, index=True),
    sa.Column("malformed", sa.Boolean, nullable=False),
    sa.Column("problem", sa.Text, nullable=True),
    sa.Column("details", sa.JSON, nullable=False),  # published policy, failure report fields
    sa.Column("raw", sa.LargeBinary, nullable=True),  # only for a malformed report
)

# the <record> rows of an aggregate report: aligned results (policy_evaluated) and raw ones (auth)
dmarc_records = sa.Table(
    "dmarc_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("report_pk", sa.Integer, sa.ForeignKey("dmarc_reports.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("source_ip", sa.String(64), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("disposition", sa.String(16), nullable=False),  # none | quarantine | reject | pass
    sa.Column("dkim", sa.String(16), nullable=False),  # DMARC-aligned DKIM result: pass | fail
    sa.Column("spf", sa.String(16), nullable=False),  # DMARC-aligned SPF result: pass | fail
    sa.Column("header_from", sa.String(255), nullable=True),
    sa.Column("auth", sa.JSON, nullable=False),  # auth_results and override reasons as reported
)

# the policies of an SMTP TLS report (RFC 8460 §4.4), with their session counts
tls_report_policies = sa.Table(
    "tls_report_policies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("report_pk", sa.Integer, sa.ForeignKey("dmarc_reports.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("policy_domain", sa.String(255), nullable=False),
    sa.Column("policy_type", sa.String(16), nullable=False),  # sts | tlsa | no-policy-found
    sa.Column("success_count", sa.Integer, nullable=False),
    sa.Column("failure_count", sa.Integer, nullable=False),
    sa.Column("failures", sa.JSON, nullable=False),  # failure-details as reported
)

# A person's export (apps/people_export.py): a zip in the blob store behind an expiring link
# whose token is kept only as a SHA-256; one per requesting mail (source_message_id).
exports = sa.Table(
    "exports",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("address", sa.String(320), nullable=False, index=True),  # the person, as the gate takes them
    sa.Column("source_message_id", sa.String(32), nullable=True, unique=True),  # None: made by the CLI
    sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
    sa.Column("blob_key", sa.String(255), nullable=True),  # None until the zip is built
    sa.Column("size", sa.Integer, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("ready_at", UTCDateTime, nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=True),
)

# A "delete my data" waiting for its "yes": the reply to our confirmation (by its Message-ID)
# erases the person (apps/erasure.py).
erasure_requests = sa.Table(
    "erasure_requests",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("address", sa.String(320), nullable=False),
    sa.Column("source_message_id", sa.String(32), nullable=False, unique=True),
    sa.Column("confirmation_message_id", sa.String(998), nullable=False, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

# The device relay (apps/relay): a device's settings; its login is in the submission users file.
relay_devices = sa.Table(
    "relay_devices",
    metadata,
    sa.Column("name", sa.String(48), primary_key=True),
    sa.Column("owner", sa.String(320), nullable=False),
    sa.Column("allow", sa.JSON, nullable=False),  # addresses and domains the device may mail
    sa.Column("default_to", sa.JSON, nullable=False),  # recipients when the body names none
    sa.Column("retention_days", sa.Integer, nullable=False),
    sa.Column("link_days", sa.Integer, nullable=False),
    sa.Column("max_mb", sa.Integer, nullable=False),
    sa.Column("submission_user", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("disabled_at", UTCDateTime, nullable=True),
    sa.Column("disabled_reason", sa.String(255), nullable=True),
    # the From address the device mails its mailbox with from outside (SES ingress); None: none
    sa.Column("sender", sa.String(320), nullable=True),
)

# One link per (relayed message, recipient, attachment); the token is kept only as a SHA-256.
relay_links = sa.Table(
    "relay_links",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),  # shown in lists and the audit log; not the token
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("device", sa.String(48), nullable=False, index=True),
    sa.Column("message_id", sa.String(32), nullable=False, index=True),  # inbound_messages.id
    sa.Column("recipient", sa.String(320), nullable=False, index=True),
    sa.Column("blob_key", sa.String(255), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(127), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("purge_after", UTCDateTime, nullable=False, index=True),  # the device's retention
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("purged_at", UTCDateTime, nullable=True),
    sa.Column("downloads", sa.Integer, nullable=False, server_default="0"),
)
