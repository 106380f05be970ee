"""`waypost ses-request`: the SES production-access request written from the configuration and
the recorded evidence (doctor and drill runs, suppressions, sends), with a rendered sample reply
beside it. Registered on the main group by ``waypost.cli``."""

from __future__ import annotations

from pathlib import Path

import click

from waypost.cli.base import cli, data_dir_option, database_for, friendly_errors, settings_from


@cli.command("ses-request")
@data_dir_option
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("ses-request.md"),
              show_default=True, help="Where to write the request; the sample reply goes beside it (.eml, .html).")
@friendly_errors
def ses_request(data_dir: Path, out: Path) -> None:
    """Write the SES production-access request. Only what a setting or a record shows is
    claimed; the rest is listed under "Not yet shown" with how to show it."""
    from waypost.readiness.evidence import gather
    from waypost.readiness.request import render_sample, write_request
    from waypost.runtime import STREAMS

    settings = settings_from(data_dir)
    sample = render_sample(settings)
    request = write_request(settings, gather(database_for(data_dir)), sample, STREAMS)
    eml, html = out.with_suffix(".sample.eml"), out.with_suffix(".sample.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    eml.write_bytes(sample.raw)
    html.write_text(sample.html, encoding="utf-8")
    out.write_text(request.render((eml.name, html.name)), encoding="utf-8")
    click.echo(f"wrote {out} ({len(request.claims)} statements), {eml.name} and {html.name}")
    for gap in request.gaps:
        click.echo(f"not yet shown: {gap.what}: {gap.how}")
