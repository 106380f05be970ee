"""`waypost aws synth`: the AWS stack (deploy/aws, AWS CDK) synthesized from the settings into a
CloudFormation template, offline. Registered on the main group by ``waypost.cli``.

The stack's code lives beside the package in the source tree (``deploy/aws``), not in the
installed package: deploying is done from a checkout, with the test extra's aws-cdk-lib and
Node.js (docs/deploy-aws.md).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from waypost.cli.base import cli, data_dir_option, friendly_errors, settings_from
from waypost.errors import ConfigError

# Debian's Node.js 20 is past jsii's support date; synthesizing works with it, and the banner
# jsii prints for it on every run would bury the command's own output.
QUIET_NODE = {"JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}


def stack_dir() -> Path:
    """deploy/aws of the source tree this package runs from, or $WAYPOST_AWS_STACK_DIR."""
    configured = os.environ.get("WAYPOST_AWS_STACK_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / "deploy" / "aws"


def stack_module(name: str, directory: Path | None = None) -> ModuleType:
    """``waypost_stack.<name>`` from ``directory`` (default ``stack_dir()``); a ClickException
    says what is missing: the directory, or aws-cdk-lib, or Node.js."""
    directory = directory or stack_dir()
    if not (directory / "waypost_stack").is_dir():
        raise click.ClickException(f"no AWS stack at {directory}: run this from a Waypost checkout, or set "
                                   "WAYPOST_AWS_STACK_DIR to its deploy/aws")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    for variable, value in QUIET_NODE.items():
        os.environ.setdefault(variable, value)
    try:
        return importlib.import_module(f"waypost_stack.{name}")
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in ("aws_cdk", "constructs", "jsii"):
            raise click.ClickException(f"{err.name} is not installed: install the test extra (scripts/test does, "
                                       "or pip install -r requirements/test.txt)") from None
        raise


@cli.group()
def aws() -> None:
    """The AWS side as code (deploy/aws): SES identity, receiving, queues, bucket, alarms, roles."""


@aws.command()
@data_dir_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("cdk.out"),
              show_default=True, help="Directory for the cloud assembly (the template and its manifest).")
@click.option("--stack-name", default="Waypost", show_default=True, help="CloudFormation stack name.")
@click.option("--sending-source-ip", "source_ips", multiple=True, metavar="IP[/BITS]",
              help="Allow sending only from this address or network (repeat for more); default: from anywhere.")
@click.option("--lambda-code", metavar="s3://BUCKET/KEY",
              help="Also deploy the Lambda function, from this zip, wired to both queues.")
@friendly_errors
def synth(data_dir: Path, out_dir: Path, stack_name: str, source_ips: tuple[str, ...],
          lambda_code: str | None) -> None:
    """Write the CloudFormation template for the settings in the data directory, offline.
    Deploy it with `cdk deploy --app <out>` or CloudFormation (docs/deploy-aws.md)."""
    parameters = stack_module("parameters")
    code = None
    if lambda_code:
        bucket, _, key = lambda_code.removeprefix("s3://").partition("/")
        if not lambda_code.startswith("s3://") or not bucket or not key:
            raise click.BadParameter(f"{lambda_code!r} is not s3://BUCKET/KEY", param_hint="--lambda-code")
        code = parameters.LambdaCode(bucket, key)
    try:
        params = parameters.StackParameters.from_settings(settings_from(data_dir), stack_name=stack_name,
                                                          sending_source_ips=source_ips, lambda_code=code)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    for warning in params.warnings:
        click.echo(f"warning: {warning}", err=True)
    synthesizer = stack_module("synth")
    template_path = synthesizer.synthesize(params, out_dir)
    _summary(template_path, synthesizer.read_template(template_path))


def _summary(path: Path, template: dict[str, Any]) -> None:
    kinds: dict[str, int] = {}
    for resource in template.get("Resources", {}).values():
        kinds[resource["Type"]] = kinds.get(resource["Type"], 0) + 1
    click.echo(f"template: {path}")
    click.echo(f"{sum(kinds.values())} resources: " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))
    outputs = ", ".join(template.get("Outputs", {}))
    click.echo(f"outputs after deploy (the settings to copy into waypost.toml): {outputs}")
