"""Synthesize the stack into a cloud assembly directory: offline, no AWS account touched.

Used by ``app.py`` (what ``cdk synth`` / ``cdk deploy`` run) and by ``waypost aws synth``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from waypost_stack.parameters import StackParameters
from waypost_stack.stack import WaypostStack


def build_app(params: StackParameters, outdir: Path | None = None) -> tuple[cdk.App, WaypostStack]:
    app = cdk.App(outdir=str(outdir) if outdir else None,
                  analytics_reporting=False)  # nothing about the stack is reported to AWS
    stack = WaypostStack(app, params, env=cdk.Environment(region=params.region),
                         # the bootstrap version rule reads an SSM parameter: synth stays offline
                         synthesizer=cdk.DefaultStackSynthesizer(generate_bootstrap_version_rule=False))
    return app, stack


def synthesize(params: StackParameters, outdir: Path) -> Path:
    """Writes the cloud assembly to ``outdir``; returns the path of the stack's template."""
    app, stack = build_app(params, outdir)
    assembly = app.synth()
    return Path(assembly.directory) / stack.template_file


def read_template(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))
