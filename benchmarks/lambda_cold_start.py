"""The Lambda's cold start: the first SQS batch of a fresh process, lean wiring against the full one.

The baseline is what the handler did before: build the whole service (``runtime.build``: the
journeys app, the image pool, the places index, the templates...) for a batch that only takes
mail in and applies feedback. Each round starts a fresh Python process per wiring, with
``-X importtime``, that imports ``waypost.aws.lambda_handler`` and hands it one SES receipt (an
S3 action, SNS-wrapped, as the event source mapping delivers it) against moto in server mode
(in this process) and an SQLite database migrated beforehand (the workers migrate it). Printed
per wiring: the child's CPU time for import + first batch (median), the time Python spent
importing (sum of ``-X importtime`` self times), the modules loaded, each with its ratio to
the baseline.

    .venv/bin/python benchmarks/lambda_cold_start.py            # 5 rounds
    .venv/bin/python benchmarks/lambda_cold_start.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import ses_receipts, ses_samples  # noqa: E402
from tests.support.moto_server import REGION, reset, running_moto_server  # noqa: E402

from waypost.config import load_settings  # noqa: E402
from waypost.store import migrate  # noqa: E402
from waypost.store.db import create_engine  # noqa: E402

DOMAIN = "waypost.test"
CHILD = """
import json, sys, time
cpu, wall = time.process_time(), time.perf_counter()
from waypost.aws import lambda_handler as handler
if sys.argv[1] == "full":  # the baseline: the whole service, as the handler built it before
    from waypost import runtime
    from waypost.config import load_settings
    handler._handlers = handler.handlers_for(runtime.build(load_settings()))
answer = handler.lambda_handler(json.loads(sys.argv[2]))
print(json.dumps({"answer": answer, "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall,
                  "modules": len(sys.modules), "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def world(endpoint: str, data_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The bucket, the queue and topic of the stack, one mail stored by SES, and its event."""
    reset(endpoint)
    s3, sqs, sns = (boto3.client(name, region_name=REGION) for name in ("s3", "sqs", "sns"))
    for bucket in ("inbound", "blobs"):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    queue = sqs.create_queue(QueueName="ses-inbound")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name="ses-inbound")["TopicArn"]
    s3.put_object(Bucket="inbound", Key="mail/cold", Body=b"From: ann@example.org\r\nTo: journeys@waypost.test\r\n"
                  b"Subject: cold\r\nMessage-ID: <cold@example.org>\r\n\r\nhello\r\n")
    receipt = ses_receipts.received_s3(ses_receipts.generated(), ses_id="cold", bucket="inbound", key="mail/cold",
                                       sender="ann@example.org", recipient=f"journeys@{DOMAIN}")
    event = {"Records": [{"messageId": "m-1", "eventSourceARN": arn, "body": ses_samples.wrapped(receipt, topic)}]}
    env = {"WAYPOST_DATA_DIR": str(data_dir), "WAYPOST_MAIL_DOMAIN": DOMAIN, "WAYPOST_BASE_URL": f"https://{DOMAIN}",
           "WAYPOST_SES__REGION": REGION, "WAYPOST_SES__ENDPOINT_URL": endpoint,
           "WAYPOST_OUTBOUND__TRANSPORT": "ses", "WAYPOST_OUTBOUND__LIMITS_FROM_PROVIDER": "false",
           "WAYPOST_SES_INGRESS__SQS_QUEUE_URL": queue, "WAYPOST_SES_INGRESS__SNS_TOPIC_ARNS": topic,
           "WAYPOST_BLOBS__BACKEND": "s3", "WAYPOST_BLOBS__S3_BUCKET": "blobs",
           "WAYPOST_BLOBS__S3_NAME_KEY": "0123456789abcdef0123456789abcdef",
           "WAYPOST_SECRET_KEYS": json.dumps(["k" * 32]), "WAYPOST_DOCTOR__INTERVAL_HOURS": "0",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": endpoint, "NO_PROXY": "127.0.0.1,localhost"}
    return env, event


def cold_start(endpoint: str, wiring: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env, event = world(endpoint, Path(tmp))
        keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
        engine = create_engine(load_settings(tmp).database_url)
        migrate.upgrade(engine)
        engine.dispose()
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", CHILD, wiring, json.dumps(event)],
                              capture_output=True, text=True, env=keep | env, cwd=tmp, timeout=300)
    if done.returncode:
        sys.exit(f"the {wiring} cold start failed:\n" + "\n".join(
            line for line in done.stderr.splitlines() if not line.startswith("import time:"))[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["answer"] == {"batchItemFailures": []}, (result, done.stderr[-2000:])
    result["import_s"] = sum(int(line.split("|")[0].split(":")[1]) for line in done.stderr.splitlines()
                             if line.startswith("import time:") and "self [us]" not in line) / 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"})
    found: dict[str, list[dict[str, Any]]] = {"full": [], "lean": []}
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with running_moto_server() as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        for _ in range(rounds):
            for wiring in found:  # alternating, so a busy moment of the shared machine hits both
                found[wiring].append(cold_start(endpoint, wiring))
    base = {field: statistics.median(r[field] for r in found["full"]) for field in ("cpu", "import_s", "modules")}
    print(f"{'wiring':8} {'cpu s':>8} {'ratio':>6} {'import s':>9} {'ratio':>6} {'modules':>8} {'ratio':>6}")
    for wiring, results in found.items():
        row = {field: statistics.median(r[field] for r in results) for field in base}
        ratio = {field: row[field] / base[field] for field in base}
        print(f"{wiring:8} {row['cpu']:8.3f} {ratio['cpu']:6.2f} {row['import_s']:9.3f} {ratio['import_s']:6.2f} "
              f"{row['modules']:8.0f} {ratio['modules']:6.2f}")


if __name__ == "__main__":
    main()
