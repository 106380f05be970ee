"""Erasure on SQLite and PostgreSQL: a person with journeys, commands, exports, a bounce, a
complaint and audit entries is erased, then every table (every column, by reflection) and every
file of the data directory is scanned for their address (any case, any +tag), their subject
lines and their photo bytes: nothing may be found, while another person's data stays whole."""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import gpxpy
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.conftest import wait_until
from tests.integration.test_mail_commands import ANN, command, crash_once, send, text_of
from tests.integration.test_pipeline import caught, photo_mail
from tests.integration.test_sender_trust import submitted
from tests.support.report_samples import _group, dsn
from tests.support.ses_samples import complaint
from waypost import audit
from waypost.apps import people_export
from waypost.apps.erasure import Erasure, erase_alone, forget_files
from waypost.apps.journeys.samples import Shot
from waypost.feedback.ses_events import parse_ses_notification
from waypost.keys import signing_keys
from waypost.outbound import suppression
from waypost.outbound.outbox import OutboundMessage
from waypost.store.models import erasure_requests, exports, jobs, journeys, outbound_messages, utcnow
from waypost.web.app import create_app

BOB = "bob@example.org"
SUBJECTS = ("Lisbon with Bea 7QX", "Question about Porto K3Z")


@pytest.fixture
def people(make_settings: Callable[..., Any], database_url: str, allowing_runtime: Callable[..., Any]) -> Any:
    """Ann and Bob allowlisted, writing from a trusted network; originals kept a week, so the
    raw mail (with the photos in it) is still there when Ann is erased."""
    runtime = allowing_runtime(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                             journeys={"keep_originals_days": 7}))
    runtime.allowlist.add(BOB)
    return runtime


@pytest.fixture
def scanner(people: Any) -> Iterator[Callable[..., list[str]]]:
    """Every place Ann's address, her subject lines or her photos' bytes are found."""
    needles: list[tuple[str, re.Pattern[bytes]]] = [
        ("address", re.compile(rb"ann(\+[^@\s]*)?@example\.org", re.IGNORECASE)),
        *((f"subject {s!r}", re.compile(re.escape(s.encode()), re.IGNORECASE)) for s in SUBJECTS)]
    photo_needles: list[bytes] = []

    others = b"".join(bytes(p.get_content()) for p in bob_mail().iter_attachments())
    for part in photo_mail(subject=SUBJECTS[0]).iter_attachments():
        data = part.get_content()
        # whole base64 lines of the raw mail, from where Ann's photo differs from Bob's (flat sky
        # compresses alike in both)
        line = next(at for at in range(len(data) // 2 // 57 * 57, len(data) - 57, 57)
                    if data[at:at + 57] not in others)
        photo_needles.extend([data[line:line + 57], base64.b64encode(data[line:line + 57])])

    def scan(leave_out: list[Path] = ()) -> list[str]:  # type: ignore[assignment]
        found = []
        for where, data in [*_table_values(people.engine), *_files(people, leave_out)]:
            found += [f"{name} in {where}" for name, pattern in needles if pattern.search(data)]
            found += [f"photo bytes in {where}" for needle in photo_needles if needle in data]
        return found

    yield scan


def settle(runtime: Any) -> None:
    """Run the worker until no job is due within the hour, retries after their backoff included
    (the raw mail's purge and an export's expiry wait days)."""
    worker = runtime.worker()

    def idle() -> bool:
        worker.run_once()
        with runtime.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
                jobs.c.state.in_(("queued", "running")),
                jobs.c.run_after <= utcnow() + timedelta(hours=1))).scalar_one() == 0

    wait_until(idle, message="the queue to settle")


def _table_values(engine: sa.Engine) -> Iterator[tuple[str, bytes]]:
    reflected = sa.MetaData()
    reflected.reflect(engine)
    with engine.connect() as conn:
        for table in reflected.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for column, value in row._mapping.items():
                    yield f"{table.name}.{column}", _bytes(value)


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value).encode()
    return str(value).encode()


def _files(runtime: Any, leave_out: list[Path] = ()) -> Iterator[tuple[str, bytes]]:  # type: ignore[assignment]
    database = sa.engine.make_url(runtime.settings.database_url).database
    roots = [runtime.settings.data_dir]
    extra = [Path(database + suffix) for suffix in ("", "-wal", "-journal")] if database and \
        runtime.engine.dialect.name == "sqlite" else []
    for path in [*(p for root in roots for p in root.rglob("*")), *extra]:
        if path.is_file() and path not in leave_out:
            yield str(path), path.read_bytes()


def ann_with_everything(runtime: Any) -> None:
    """Ann's journey, a reply in its thread, commands, a mail from a +tag address, an export, a
    page view, an operator's audit entry, a bounce (as a DSN over SMTP) and a complaint."""
    first = photo_mail(subject=SUBJECTS[0])
    send(runtime, first)
    question = command("how are you", subject=SUBJECTS[1])
    question.replace_header("From", "Ann <Ann+trips@Example.org>")
    send(runtime, question)
    send(runtime, command("list"))
    settle(runtime)
    with runtime.engine.begin() as conn:
        export_id, _ = people_export.request(conn, ANN, source_message_id=None)
        data = people_export.build_zip(conn, runtime.blobs, ANN)
        runtime.blobs.put(people_export.blob_key(export_id), data)
        people_export.mark_ready(conn, export_id, len(data), utcnow())
    with runtime.engine.connect() as conn:
        token = conn.execute(sa.select(journeys.c.token)).scalars().first()
    with TestClient(create_app(runtime)) as client:
        assert client.get(f"/j/{token}").status_code == 200
    audit.record_alone(runtime.engine, "allowlist.add", actor="admin", target=ANN, detail=f"added {ANN}")
    with runtime.engine.connect() as conn:
        reply = conn.execute(sa.select(outbound_messages).where(outbound_messages.c.recipient == ANN)
                             .order_by(outbound_messages.c.id)).first()
    bounce = dsn([_group(ANN, "delayed", "4.2.2", "smtp; 452 4.2.2 mailbox full")],
                 original_id=reply.message_id_header, report_id="<dsn-1@mx.example.net>")
    assert submitted(runtime, bounce, "", to=reply.envelope_sender)[0] == b"250 2.0.0"
    runtime.intake.apply(parse_ses_notification(complaint((ANN,), header_id=reply.message_id_header)))
    runtime.digest.run()  # the operator's digest names Ann (the complaint)
    settle(runtime)


def bob_mail() -> EmailMessage:
    return photo_mail(BOB, (Shot(38.7977, -9.3904, datetime(2024, 8, 2, 10, 0, tzinfo=UTC), "Sintra"),),
                      subject="Bob in Sintra")


def bob_with_a_journey(runtime: Any) -> None:
    assert submitted(runtime, bob_mail().as_bytes(), BOB)[0] == b"250 2.0.0"
    settle(runtime)


def test_an_erased_person_is_found_nowhere_and_others_keep_everything(people: Any,
                                                                       scanner: Callable[[], list[str]]) -> None:
    bob_with_a_journey(people)
    ann_with_everything(people)
    before = scanner()
    assert {f.split(" in ")[0] for f in before} >= {"address", f"subject {SUBJECTS[0]!r}",
                                                    f"subject {SUBJECTS[1]!r}", "photo bytes"}, before
    settings = people.settings
    erased = erase_alone(people.engine, Erasure(people.blobs, signing_keys(settings),
                                                forget_sent=forget_files(settings.outbox_dir)), "ANN@example.org")

    assert scanner() == []
    assert erased.rows["journeys"] == 1 and erased.rows["suppressions"] == 1
    with people.engine.connect() as conn:
        owners = conn.execute(sa.select(journeys.c.owner_address)).scalars().all()
        assert owners == [BOB]
        # only the keyed hash stays, and it still holds: the complaint is honoured
        entry = suppression.lookup(conn, "ann@EXAMPLE.org")
        assert entry is not None and entry.reason == suppression.Reason.COMPLAINT
        assert entry.address.startswith(suppression.HASHED_PREFIX)
    assert people.allowlist.allows(BOB) and not people.allowlist.allows(ANN)


def test_a_message_to_an_erased_person_is_suppressed_by_the_hashed_entry(
        make_settings: Callable[..., Any], database_url: str, allowing_runtime: Callable[..., Any]) -> None:
    # the reputation guard would pause mail to someone who never wrote: not what is tested here
    people = allowing_runtime(make_settings(database={"url": database_url}, guard={"compromise_checks": False}))
    with people.engine.begin() as conn:
        suppression.add(conn, ANN, suppression.Reason.UNSUBSCRIBE, "stop-by-mail")
    erase_alone(people.engine, Erasure(people.blobs, signing_keys(people.settings)), ANN)
    with people.engine.begin() as conn:
        people.outbox.queue_message(conn, OutboundMessage(
            idempotency_key="after-erasure", stream="journeys", recipient=ANN, envelope_sender="journeys@waypost.test",
            subject="hello", message_id="<after@waypost.test>", raw=b"Subject: hello\r\n\r\nhi\r\n"))
    settle(people)
    with people.engine.connect() as conn:
        state = conn.execute(sa.select(outbound_messages.c.state)
                             .where(outbound_messages.c.idempotency_key == "after-erasure")).scalar_one()
    assert state == "suppressed"


def test_an_address_that_is_none_is_refused_and_nothing_changes(people: Any) -> None:
    from waypost.mail.addresses import AddressError

    bob_with_a_journey(people)
    with pytest.raises(AddressError), people.engine.begin() as conn:
        Erasure(people.blobs, signing_keys(people.settings)).erase(conn, "not an address")
    with people.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(journeys)).scalar_one() == 1


# --- export and delete my data, by mail over SMTP --------------------------------------------


def link_in(message: EmailMessage) -> str:
    found = re.search(r"https?://\S+?(/x/[A-Za-z0-9_-]{32})", message.get_body(("plain",)).get_content())
    assert found is not None, "no export link in the mail"
    return found.group(1)


def mails_in_reply_to(runtime: Any, message: EmailMessage) -> list[EmailMessage]:
    return [m for m in caught(runtime) if m["In-Reply-To"] == message["Message-ID"]]


def test_export_by_mail_sends_one_link_whose_zip_holds_her_data_and_each_download_is_audited(people: Any) -> None:
    send(people, photo_mail(subject=SUBJECTS[0]))
    asking = command("Export my data, please")
    send(people, asking)
    settle(people)

    (mail,) = mails_in_reply_to(people, asking)
    path = link_in(mail)
    token = path.rsplit("/", 1)[1]
    with TestClient(create_app(people), client=("203.0.113.77", 50123)) as client:
        response = client.get(path)
    assert response.status_code == 200 and response.headers["content-disposition"].startswith("attachment;")
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = set(archive.namelist())
    assert {"README.txt", "person.json", "messages/inbound.json", "messages/outbound.json", "audit.json",
            "journeys/1/journey.json", "journeys/1/journey.geojson", "journeys/1/journey.gpx"} <= names
    assert len([n for n in names if n.startswith("journeys/1/images/")]) == 3
    journey = json.loads(archive.read("journeys/1/journey.json"))
    assert journey["title"] == SUBJECTS[0] and {p["file_name"] for p in journey["photos"]} == {
        "Belém.jpg", "Castelo.jpg", "Pena.jpg"}  # her own full data, which the public outputs leave out
    inbound = json.loads(archive.read("messages/inbound.json"))
    assert SUBJECTS[0] in {m["subject"] for m in inbound} and all("blob_key" not in m for m in inbound)
    assert gpxpy.parse(archive.read("journeys/1/journey.gpx").decode()).waypoints

    found = [where for where, data in _table_values(people.engine) if token.encode() in data]
    assert found == ["outbound_messages.raw"]  # the mail that carries it; the export keeps only a hash
    with people.engine.connect() as conn:
        (entry,) = [e for e in audit.entries(conn) if e.action == people_export.DOWNLOAD_ACTION]
    assert entry.ip == "203.0.113.0/24"


def test_an_expired_export_link_answers_410_naming_the_operator_and_its_zip_is_gone(people: Any) -> None:
    asking = command("export")
    send(people, asking)
    settle(people)
    path = link_in(mails_in_reply_to(people, asking)[0])
    with people.engine.begin() as conn:
        conn.execute(exports.update().values(expires_at=utcnow()))
        (export_id,) = conn.execute(sa.select(exports.c.id)).scalars().all()
        assert people_export.expire(conn, people.blobs, export_id)

    with TestClient(create_app(people)) as client:
        gone, unknown = client.get(path), client.get("/x/" + "A" * 32)
    assert gone.status_code == 410 and people.settings.operator_name in gone.text
    assert unknown.status_code == 404
    assert list(people.blobs.iter_keys("exports/")) == []
    with people.engine.connect() as conn:
        assert conn.execute(sa.select(exports.c.address)).scalars().all() == [""]  # the row names nobody now


def test_an_export_job_crashing_before_its_commit_mails_one_link(people: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    crashed = crash_once(monkeypatch, "people.export_before_commit")
    asking = command("export")
    send(people, asking)
    settle(people)

    assert crashed and len(mails_in_reply_to(people, asking)) == 1
    with people.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(exports)).scalar_one() == 1
    assert len(list(people.blobs.iter_keys("exports/"))) == 1


def confirm_erasure(runtime: Any) -> tuple[EmailMessage, EmailMessage]:
    """Ann, with a journey, asks to be forgotten and answers yes: (her yes, the confirmation)."""
    send(runtime, photo_mail(subject=SUBJECTS[0]))
    asking = command("Forget me!", subject=SUBJECTS[1])
    send(runtime, asking)
    settle(runtime)
    (confirmation,) = mails_in_reply_to(runtime, asking)
    assert "yes" in text_of(confirmation).lower()
    return command("Yes", answering=confirmation, quote="> Shall we erase everything"), confirmation


@pytest.mark.parametrize("crash", [False, True])
def test_delete_my_data_confirmed_by_yes_erases_her_and_sends_one_last_mail(
        people: Any, scanner: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch, crash: bool) -> None:
    bob_with_a_journey(people)
    yes, _ = confirm_erasure(people)
    crashed = crash_once(monkeypatch, "commands.after_effect") if crash else []
    send(people, yes)
    settle(people)

    assert bool(crashed) == crash
    farewells = sorted(people.settings.outbox_dir.glob("erasure-farewell-*.eml"))
    assert len(farewells) == 1
    (last,) = mails_in_reply_to(people, yes)
    assert str(last["Subject"]).startswith("Re: ") and "erased" in text_of(last)  # in the thread of her yes
    # the last mail left; nothing else of hers is anywhere (the sent copy is her mailbox, not ours)
    assert scanner(leave_out=farewells) == []
    with people.engine.connect() as conn:
        assert conn.execute(sa.select(journeys.c.owner_address)).scalars().all() == [BOB]


def test_delete_my_data_crashing_before_its_commit_asks_once(people: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    crashed = crash_once(monkeypatch, "commands.after_effect")
    asking = command("delete my data")
    send(people, asking)
    settle(people)

    assert crashed and len(mails_in_reply_to(people, asking)) == 1
    with people.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(erasure_requests)).scalar_one() == 1
    assert people.allowlist.allows(ANN)  # nothing is erased before the yes


def test_yes_outside_a_confirmation_thread_changes_nothing(people: Any) -> None:
    send(people, photo_mail(subject=SUBJECTS[0]))
    yes = command("yes")
    send(people, yes)
    settle(people)

    (answer,) = mails_in_reply_to(people, yes)
    assert "Nothing to confirm" in str(answer["Subject"])
    with people.engine.connect() as conn:
        assert conn.execute(sa.select(journeys.c.owner_address)).scalars().all() == [ANN]


# --- the operator's commands ----------------------------------------------------------------


def person_command(runtime: Any, *args: str, given: str | None = None) -> Any:
    from click.testing import CliRunner

    from waypost.cli import cli

    return CliRunner().invoke(cli, ["person", *args, "--data-dir", str(runtime.settings.data_dir)], input=given,
                              env={"WAYPOST_DATABASE__URL": runtime.settings.database_url})


def test_person_export_writes_her_zip_and_never_overwrites_a_file(people: Any, tmp_path: Path) -> None:
    send(people, photo_mail(subject=SUBJECTS[0]))
    settle(people)
    target = tmp_path / "ann.zip"

    written = person_command(people, "export", "Ann+Trips@example.org", "--out", str(target))
    again = person_command(people, "export", ANN, "--out", str(target))

    assert written.exit_code == 0, written.output
    assert "journeys/1/journey.json" in zipfile.ZipFile(target).namelist()
    assert again.exit_code != 0 and "exists" in again.output
    bad = person_command(people, "export", "nobody", "--out", str(tmp_path / "x.zip"))
    assert bad.exit_code != 0 and "not an address" in bad.output and not (tmp_path / "x.zip").exists()


def test_person_erase_asks_first_and_erases_only_when_told(people: Any, scanner: Callable[..., list[str]]) -> None:
    send(people, photo_mail(subject=SUBJECTS[0]))
    settle(people)

    declined = person_command(people, "erase", ANN, given="n\n")
    assert declined.exit_code != 0 and scanner() != []
    erased = person_command(people, "erase", ANN, "--yes")
    assert erased.exit_code == 0, erased.output
    assert "1 journeys" in erased.output and scanner() == []
