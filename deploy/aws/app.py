"""The CDK app (``cdk.json`` runs it): Waypost's stack from the settings in the data directory.

    cdk synth -c data_dir=/srv/waypost          # or WAYPOST_DATA_DIR; default: ./data
    cdk deploy -c data_dir=/srv/waypost -c sending_source_ips=203.0.113.7,198.51.100.0/24
    cdk deploy -c data_dir=/srv/waypost -c lambda_code=s3://my-artifacts/waypost-lambda.zip

``waypost aws synth`` does the same without the CDK command line (docs/deploy-aws.md).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")  # see waypost.cli.aws

from waypost_stack.parameters import LambdaCode, StackParameters  # noqa: E402
from waypost_stack.synth import build_app  # noqa: E402

from waypost import DEFAULT_DATA_DIR  # noqa: E402
from waypost.config import load_settings  # noqa: E402


def main() -> None:
    context = json.loads(os.environ.get("CDK_CONTEXT_JSON") or "{}")  # the cdk command's -c values
    data_dir = context.get("data_dir") or os.environ.get("WAYPOST_DATA_DIR") or DEFAULT_DATA_DIR
    code = str(context.get("lambda_code") or "")
    bucket, _, key = code.removeprefix("s3://").partition("/")
    params = StackParameters.from_settings(
        load_settings(Path(data_dir)), stack_name=context.get("stack_name") or "Waypost",
        sending_source_ips=tuple(ip for ip in str(context.get("sending_source_ips") or "").split(",") if ip.strip()),
        lambda_code=LambdaCode(bucket, key) if code else None)
    for warning in params.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    app, _ = build_app(params)
    app.synth()


if __name__ == "__main__":
    main()
