"""`waypost dmarc summary`: what receivers report about mail in our name (DMARC aggregate and
failure reports, SMTP TLS reports). Registered on the main group by ``waypost.cli``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from waypost.cli.base import cli, data_dir_option, database_for, friendly_errors, settings_from

if TYPE_CHECKING:
    from waypost.dmarc.store import Summary


@cli.group()
def dmarc() -> None:
    """DMARC aggregate and failure reports and SMTP TLS reports received at the reports mailbox."""


@dmarc.command()
@data_dir_option
@click.option("--days", default=7, show_default=True, type=click.IntRange(min=1), help="Reports of the last N days.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: sources, TLS policies, failure reports.")
@friendly_errors
def summary(data_dir: Path, days: int, as_json: bool) -> None:
    """Per source IP and reporter: messages, aligned DKIM and SPF passes, DMARC failures and
    disposition; TLS reports per policy domain. "own" marks our sending addresses."""
    from waypost.dmarc.store import summary as read_summary
    from waypost.dmarc.watch import own_sources
    from waypost.transactions import reading

    ips, _ = own_sources(settings_from(data_dir))
    database = database_for(data_dir)
    try:
        with reading(database) as conn:
            found = read_summary(conn, days, ips)
    finally:
        database.dispose()  # the command may run inside another process (tests, a shell)
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
    else:
        _print(found)


def _print(found: Summary) -> None:
    counts = ", ".join(f"{n} {kind}" for kind, n in found.counts.items())
    click.echo(f"DMARC and TLS reports since {found.since:%Y-%m-%d %H:%M}Z ({found.days} days): {counts}")
    if found.sources:
        click.echo(f"\n{'source IP':<40} {'reporter':<24} {'msgs':>7} {'dkim ok':>7} {'spf ok':>7} "
                   f"{'fail':>6}  disposition")
    for row in found.sources:
        dispositions = ", ".join(f"{k} {v}" for k, v in sorted(row.dispositions.items()))
        ip = f"{row.source_ip} (own)" if row.own else row.source_ip
        click.echo(f"{ip:<40} {row.reporter[:24]:<24} {row.messages:>7} {row.dkim_aligned:>7} {row.spf_aligned:>7} "
                   f"{row.dmarc_fail:>6}  {dispositions}")
    if found.tls:
        click.echo(f"\n{'TLS policy domain':<40} {'reports':>7} {'success':>9} {'failure':>9}  failure types")
    for tls in found.tls:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(tls.failure_types.items()))
        click.echo(f"{tls.policy_domain:<40} {tls.reports:>7} {tls.successes:>9} {tls.failures:>9}  {kinds}")
    if found.failures:
        click.echo("\nfailure reports (newest first):")
    for report in found.failures:
        click.echo(f"  {report['received_at'][:16]}  {report['reporter']}  domain {report['domain']}  "
                   f"source {report['source_ip'] or '?'}  {report['auth_failure'] or ''}")
