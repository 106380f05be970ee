"""Scale-out on AWS: three `waypost worker` processes against PostgreSQL and moto server take
200 mails through the SES ingress (S3 object + SES notification through SNS into SQS, blobs in
S3, replies through SES v2), one of them SIGKILLed mid-run, between a send and its commit.
Every mail is processed once, answered once, and the shared rate limit holds in every second."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from tests.conftest import drain_output, server_env, start_process, stop_process, wait_until, waypost_command
from tests.integration.test_send_processes import max_in_any_second
from tests.integration.test_ses_ingress import (
    BLOB_BUCKET,
    DOMAIN,
    INBOUND_BUCKET,
    NAME_KEY,
    make_world,
    plain_mail,
    ses_settings,
)
from tests.support import ses_receipts
from tests.support.moto_server import REGION, sent_raw_messages
from waypost import runtime as wiring
from waypost.store.models import inbound_messages, outbound_messages

MAILS = 200
RATE = 25  # replies per second, shared by the three workers through the database


def feed(world: dict[str, str], count: int) -> None:
    """What SES does for each mail: store it in S3, then notify through SNS (ten at a time)."""
    s3, sns = boto3.client("s3", region_name=REGION), boto3.client("sns", region_name=REGION)
    template = ses_receipts.generated()
    batch: list[dict[str, str]] = []
    for index in range(count):
        sender, ses_id = f"person{index}@example.org", f"ses-mail-{index:04d}"
        s3.put_object(Bucket=INBOUND_BUCKET, Key=f"mail/{ses_id}", Body=plain_mail(sender, f"Trip {index}"))
        document = ses_receipts.received_s3(template, ses_id=ses_id, bucket=INBOUND_BUCKET, key=f"mail/{ses_id}",
                                            sender=sender, recipient=f"journeys@{DOMAIN}")
        batch.append({"Id": str(index), "Message": json.dumps(document)})
        if len(batch) == 10 or index == count - 1:
            sns.publish_batch(TopicArn=world["inbound_topic"], PublishBatchRequestEntries=batch)
            batch = []


def worker_env(world: dict[str, str], data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    return server_env(
        data_dir, WAYPOST_DATABASE__URL=database_url, WAYPOST_MAIL_DOMAIN=DOMAIN, WAYPOST_BASE_URL=f"https://{DOMAIN}",
        WAYPOST_OUTBOUND__TRANSPORT="ses", WAYPOST_OUTBOUND__LIMITS_FROM_PROVIDER="false",
        WAYPOST_OUTBOUND__MAX_PER_SECOND=str(RATE), WAYPOST_OUTBOUND__MAX_PER_DAY="0",
        WAYPOST_SES__REGION=REGION, WAYPOST_SES__ENDPOINT_URL=world["endpoint"],
        WAYPOST_SES_INGRESS__SQS_QUEUE_URL=world["inbound_queue"], WAYPOST_SES_INGRESS__SQS_WAIT_SECONDS="1",
        WAYPOST_SES_INGRESS__SNS_TOPIC_ARNS=world["inbound_topic"],
        WAYPOST_BLOBS__BACKEND="s3", WAYPOST_BLOBS__S3_BUCKET=BLOB_BUCKET, WAYPOST_BLOBS__S3_NAME_KEY=NAME_KEY,
        WAYPOST_GUARD__COMPROMISE_CHECKS="false", WAYPOST_DOCTOR__INTERVAL_HOURS="0",
        WAYPOST_OPERATOR_EMAIL="ops@example.net",
        WAYPOST_WORKER__VISIBILITY_TIMEOUT="5",  # the killed worker's jobs come back soon
        WAYPOST_JOURNEYS__IMAGE_WORKERS="1", **extra)


def count(runtime: Any, query: Any) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_three_workers_one_killed_answer_every_ses_mail_once_within_the_rate(
        aws: str, make_settings: Callable[..., Any], database_url: str, tmp_path: Path) -> None:
    world = make_world(aws)
    data_dir = tmp_path / "data"
    runtime = wiring.build(make_settings(data_dir=data_dir, database={"url": database_url}, **ses_settings(world)))
    assert runtime.engine.dialect.name == "postgresql"  # the rate, quota and queue are shared there
    runtime.allowlist.add("example.org")
    marker_dir = tmp_path / "failpoints"
    marker_dir.mkdir()
    doomed = start_process(waypost_command("worker"), worker_env(
        world, data_dir, database_url, WAYPOST_FAILPOINTS="outbox.after_send=pause",
        WAYPOST_FAILPOINT_DIR=str(marker_dir)))
    workers = [start_process(waypost_command("worker"), worker_env(world, data_dir, database_url)) for _ in range(2)]
    output: list[str] = []
    for process in (doomed, *workers):
        drain_output(process, output)

    def running(condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            assert all(p.poll() is None for p in workers), "a worker stopped on its own"
            return condition()
        return check

    try:
        feed(world, MAILS)
        wait_until(running(lambda: (marker_dir / "outbox.after_send.hit").exists()), timeout=90,
                   message="the doomed worker sent a reply")
        stop_process(doomed, signal.SIGKILL)  # SIGKILL: its reply left, its commit never came
        sent = outbound_messages.c.state == "sent"
        wait_until(running(lambda: count(runtime, sa.select(sa.func.count()).where(sent)) == MAILS), timeout=240,
                   message=f"{MAILS} replies sent")
    except BaseException:
        print("\n".join(output[-60:]))  # the workers' last words, shown with the failure
        raise
    finally:
        for process in workers:
            stop_process(process)
        stop_process(doomed, signal.SIGKILL)
        with runtime.engine.connect() as conn:
            inbound = conn.execute(sa.select(inbound_messages.c.status, inbound_messages.c.ses_message_id)).all()
            admitted = [row.admitted_at for row in conn.execute(sa.select(outbound_messages.c.admitted_at))]
        runtime.close()

    assert len(inbound) == MAILS and {row.status for row in inbound} == {"processed"}
    assert len({row.ses_message_id for row in inbound}) == MAILS  # every mail once, none twice
    # moto lists a raw send's recipients from its Destinations and its To header both
    answered = Counter(address for message in sent_raw_messages(world["endpoint"])
                       for address in set(message["destinations"]))
    assert len(answered) == MAILS and set(answered.values()) == {1}  # exactly one reply each
    assert max_in_any_second(admitted) <= RATE
