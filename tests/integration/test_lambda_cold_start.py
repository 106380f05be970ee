"""The Lambda's cold start builds only what takes mail and feedback in (``intake_wiring``): a fresh
process imports the handler and handles one batch (an SES receipt and an SES bounce, against
moto in server mode) without loading the journeys app, an image library or a template engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import sqlalchemy as sa

from tests.integration.test_ses_ingress import (
    BLOB_BUCKET,
    DOMAIN,
    INBOUND_BUCKET,
    NAME_KEY,
    make_world,
    plain_mail,
    received_objects,
)
from tests.support import ses_receipts, ses_samples
from tests.support.moto_server import REGION
from waypost import intake_wiring
from waypost.apps.journeys.handler import JourneysApp
from waypost.store import migrate
from waypost.store.db import create_engine
from waypost.store.models import inbound_messages, suppressions

# SES has checked the mail's SPF, DKIM and DMARC: the function loads no checker of its own
HEAVY = ("PIL", "pyvips", "numpy", "scipy", "jinja2", "alembic", "waypost.apps.journeys", "waypost.runtime", "dkim",
         "spf", "waypost.mail.auth")
CHILD = f"""
import json, sys
from waypost.aws.lambda_handler import lambda_handler
answer = lambda_handler(json.load(sys.stdin))
print(json.dumps({{"answer": answer, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def lambda_environment(world: dict[str, str], data_dir: Path) -> dict[str, str]:
    """What the stack and the operator give the function (docs/deploy-aws.md, "Lambda")."""
    settings = {"DATA_DIR": str(data_dir), "MAIL_DOMAIN": DOMAIN, "BASE_URL": f"https://{DOMAIN}",
                "SES__REGION": REGION, "SES__ENDPOINT_URL": world["endpoint"], "OUTBOUND__TRANSPORT": "ses",
                "SES_INGRESS__SQS_QUEUE_URL": world["inbound_queue"],
                "SES_INGRESS__SNS_TOPIC_ARNS": world["inbound_topic"],
                "FEEDBACK__SQS_QUEUE_URL": world["feedback_queue"], "FEEDBACK__SNS_TOPIC_ARNS": world["feedback_topic"],
                "BLOBS__BACKEND": "s3", "BLOBS__S3_BUCKET": BLOB_BUCKET, "BLOBS__S3_NAME_KEY": NAME_KEY}
    aws = {name: value for name, value in os.environ.items() if name.startswith("AWS_") or name in ("NO_PROXY", "PATH")}
    return aws | {f"WAYPOST_{name}": value for name, value in settings.items()}


def batch(world: dict[str, str]) -> dict[str, Any]:
    """One mail SES stored (its object and its notification) and one bounce, as SQS hands them over."""
    boto3.client("s3", region_name=REGION).put_object(Bucket=INBOUND_BUCKET, Key="mail/cold", Body=plain_mail())
    receipt = ses_receipts.received_s3(ses_receipts.generated(), ses_id="cold", bucket=INBOUND_BUCKET,
                                       key="mail/cold", sender="ann@example.org", recipient=f"journeys@{DOMAIN}")
    bounce = ses_samples.bounce([ses_samples.dsn_recipient("gone@example.net")])
    return {"Records": [
        {"messageId": "m-ingress", "eventSourceARN": world["inbound_arn"],
         "body": ses_samples.wrapped(receipt, world["inbound_topic"])},
        {"messageId": "m-feedback", "eventSourceARN": world["feedback_arn"],
         "body": ses_samples.wrapped(bounce, world["feedback_topic"])}]}


def test_a_cold_start_handles_a_batch_without_loading_the_heavy_modules(aws: str, tmp_path: Path) -> None:
    world = make_world(aws)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    engine = create_engine(f"sqlite:///{data_dir / 'waypost.sqlite3'}")  # the settings' default database
    migrate.upgrade(engine)  # the workers' part: the function never migrates

    done = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(batch(world)), capture_output=True,
                          text=True, env=lambda_environment(world, data_dir), cwd=tmp_path, timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"answer": {"batchItemFailures": []}, "heavy": []}
    with engine.connect() as conn:
        assert conn.execute(sa.select(inbound_messages.c.ses_message_id)).scalars().all() == ["cold"]
        assert conn.execute(sa.select(suppressions.c.address)).scalars().all() == ["gone@example.net"]
    assert received_objects() == []  # SES's copy deleted once the mail was committed
    engine.dispose()


def test_the_probe_sees_a_heavy_module_when_one_is_loaded() -> None:
    """The test above could pass on a probe that finds nothing."""
    probe = f"import sys, waypost.runtime; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert "waypost.apps.journeys" in loaded.stdout and "jinja2" in loaded.stdout and "dkim" in loaded.stdout


def test_the_lean_wiring_names_the_journeys_app_as_the_app_does() -> None:
    assert JourneysApp.name == intake_wiring.JOURNEYS_APP
