"""Device mail through the SES ingress (issue 22), against moto in server mode: SES's S3 action
is played by putting the mail into the inbound bucket and its notification through SNS into the
ingress queue. A device that registered its From address (``--from``) is relayed when SES says
the mail passes DMARC for that domain; a forged one, another From, or a device without ``--from``
is dropped unanswered with the reason recorded. The attachments live in the S3 blob store and the
links download the exact bytes. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.integration.test_device_relay import OWNER, PDF, PNG, scan, to, tokens_in
from tests.integration.test_outbox import run_jobs
from tests.integration.test_pipeline import caught
from tests.integration.test_ses_ingress import BLOB_BUCKET, DOMAIN, INBOUND_BUCKET, make_world, ses_settings
from tests.support import ses_receipts
from tests.support.moto_server import REGION
from waypost import runtime as wiring
from waypost.apps.relay.devices import Devices, NewDevice
from waypost.ingress.submission import SubmissionUsers, users_path
from waypost.store.models import inbound_messages
from waypost.web.app import create_app

DEVICE_FROM = "scanner@owner.example"
MAILBOX = f"relay+scanner@{DOMAIN}"


@pytest.fixture
def world(aws: str) -> dict[str, str]:
    return make_world(aws)


@pytest.fixture
def relay_runtime(world: dict[str, str], make_settings: Callable[..., Any], database_url: str) -> Iterator[Any]:
    """The AWS deployment's settings, but forwarded mail caught in files to read it back whole."""
    settings = {**ses_settings(world), "outbound": {"transport": "catcher"}}
    runtime = wiring.build(make_settings(database={"url": database_url}, **settings))
    devices = Devices(runtime.engine, SubmissionUsers(users_path(runtime.settings)))
    devices.add(NewDevice("scanner", OWNER, allow=("bea@example.org", "example.net"),
                          default_to=("bea@example.org",), sender=DEVICE_FROM))
    devices.add(NewDevice("camera", OWNER, allow=("bea@example.org",)))  # no --from: trusted networks only
    yield runtime
    runtime.close()


def ses_delivers(world: dict[str, str], ses_id: str, raw: bytes, *, recipient: str = MAILBOX,
                 verdicts: dict[str, str] | None = None) -> None:
    """SES's S3 action for one mail: the object first, then the notification."""
    key = f"mail/{ses_id}"
    boto3.client("s3", region_name=REGION).put_object(Bucket=INBOUND_BUCKET, Key=key, Body=raw)
    document = ses_receipts.received_s3(ses_receipts.generated(), ses_id=ses_id, bucket=INBOUND_BUCKET, key=key,
                                        sender=DEVICE_FROM, recipient=recipient, verdicts=verdicts)
    boto3.client("sns", region_name=REGION).publish(TopicArn=world["inbound_topic"],
                                                    Message=ses_receipts.text(document))


def take_all(runtime: Any) -> None:
    consumer = runtime.ses_ingress()
    while consumer.poll_once():
        pass
    run_jobs(runtime)


def reasons(runtime: Any) -> list[str]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(inbound_messages.c.reason).order_by(inbound_messages.c.received_at))
                    .scalars())


def from_device(body: str, *, sender: str = DEVICE_FROM) -> bytes:
    raw = scan(body)
    return raw.replace(b"From: Scanner <scanner@owner.example>", f"From: Scanner <{sender}>".encode(), 1)


def test_device_mail_through_ses_is_relayed_with_links_to_files_in_s3(relay_runtime: Any,
                                                                     world: dict[str, str]) -> None:
    ses_delivers(world, "relay-ses-1", from_device("To: bea@example.org, carl@example.net\nTwo pages."))
    take_all(relay_runtime)

    mails = caught(relay_runtime)
    bea, carl = to(mails, "bea@example.org"), to(mails, "carl@example.net")
    assert len(bea) == 1 and len(carl) == 1, [m["To"] for m in mails]
    for forwarded in (bea[0], carl[0]):
        raw = forwarded.as_bytes()
        assert PDF[-200:] not in raw and b"pixels" not in raw  # no attachment bytes in the mail
        assert not list(forwarded.iter_attachments())
        assert f"relay@{DOMAIN}" in forwarded["From"] and DEVICE_FROM not in forwarded["From"]
    assert set(tokens_in(bea[0])).isdisjoint(tokens_in(carl[0]))

    s3 = boto3.client("s3", region_name=REGION)
    stored = [item["Key"] for item in s3.list_objects_v2(Bucket=BLOB_BUCKET).get("Contents", [])]
    assert sum(key.startswith("relay/") for key in stored) == 2, stored
    web = TestClient(create_app(relay_runtime), client=("198.51.100.77", 50000))
    downloads = [web.get(f"/r/{token}") for token in tokens_in(bea[0])]
    assert [answer.status_code for answer in downloads] == [200, 200]
    assert sorted(answer.content for answer in downloads) == sorted([PDF, PNG])
    assert "device scanner forwarded to 2 recipient(s)" in reasons(relay_runtime)[0]


@pytest.mark.parametrize(("verdicts", "sender", "recipient", "why"), [
    ({"dmarcVerdict": "FAIL", "dkimVerdict": "FAIL", "spfVerdict": "FAIL"}, DEVICE_FROM, MAILBOX,
     "DMARC did not pass"),
    ({"virusVerdict": "FAIL"}, DEVICE_FROM, MAILBOX, "virus fail"),
    (None, "mallory@owner.example", MAILBOX, "is not device scanner's sender"),
    (None, DEVICE_FROM, f"relay+camera@{DOMAIN}", "only from trusted networks"),
], ids=["forged", "virus", "other-from", "no-registered-from"])
def test_mailbox_mail_through_ses_that_does_not_prove_the_device_is_dropped_unanswered(
        relay_runtime: Any, world: dict[str, str], verdicts: dict[str, str] | None, sender: str, recipient: str,
        why: str) -> None:
    ses_delivers(world, "relay-ses-bad", from_device("To: bea@example.org", sender=sender), recipient=recipient,
                 verdicts=verdicts)
    take_all(relay_runtime)

    assert caught(relay_runtime) == []  # nothing forwarded, and no notice to anyone
    [reason] = reasons(relay_runtime)
    assert "relay: dropped" in reason and why in reason, reason
    assert not [key for key, _ in relay_runtime.blobs.iter_keys("relay")]  # no file kept either
