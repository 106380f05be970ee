"""The core commands: serve, worker, demo, allowlist, dead letters, pause and resume, the outbox,
DKIM keys, the database and submission users. Every one takes --data-dir (or WAYPOST_DATA_DIR)."""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from waypost.cli.base import (
    allowlist_for,
    cli,
    data_dir_option,
    database_for,
    friendly_errors,
    reachable_operator,
    runtime_for,
    settings_from,
)
from waypost.store.states import OutboundState

DEMO_TRUSTED_NETWORKS = ("127.0.0.0/8", "::1/128")


@cli.command()
@data_dir_option
@click.option("--smtp-port", type=int, help="SMTP listener port (0 picks a free one).")
@click.option("--http-port", type=int, help="Web server port (0 picks a free one).")
@click.option("--demo", is_flag=True, help="Allowlist a demo sender and mail the service a sample trip.")
@friendly_errors
def serve(data_dir: Path, smtp_port: int | None, http_port: int | None, demo: bool) -> None:
    """Run the SMTP listener, the web server and a worker in one process."""
    import asyncio

    from waypost.server import serve as run_server

    settings = settings_from(data_dir)
    reachable_operator(settings)
    updates: dict[str, Any] = {}
    if smtp_port is not None:
        updates["smtp"] = settings.smtp.model_copy(update={"port": smtp_port})
    if http_port is not None:
        updates["http"] = settings.http.model_copy(update={"port": http_port})
    if demo and not settings.trusted_networks:
        updates["trusted_networks"] = tuple(ipaddress.ip_network(net) for net in DEMO_TRUSTED_NETWORKS)
    settings = settings.model_copy(update=updates)
    after_start = None
    if demo:
        from waypost.demo import run_demo

        after_start = run_demo_and_report(run_demo)
    asyncio.run(run_server(settings, after_start=after_start))


def run_demo_and_report(run_demo: Callable[..., bool]) -> Callable[..., None]:
    def after_start(runtime: Any, smtp_address: str, http_url: str) -> None:
        try:
            run_demo(runtime, smtp_address, http_url, out=lambda line: click.echo(line))
        except Exception as err:  # the service keeps running; say what went wrong
            click.echo(f"demo: failed: {type(err).__name__}: {err}", err=True)

    return after_start


@cli.command()
@data_dir_option
@friendly_errors
def worker(data_dir: Path) -> None:
    """Run a worker (processes inbound mail and sends replies) until interrupted."""
    import signal

    runtime = runtime_for(data_dir)
    reachable_operator(runtime.settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"worker: {runtime.settings.database_url.split('://', 1)[0]} database, polling")
    runtime.worker().run(stop)
    runtime.close()


@cli.command()
@data_dir_option
@click.option("--smtp", "smtp_address", default=None, help="HOST:PORT of a running Waypost (default: from settings).")
@friendly_errors
def demo(data_dir: Path, smtp_address: str | None) -> None:
    """Mail a running Waypost the demo trip from the demo sender and print the journey link."""
    from waypost.demo import run_demo

    runtime = runtime_for(data_dir)
    settings = runtime.settings
    address = smtp_address or f"{settings.smtp.host}:{settings.smtp.port}"
    ok = run_demo(runtime, address, settings.public_base_url, out=lambda line: click.echo(line))
    runtime.close()
    if not ok:
        raise SystemExit(1)


@cli.group()
def allowlist() -> None:
    """Who may use the service: addresses (ann@example.org) or whole domains (example.org)."""


@allowlist.command("add")
@data_dir_option
@click.argument("entry")
@click.option("--note", help="Why this sender is allowed (kept with the entry).")
@friendly_errors
def allowlist_add(data_dir: Path, entry: str, note: str | None) -> None:
    """Allow ENTRY (an address, or a domain for everyone at it)."""
    added = allowlist_for(data_dir).add(entry, note=note)
    click.echo(f"{'added' if added else 'already allowed'}: {entry}")


@allowlist.command("remove")
@data_dir_option
@click.argument("entry")
@friendly_errors
def allowlist_remove(data_dir: Path, entry: str) -> None:
    """Stop allowing ENTRY."""
    if not allowlist_for(data_dir).remove(entry):
        raise click.ClickException(f"not on the allowlist: {entry}")
    click.echo(f"removed: {entry}")


@allowlist.command("list")
@data_dir_option
@friendly_errors
def allowlist_list(data_dir: Path) -> None:
    """Show every allowed address and domain."""
    entries = allowlist_for(data_dir).entries()
    for entry in entries:
        note = f"  ({entry.note})" if entry.note else ""
        click.echo(f"{entry.kind:8} {entry.value}  added {entry.added_at:%Y-%m-%d %H:%M}Z{note}")
    if not entries:
        click.echo("the allowlist is empty: nobody's mail will be processed")


@cli.group("dead-letters")
def dead_letters() -> None:
    """Jobs that gave up: inspect why, and retry them once the cause is fixed."""


@dead_letters.command("list")
@data_dir_option
@click.option("--limit", default=50, show_default=True)
@friendly_errors
def dead_letters_list(data_dir: Path, limit: int) -> None:
    """Show dead-lettered jobs, newest first."""
    from waypost.pipeline.deadletters import DeadLetters

    letters = DeadLetters(runtime_for(data_dir).queue).list(limit)
    for letter in letters:
        click.echo(f"{letter.job_id:>6}  {letter.since:%Y-%m-%d %H:%M}Z  {letter.kind:8} {letter.subject}")
        click.echo(f"        after {letter.attempts} attempt(s): {letter.reason}")
    if not letters:
        click.echo("no dead letters")


@dead_letters.command("retry")
@data_dir_option
@click.argument("job_id", type=int)
@friendly_errors
def dead_letters_retry(data_dir: Path, job_id: int) -> None:
    """Queue dead job JOB_ID again with fresh attempts."""
    from waypost.pipeline.deadletters import DeadLetters

    if not DeadLetters(runtime_for(data_dir).queue).retry(job_id):
        raise click.ClickException(f"no dead-lettered job {job_id} (see `waypost dead-letters list`)")
    click.echo(f"job {job_id} queued again")


@cli.command()
@data_dir_option
@click.option("--stream", default=None, help="Pause only this stream (for example journeys); default: all sending.")
@click.option("--reason", required=True, help="Why; shown in `waypost outbox status` until resumed.")
@friendly_errors
def pause(data_dir: Path, stream: str | None, reason: str) -> None:
    """Stop sending; queued mail waits (nothing is dropped) until `waypost resume`."""
    from waypost.outbound import control
    from waypost.transactions import transaction

    runtime = runtime_for(data_dir)
    if stream is not None and stream not in runtime.streams:
        raise click.ClickException(f"no stream {stream!r}; the streams are: {', '.join(runtime.streams)}")
    with transaction(runtime.engine) as tx:
        new = control.pause(tx, stream or control.ALL, reason, by="operator")
    click.echo(f"{'paused' if new else 'already paused'}: {stream or 'all sending'}")


@cli.command()
@data_dir_option
@click.option("--stream", default=None, help="Resume only this stream; default: the global pause.")
@friendly_errors
def resume(data_dir: Path, stream: str | None) -> None:
    """Lift a pause; waiting mail goes out at the configured rate."""
    from waypost.outbound import control
    from waypost.transactions import transaction

    with transaction(runtime_for(data_dir).engine) as tx:
        lifted = control.resume(tx, stream or control.ALL, by="operator (cli)")
    if not lifted:
        raise click.ClickException(f"not paused: {stream or 'all sending'}")
    click.echo(f"resumed: {stream or 'all sending'}")


@cli.group()
def outbox() -> None:
    """What Waypost sends: states, limits, and single messages."""


@outbox.command("status")
@data_dir_option
@friendly_errors
def outbox_status(data_dir: Path) -> None:
    """Counts by state, sending limits and their use, and any pause."""
    from waypost.clock import utcnow
    from waypost.outbound import control, listing
    from waypost.transactions import reading

    runtime = runtime_for(data_dir)
    limiter = runtime.outbox.limiter
    with reading(runtime.engine) as conn:
        counts = listing.counts_by_state(conn)
        unconfirmed = listing.unconfirmed_count(conn)
        last_second, last_day = limiter.used(conn, utcnow())
        pauses = control.pauses(conn)
    click.echo(f"transport: {runtime.outbox.sender.name}")
    click.echo(f"limits:    {limiter.limits.describe()}")
    day = f" of {limiter.limits.per_day}" if limiter.limits.per_day else ""
    click.echo(f"used:      {last_second} in the last second, {last_day}{day} in the last 24 hours")
    click.echo("messages:  " + ", ".join(f"{state} {counts.get(state, 0)}" for state in OutboundState)
               + (f" ({unconfirmed} sent unconfirmed)" if unconfirmed else ""))
    for entry in pauses:
        scope = "all sending" if entry.scope == control.ALL else f"stream {entry.scope}"
        click.echo(f"PAUSED:    {scope} since {entry.paused_at:%Y-%m-%d %H:%M}Z by {entry.paused_by}: {entry.reason}")
    if not pauses:
        click.echo("sending:   active")


@outbox.command("list")
@data_dir_option
@click.option("--state", type=click.Choice([state.value for state in OutboundState]))
@click.option("--limit", default=20, show_default=True)
@friendly_errors
def outbox_list(data_dir: Path, state: str | None, limit: int) -> None:
    """The newest outbound messages, with why any did not go."""
    from waypost.outbound import listing
    from waypost.transactions import reading

    with reading(runtime_for(data_dir).engine) as conn:
        rows = listing.newest(conn, limit=limit, state=OutboundState(state) if state else None)
    for row in rows:
        flag = " (unconfirmed)" if row.unconfirmed else ""
        when = f"{row.created_at:%Y-%m-%d %H:%M}Z"
        click.echo(f"{row.id:>6}  {when}  {row.state:10} {row.recipient}  {row.subject}{flag}")
        if row.last_error:
            click.echo(f"        {row.last_error}")
    if not rows:
        click.echo("no messages")


@cli.group()
def dkim() -> None:
    """DKIM signing keys for SMTP mode."""


@dkim.command("keygen")
@data_dir_option
@click.option("--selector", required=True, help="DNS label naming this key, for example wp2026.")
@click.option("--kind", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True,
              help="rsa (2048 bits) is checked by every receiver; not all check ed25519 yet.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the private key (mode 0600; never overwritten).")
@friendly_errors
def dkim_keygen(data_dir: Path, selector: str, kind: str, out: Path) -> None:
    """Make a signing key and print the DNS record that publishes it."""
    from waypost.mail.dkim_sign import generate_key

    settings = settings_from(data_dir)
    try:
        record = generate_key(out, kind)
    except FileExistsError:
        raise click.ClickException(f"{out} exists; choose another file (keys are never overwritten)") from None
    click.echo(f"private key: {out}")
    click.echo(f"publish this TXT record at {selector}._domainkey.{settings.dkim_domain}:")
    click.echo(record)
    click.echo("then set dkim.selector and dkim.private_key_path (see docs/sending.md)")


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@data_dir_option
@friendly_errors
def db_upgrade(data_dir: Path) -> None:
    """Apply pending schema migrations (also done at every start)."""
    from waypost.store import migrate

    engine = database_for(data_dir)
    click.echo(f"database at revision {migrate.current_revision(engine)} (head {migrate.head_revision()})")
    engine.dispose()


# --- submission users ---
@cli.group()
def submission() -> None:
    """Logins for the submission port (smtp.submission_port), kept in smtp.submission_users_path."""


def _submission_users(data_dir: Path) -> Any:
    from waypost.ingress.submission import SubmissionUsers, users_path

    return SubmissionUsers(users_path(settings_from(data_dir)))


@submission.command("passwd")
@data_dir_option
@click.argument("user")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@friendly_errors
def submission_passwd(data_dir: Path, user: str, password_stdin: bool) -> None:
    """Add USER, or set a new password for USER (asked twice unless --password-stdin)."""
    from waypost.ingress.submission import check_user_name

    users = _submission_users(data_dir)
    check_user_name(user)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    new = users.set_password(user, password)
    click.echo(f"{'added' if new else 'password changed'}: {user} ({users.path})")


@submission.command("remove")
@data_dir_option
@click.argument("user")
@friendly_errors
def submission_remove(data_dir: Path, user: str) -> None:
    """Delete USER's login."""
    if not _submission_users(data_dir).remove(user):
        raise click.ClickException(f"no submission user {user}")
    click.echo(f"removed: {user}")


@submission.command("list")
@data_dir_option
@friendly_errors
def submission_list(data_dir: Path) -> None:
    """Show the user names (never the hashes)."""
    users = _submission_users(data_dir)
    names = sorted(users.read())
    for name in names:
        click.echo(name)
    if not names:
        click.echo(f"no submission users in {users.path}")
