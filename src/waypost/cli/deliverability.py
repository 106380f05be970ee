"""`waypost suppression`, `waypost feedback` and `waypost status`: the operator's view of the
feedback loop. Registered on the main group by ``waypost.cli``."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from waypost.cli.base import cli, data_dir_option, friendly_errors, runtime_for
from waypost.transactions import reading, transaction

REASONS = ["MANUAL", "BOUNCE", "COMPLAINT", "UNSUBSCRIBE"]


# --- suppression ---------------------------------------------------------------------------


@cli.group()
def suppression() -> None:
    """Addresses Waypost never sends to (bounced, complained, unsubscribed, or added by hand)."""


@suppression.command("add")
@data_dir_option
@click.argument("address")
@click.option("--reason", type=click.Choice(REASONS), default="MANUAL", show_default=True)
@click.option("--note", help="Why (kept with the entry and in the audit log).")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), help="Lift it after this many days.")
@friendly_errors
def suppression_add(data_dir: Path, address: str, reason: str, note: str | None, days: float | None) -> None:
    """Stop all mail to ADDRESS."""
    from waypost.clock import utcnow
    from waypost.outbound import suppression as suppressions

    expires = utcnow() + timedelta(days=days) if days else None
    with transaction(runtime_for(data_dir).engine) as conn:
        added = suppressions.add(conn, address, suppressions.Reason(reason), "cli", detail=note, expires_at=expires,
                                 by="operator (cli)")
    click.echo(f"{'suppressed' if added else 'already suppressed'}: {address}")


@suppression.command("remove")
@data_dir_option
@click.argument("address")
@click.option("--reason", "why", required=True, help="Why it may receive mail again (kept in the audit log).")
@friendly_errors
def suppression_remove(data_dir: Path, address: str, why: str) -> None:
    """Send to ADDRESS again."""
    from waypost.outbound import suppression as suppressions

    with transaction(runtime_for(data_dir).engine) as conn:
        removed = suppressions.remove(conn, address, by="operator (cli)", note=why)
    if not removed:
        raise click.ClickException(f"not suppressed: {address}")
    click.echo(f"removed: {address}")


@suppression.command("list")
@data_dir_option
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--after", help="Continue after this address (the last one of the previous page).")
@click.option("--search", help="Only addresses containing this text.")
@click.option("--domain", help="Only addresses at this domain.")
@click.option("--reason", type=click.Choice(REASONS), help="Only entries with this reason.")
@friendly_errors
def suppression_list(data_dir: Path, limit: int, after: str | None, search: str | None, domain: str | None,
                     reason: str | None) -> None:
    """Show suppressed addresses in address order, LIMIT at a time."""
    from waypost.outbound import suppression as suppressions

    with reading(runtime_for(data_dir).engine) as conn:
        entries = suppressions.entries(conn, limit=limit, after=after, contains=search, domain=domain,
                                       reason=suppressions.Reason(reason) if reason else None)
    for entry in entries:
        until = f"  until {entry.expires_at:%Y-%m-%d %H:%M}Z" if entry.expires_at else ""
        detail = f"  ({entry.detail})" if entry.detail else ""
        click.echo(f"{entry.address}  {entry.reason:11} {entry.source:10} {entry.created_at:%Y-%m-%d %H:%M}Z"
                   f"{until}{detail}")
    if not entries:
        click.echo("no suppressed addresses" if after is None else "no more")
    elif len(entries) == limit:
        click.echo(f"more: --after {entries[-1].address}")


@suppression.command("history")
@data_dir_option
@click.argument("address", required=False)
@click.option("--limit", default=50, show_default=True)
@friendly_errors
def suppression_history(data_dir: Path, address: str | None, limit: int) -> None:
    """Who added or removed addresses, and why (newest first)."""
    from waypost.outbound import suppression as suppressions

    with reading(runtime_for(data_dir).engine) as conn:
        rows = suppressions.history(conn, address, limit=limit)
    for row in rows:
        click.echo(f"{row.at:%Y-%m-%d %H:%M}Z  {row.action:6} {row.address}  {row.reason or '':11} by {row.by}"
                   + (f": {row.note}" if row.note else ""))
    if not rows:
        click.echo("no changes recorded")


@suppression.command("export")
@data_dir_option
@click.argument("out", type=click.File("w", encoding="utf-8"), default="-")
@friendly_errors
def suppression_export(data_dir: Path, out: Any) -> None:
    """Write every entry as CSV to OUT (default: standard output)."""
    from waypost.outbound import suppression as suppressions

    with reading(runtime_for(data_dir).engine) as conn:
        count = suppressions.write_csv(conn, out)
    click.echo(f"exported {count} entries", err=True)


@suppression.command("import")
@data_dir_option
@click.argument("source", type=click.File("r", encoding="utf-8-sig"))
@friendly_errors
def suppression_import(data_dir: Path, source: Any) -> None:
    """Add the addresses in a CSV file: our export, SES's (EmailAddress,Reason) or one address
    per line. A file with a bad line imports nothing and names every bad line."""
    from waypost.outbound import suppression as suppressions

    try:
        rows = suppressions.read_csv(source, source="import")
    except suppressions.SuppressionImportError as err:
        raise click.ClickException(str(err)) from None
    with transaction(runtime_for(data_dir).engine) as conn:
        added = suppressions.add_many(conn, rows, by="operator (import)")
    click.echo(f"imported {len(rows)} entries: {len(added)} new, {len(rows) - len(added)} already suppressed")


@suppression.command("sync-ses")
@data_dir_option
@click.option("--dry-run", is_flag=True, help="Read SES's list and say what would change; change nothing.")
@friendly_errors
def suppression_sync_ses(data_dir: Path, dry_run: bool) -> None:
    """Copy SES's account-level suppression list into Waypost's (BOUNCE and COMPLAINT entries)."""
    from waypost.feedback.ses_sync import sync_from_ses

    runtime = runtime_for(data_dir)
    result = sync_from_ses(runtime.engine, runtime.settings, dry_run=dry_run,
                           progress=lambda pages, seen: click.echo(f"  page {pages}: {seen} entries", err=True))
    click.echo(f"SES lists {result.seen} addresses: {result.added} {'would be ' if dry_run else ''}added, "
               f"{result.seen - result.added} already suppressed here")


# --- feedback ------------------------------------------------------------------------------


@cli.group()
def feedback() -> None:
    """Bounces, complaints and other delivery feedback: what arrived and what it did."""


@feedback.command("list")
@data_dir_option
@click.option("--kind", help="bounce, complaint, delivery, delay, reject, ...")
# feedback.policy's outcomes, spelled out: importing the policy here would load the settings
# (pydantic) for every command, even --help
@click.option("--outcome", type=click.Choice(["suppressed", "scored", "review", "recorded", "ignored"]),
              help="review: what the policy left for a person to look at.")
@click.option("--address", help="Only feedback about this address.")
@click.option("--limit", default=30, show_default=True)
@friendly_errors
def feedback_list(data_dir: Path, kind: str | None, outcome: str | None, address: str | None, limit: int) -> None:
    """The newest feedback events and what the policy did with each."""
    from waypost.feedback import log as feedback_log

    with reading(runtime_for(data_dir).engine) as conn:
        rows = feedback_log.recent(conn, limit=limit, kind=kind, outcome=outcome, address=address)
    for row in rows:
        what = "/".join(p for p in (row.bounce_type, row.bounce_subtype, row.feedback_type) if p)
        click.echo(f"{row.id:>6}  {row.received_at:%Y-%m-%d %H:%M}Z  {row.source:3} {row.kind:10} "
                   f"{row.recipient or '-'}  {what} {row.status or ''} {row.reason or ''} -> {row.outcome}")
        for line in (row.note, row.diagnostic):
            if line:
                click.echo(f"        {line[:200]}")
    if not rows:
        click.echo("no feedback")


@feedback.command("unreadable")
@data_dir_option
@click.option("--limit", default=20, show_default=True)
@click.option("--show", type=int, help="Print the whole body of this entry.")
@friendly_errors
def feedback_unreadable(data_dir: Path, limit: int, show: int | None) -> None:
    """Feedback that could not be read (kept, never applied)."""
    from waypost.feedback import log as feedback_log

    with reading(runtime_for(data_dir).engine) as conn:
        if show is not None:
            body = feedback_log.unreadable_body(conn, show)
            if body is None:
                raise click.ClickException(f"no unreadable feedback {show}")
            click.echo(body)
            return
        rows = feedback_log.recent_unreadable(conn, limit=limit)
    for row in rows:
        click.echo(f"{row.id:>6}  {row.received_at:%Y-%m-%d %H:%M}Z  {row.source:4} {row.reason[:150]}")
    if not rows:
        click.echo("nothing unreadable")


@feedback.command("apply")
@data_dir_option
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@friendly_errors
def feedback_apply(data_dir: Path, files: tuple[Path, ...]) -> None:
    """Apply feedback saved in FILES: SES notifications (JSON, bare or in an SNS envelope) or
    bounce and complaint mail (.eml). What was applied before is skipped (dedupe)."""
    from waypost.feedback.events import FeedbackFormatError
    from waypost.feedback.reports import read_report
    from waypost.feedback.ses_events import parse_ses_notification, unwrap_queue_body

    runtime = runtime_for(data_dir)
    failed = 0
    for path in files:
        data = path.read_bytes()
        try:
            if data.lstrip()[:1] == b"{":
                events = parse_ses_notification(unwrap_queue_body(data.decode("utf-8"))[0])
            else:
                events = list(read_report(data).events)
        except (FeedbackFormatError, UnicodeDecodeError) as err:
            click.echo(f"{path}: not applied: {err}", err=True)
            failed += 1
            continue
        click.echo(f"{path}: {runtime.intake.apply(events)}")
    if failed:
        sys.exit(1)


@feedback.command("explain")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def feedback_explain(files: tuple[Path, ...]) -> None:
    """Say what FILES (bounce or complaint mail, .eml, or SES notification JSON) report about
    each recipient, and what the policy would do: one JSON object per recipient on standard
    output, with the reason (docs/feedback.md). Changes nothing; needs no database."""
    import json

    from waypost.feedback.events import FeedbackFormatError
    from waypost.feedback.explain import explain

    failed = 0
    for path in files:
        try:
            records = list(explain(path, path.read_bytes()))
        except (FeedbackFormatError, UnicodeDecodeError) as err:
            click.echo(f"{path}: cannot be read: {err}", err=True)
            failed += 1
            continue
        if not records:
            click.echo(f"{path}: no recipient found (not a bounce, complaint or auto-reply)", err=True)
        for record in records:
            click.echo(json.dumps(record, ensure_ascii=False))
    if failed:
        sys.exit(1)


@feedback.command("poll")
@data_dir_option
@friendly_errors
def feedback_poll(data_dir: Path) -> None:
    """Take one batch from the SES feedback queue (feedback.sqs_queue_url) and apply it."""
    runtime = runtime_for(data_dir)
    if not runtime.settings.feedback.sqs_queue_url:
        raise click.ClickException("feedback.sqs_queue_url is not set (see docs/feedback.md)")
    handled = runtime.feedback_consumer().poll_once()
    click.echo(f"{handled} messages handled")


# --- status --------------------------------------------------------------------------------


@cli.command()
@data_dir_option
@friendly_errors
def status(data_dir: Path) -> None:
    """One screen: queues, dead letters, sending state, quota, reputation and alarms."""
    from waypost.reputation.alarms import evaluate
    from waypost.reputation.status_text import render_status

    runtime = runtime_for(data_dir)
    snapshot = runtime.snapshot()
    alarms = evaluate(snapshot, runtime.settings.alarms)
    for line in render_status(snapshot, alarms, runtime.settings.guard, transport=runtime.outbox.sender.name):
        click.echo(line)
