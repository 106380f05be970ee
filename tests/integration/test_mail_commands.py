"""Commands by mail, end to end over SMTP on SQLite and PostgreSQL: a person writes a command in
the Subject or as the first line above the quote, to the journeys address or in a journey's
thread, and gets exactly one answer through the outbox (the catcher), crash and retry included."""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.conftest import wait_until
from tests.integration.test_pipeline import SHOTS, caught, photo_mail
from tests.integration.test_sender_trust import outcome, submitted
from waypost import failpoints
from waypost.mail.commands import Verb, read_command
from waypost.mail.dkim_sign import DkimSigner, generate_key
from waypost.outbound import suppression
from waypost.store.models import allowlist, inbound_messages, jobs, journeys, outbound_messages, photos, suppressions
from waypost.web.app import create_app

ANN = "ann@example.org"


@pytest.fixture
def people(make_settings: Callable[..., Any], database_url: str, allowing_runtime: Callable[..., Any]) -> Any:
    """Ann on the allowlist, writing from a trusted network (authentication is skipped there;
    ``signed_people`` below checks it)."""
    return allowing_runtime(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"]))


def command(first_line: str = "", *, subject: str = "", answering: EmailMessage | None = None,
            quote: str = "") -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Ann <{ANN}>"
    message["To"] = str(answering["Reply-To"] or answering["From"]) if answering is not None \
        else "journeys@waypost.test"
    message["Subject"] = subject or ("Re: " + str(answering["Subject"]) if answering is not None else "")
    message["Message-ID"] = email.utils.make_msgid(domain="example.org")
    message["Date"] = "Sun, 14 Jul 2024 09:00:00 +0100"
    if answering is not None:
        message["In-Reply-To"] = answering["Message-ID"]
        message["References"] = str(answering["Message-ID"])
    message.set_content(f"{first_line}\n\n{quote}\n-- \nAnn, sent from her phone\n")
    return message


def send(runtime: Any, message: EmailMessage | bytes, *, expect: bytes = b"250 2.0.0") -> str:
    raw = message if isinstance(message, bytes) else message.as_bytes()
    to = "journeys@waypost.test" if isinstance(message, bytes) else str(message["To"])
    reply, message_id = submitted(runtime, raw, ANN, to=to)
    assert reply == expect, reply
    return message_id


def answer_to(runtime: Any, message: EmailMessage) -> EmailMessage:
    """The one answer to ``message`` in the catcher."""
    (found,) = [m for m in caught(runtime) if m["In-Reply-To"] == message["Message-ID"]]
    return found


def text_of(message: EmailMessage) -> str:
    return " ".join(message.get_body(("plain",)).get_content().split())


def first_journey(runtime: Any) -> EmailMessage:
    """Ann mails her Lisbon photos over SMTP; the reply she gets."""
    first = photo_mail()
    send(runtime, first)
    return answer_to(runtime, first)


def journey_rows(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(journeys).order_by(journeys.c.id)).all()


def rows(runtime: Any, table: sa.Table) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(table)).all()


def settle(runtime: Any) -> None:
    """Run the worker until no job waits any more, retries (after their backoff) included."""
    worker = runtime.worker()

    def idle() -> bool:
        worker.run_once()
        with runtime.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(jobs)
                                .where(jobs.c.state.in_(("queued", "running")))).scalar_one() == 0

    wait_until(idle, message="the queue to settle")


def crash_once(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """The first time the worker reaches ``name`` it fails as a crash would, before its commit."""
    crashed: list[str] = []
    real = failpoints.hit

    def hit(point: str) -> None:
        if point == name and not crashed:
            crashed.append(point)
            raise RuntimeError(f"crash at {point}")
        real(point)

    monkeypatch.setattr(failpoints, "hit", hit)
    return crashed


# --- reading a command -------------------------------------------------------------------


@pytest.mark.parametrize(("subject", "body", "verb"), [
    ("HELP!", "", Verb.HELP),
    ("Re: Re: list", "", Verb.LIST),
    ("", "Unsubscribe.\n\nOn Sat, Ann wrote:\n> photos", Verb.STOP),
    ("Re: Your journey: Lisbon", "\n  New Link  \n> help", Verb.NEW_LINK),
    ("", "Please stop, thanks", Verb.STOP),
    ("", "revoke link", Verb.REVOKE_LINK),
    ("Fwd: DELETE", "", Verb.DELETE),
    ("", "start", Verb.START),
])
def test_a_command_is_read_whatever_its_case_and_punctuation(subject: str, body: str, verb: Verb) -> None:
    found = read_command(subject, body)
    assert found is not None and found.verb == verb


@pytest.mark.parametrize(("subject", "body"), [
    ("Lisbon", "photos attached"),
    ("", "> stop\n> quoted from an earlier mail"),
    ("", "-- \nstop"),
    ("", "please stop sending me the big photos"),
    ("Re: Your journey: Lisbon", ""),
    ("rename", ""),
])
def test_a_mention_a_quote_or_a_signature_is_no_command(subject: str, body: str) -> None:
    assert read_command(subject, body) is None


def test_rename_keeps_the_title_as_written() -> None:
    found = read_command("", "Rename to: “Summer in Lisbon!”\n> rename Something else")
    assert found is not None and (found.verb, found.argument) == (Verb.RENAME, "Summer in Lisbon!")


# --- help and list -----------------------------------------------------------------------


def test_a_mail_without_photos_or_command_gets_the_help(people: Any) -> None:
    mail = command("hello, how does one use this?", subject="Hello")
    message_id = send(people, mail)

    reply = answer_to(people, mail)
    assert str(reply["Subject"]) == "Re: Hello"  # in their thread, as a person answers
    text = text_of(reply)
    assert "No photos found" in text
    for name in ("help", "list", "rename NEW TITLE", "new link", "revoke link", "delete", "stop", "start"):
        assert f"“{name}”" in text, name
    assert people.settings.operator_address in text and people.settings.operator_name in text
    assert outcome(people, message_id)[:2] == ("processed", "handled by journeys: help")


def test_help_asked_in_the_subject(people: Any) -> None:
    mail = command("", subject="Help?")
    send(people, mail)
    reply = answer_to(people, mail)
    assert str(reply["Subject"]) == "Re: Help?"
    assert "No photos found" not in text_of(reply) and "“list”" in text_of(reply)
    assert len(caught(people)) == 1


def test_list_names_every_journey_with_its_link_date_and_photos(people: Any) -> None:
    first_journey(people)
    send(people, photo_mail(subject="Porto", shots=SHOTS[:1]))
    lisbon, porto = journey_rows(people)
    mail = command("List")
    send(people, mail)

    text = text_of(answer_to(people, mail))
    base = people.settings.public_base_url
    assert f"“Lisbon”, started {lisbon.created_at:%d %b %Y}, 3 photos: {base}/j/{lisbon.token}" in text
    assert f"“Porto”, started {porto.created_at:%d %b %Y}, 1 photo: {base}/j/{porto.token}" in text
    assert text.index("Porto") < text.index("Lisbon")  # newest first


# --- one journey: rename, new link, revoke link, delete ------------------------------------


def test_rename_in_the_journey_thread_above_the_quote(people: Any) -> None:
    ready = first_journey(people)
    mail = command("rename Summer in Lisbon", answering=ready, quote="> rename Something else")
    send(people, mail)

    (journey,) = journey_rows(people)
    assert journey.title == "Summer in Lisbon"
    reply = answer_to(people, mail)
    assert str(reply["Subject"]) == str(mail["Subject"]) == "Re: Re: Lisbon"  # their subject, kept
    assert "Summer in Lisbon" in text_of(reply)
    assert reply["Reply-To"] == ready["Reply-To"]  # the answer stays in the journey's thread
    # and a reply to that answer still finds the journey
    again = command("rename Lisbon, July", answering=reply)
    send(people, again)
    assert journey_rows(people)[0].title == "Lisbon, July"


def test_a_journey_command_outside_a_thread_asks_which_journey(people: Any) -> None:
    first_journey(people)
    mail = command("rename Elsewhere")
    send(people, mail)

    assert journey_rows(people)[0].title == "Lisbon"
    reply = answer_to(people, mail)
    assert str(reply["Subject"]) == "Which journey?" and "Nothing was changed" in text_of(reply)


def test_someone_else_in_the_thread_cannot_change_the_journey(people: Any) -> None:
    people.allowlist.add("bob@example.org")
    ready = first_journey(people)
    mail = command("delete", answering=ready)
    mail.replace_header("From", "Bob <bob@example.org>")
    reply, _ = submitted(people, mail.as_bytes(), "bob@example.org", to=str(mail["To"]))
    assert reply == b"250 2.0.0"
    assert len(journey_rows(people)) == 1
    assert "Which journey?" in text_of(answer_to(people, mail))


def test_new_link_and_revoke_link(people: Any) -> None:
    ready = first_journey(people)
    old = journey_rows(people)[0].token
    web = TestClient(create_app(people))
    assert web.get(f"/j/{old}").status_code == 200

    rotate = command("new link", answering=ready)
    send(people, rotate)
    new = journey_rows(people)[0].token
    assert new != old
    assert f"{people.settings.public_base_url}/j/{new}" in text_of(answer_to(people, rotate))
    assert web.get(f"/j/{old}").status_code == 404 and web.get(f"/j/{new}").status_code == 200

    revoke = command("Revoke link.", answering=answer_to(people, rotate))
    send(people, revoke)
    assert journey_rows(people)[0].revoked_at is not None
    assert web.get(f"/j/{new}").status_code == 404
    assert "The link is turned off" in text_of(answer_to(people, revoke))


def _photo_blobs(runtime: Any) -> list[str]:
    return sorted(key for key, _ in runtime.blobs.iter_keys("photos"))


def test_delete_removes_the_journey_its_photos_and_images_and_the_link_is_gone(
        people: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ready = first_journey(people)
    (journey,) = journey_rows(people)
    assert len(_photo_blobs(people)) == 6
    crashed = crash_once(monkeypatch, "commands.after_effect")  # blobs deleted, then the crash

    mail = command("Delete", answering=ready)
    message_id = send(people, mail)
    settle(people)

    assert crashed and outcome(people, message_id)[0] == "processed"
    assert journey_rows(people) == [] and rows(people, photos) == []
    assert _photo_blobs(people) == []
    source = [r for r in rows(people, inbound_messages) if r.id == journey.source_message_id]
    assert source[0].raw_deleted_at is not None and not people.blobs.exists(source[0].blob_key)
    reply = answer_to(people, mail)  # one answer, though the job ran twice
    assert str(reply["Subject"]) == str(mail["Subject"]) and "3 photos" in text_of(reply)
    web = TestClient(create_app(people))
    for path in ("", ".json", ".geojson", ".gpx", "/preview.png", "/photos/" + "a" * 16 + "/display.jpg"):
        assert web.get(f"/j/{journey.token}{path}").status_code == 410, path  # every form of the link is gone
        assert web.get("/j/" + "x" * 32 + path).status_code == 404, path  # never a journey: not "gone"

    # the same mail delivered again is the same request: no second answer
    send(people, mail)
    settle(people)
    assert len([m for m in caught(people) if m["In-Reply-To"] == mail["Message-ID"]]) == 1


def test_delete_keeps_an_image_another_journey_still_shows(people: Any) -> None:
    ready = first_journey(people)
    send(people, photo_mail(subject="Again"))  # the same three photos, a journey of their own
    assert len(journey_rows(people)) == 2 and len(_photo_blobs(people)) == 6

    send(people, command("delete", answering=ready))
    (left,) = journey_rows(people)
    assert left.title == "Again" and len(_photo_blobs(people)) == 6
    assert people.journeys.view(left.token) is not None


# --- stop and start ------------------------------------------------------------------------


def test_stop_confirms_once_then_silence(people: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    first_journey(people)
    crashed = crash_once(monkeypatch, "commands.after_effect")
    mail = command("Unsubscribe")
    send(people, mail)
    settle(people)

    assert crashed
    confirmation = answer_to(people, mail)  # delivered, once, though Ann is now suppressed
    assert "no more mail" in text_of(confirmation).lower()
    (entry,) = rows(people, suppressions)
    assert (entry.address, entry.reason, entry.source) == (ANN, "UNSUBSCRIBE", suppression.STOP_BY_MAIL)
    assert [r.value for r in rows(people, allowlist)] == []
    sent = len(caught(people))

    for later in (photo_mail(subject="More"), command("help"), command("stop")):
        message_id = send(people, later)
        assert outcome(people, message_id)[:2] == ("refused", f"sender-unsubscribed: {ANN} unsubscribed")
    settle(people)
    assert len(caught(people)) == sent
    with people.engine.connect() as conn:
        states = conn.execute(sa.select(outbound_messages.c.state)).scalars().all()
    assert sorted(states) == ["sent", "sent"]  # nothing even queued after the stop


# Ann's mail authenticates by DKIM, from a peer outside trusted_networks: the SMTP-time screen
# (allowlist) and the worker's gate both apply.


@pytest.fixture
def signed_people(make_settings: Callable[..., Any], database_url: str, dns: Any, tmp_path: Path,
                  allowing_runtime: Callable[..., Any]) -> Iterator[tuple[Any, DkimSigner]]:
    key = tmp_path / "example.org.pem"
    dns.add_txt("s1._domainkey.example.org", generate_key(key, "rsa"))
    dns.add_txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    runtime = allowing_runtime(make_settings(database={"url": database_url}, dns_nameservers=[dns.nameserver]))
    yield runtime, DkimSigner("example.org", "s1", key.read_bytes())


def test_start_undoes_only_ones_own_stop(signed_people: tuple[Any, DkimSigner]) -> None:
    runtime, signer = signed_people
    stop = command("stop")
    send(runtime, signer.sign(stop.as_bytes()))
    assert "no more mail" in text_of(answer_to(runtime, stop)).lower()
    assert not runtime.allowlist.allows(ANN)

    # off the allowlist, yet the SMTP screen takes her mail: the gate refuses all but start
    refused = send(runtime, signer.sign(photo_mail(subject="Later").as_bytes()))
    assert outcome(runtime, refused)[0] == "refused"
    start = command("Start")
    send(runtime, signer.sign(start.as_bytes()))
    assert str(answer_to(runtime, start)["Subject"]) == "Welcome back"
    assert runtime.allowlist.allows(ANN) and rows(runtime, suppressions) == []
    again = photo_mail(subject="Porto")
    send(runtime, signer.sign(again.as_bytes()))
    assert "Porto" in str(answer_to(runtime, again)["Subject"])

    # an operator's removal is not hers to undo: refused while her server waits
    runtime.allowlist.remove(ANN)
    send(runtime, signer.sign(command("start").as_bytes()), expect=b"550 5.7.1")


def test_start_does_not_undo_a_complaint(signed_people: tuple[Any, DkimSigner]) -> None:
    runtime, signer = signed_people
    with runtime.engine.begin() as conn:
        suppression.add(conn, ANN, suppression.Reason.COMPLAINT, "arf")
    sent = len(caught(runtime))
    message_id = send(runtime, signer.sign(command("start").as_bytes()))
    assert outcome(runtime, message_id)[0] == "refused"
    assert len(caught(runtime)) == sent and rows(runtime, suppressions)[0].reason == "COMPLAINT"


# --- the operator's view -----------------------------------------------------------------------


def show_person(runtime: Any, address: str) -> str:
    from click.testing import CliRunner

    from waypost.cli import cli

    result = CliRunner().invoke(cli, ["person", "show", address, "--data-dir", str(runtime.settings.data_dir)],
                                env={"WAYPOST_DATABASE__URL": runtime.settings.database_url})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_person_show_tells_what_waypost_holds_about_them(people: Any) -> None:
    first_journey(people)
    send(people, command("list"))
    token = journey_rows(people)[0].id
    shown = show_person(people, "Ann+trips@Example.org")
    assert f"person: {ANN}" in shown and f"allowlist: address {ANN}" in shown and "suppressed: no" in shown
    assert "journeys: 1" in shown and f"{token} " in shown and "3 photos live Lisbon" in shown
    assert "mail in: 2 processed" in shown and "mail out: 2 sent" in shown

    send(people, command("stop"))
    shown = show_person(people, ANN)
    assert "allowlist: not on the allowlist" in shown
    assert f"suppressed: {ANN}: UNSUBSCRIBE by {suppression.STOP_BY_MAIL}" in shown
    assert "left by their own stop by mail" in shown and "mail out: 3 sent" in shown
