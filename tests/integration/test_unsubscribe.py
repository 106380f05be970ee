"""Unsubscribing: the RFC 8058 one-click POST, the confirmation page a GET shows, the mailto
form through the inbound pipeline, and what leaving means for the journeys app."""

from __future__ import annotations

import email
import email.policy
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import sqlalchemy as sa

from tests.integration.test_pipeline import caught, deliver, drain, inbound, photo_mail
from waypost.config import load_settings
from waypost.keys import signing_keys
from waypost.outbound import suppression
from waypost.outbound.unsubscribe import InvalidToken, Subscription, UnsubscribeTokens
from waypost.pipeline.inbox import ReceivedMail
from waypost.store.db import create_engine
from waypost.store.models import allowlist, jobs, outbound_messages

KEY = "k" * 32


def suppressed(runtime_or_engine: Any, address: str) -> suppression.Suppression | None:
    engine = getattr(runtime_or_engine, "engine", runtime_or_engine)
    with engine.connect() as conn:
        return suppression.lookup(conn, address)


def test_tokens_survive_key_rotation_and_refuse_forgeries() -> None:
    old = UnsubscribeTokens([b"old-key-0123456789"])
    rotated = UnsubscribeTokens([b"new-key-0123456789", b"old-key-0123456789"])
    token = old.make("ann@example.org", "journeys")

    assert rotated.read(token) == Subscription("ann@example.org", "journeys")
    payload, signature = token.split(".")
    forged = UnsubscribeTokens([b"attacker-key-0123456"]).make("ann@example.org", "journeys")
    for bad in (forged, payload + "." + signature[:-2] + "AA", token[:-1], "", "not.a.token"):
        with pytest.raises(InvalidToken):
            rotated.read(bad)
    with pytest.raises(InvalidToken):  # a retired key no longer verifies
        UnsubscribeTokens([b"new-key-0123456789"]).read(token)
    assert rotated.find(f"Re: [EXT] unsubscribe {token} thanks") == Subscription("ann@example.org", "journeys")


def test_every_reply_carries_one_click_unsubscribe_headers(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    deliver(runtime, photo_mail())
    drain(runtime)

    (reply,) = caught(runtime)
    raw = next(runtime.settings.outbox_dir.glob("*.eml")).read_bytes()
    assert b"=?utf-8?" not in raw.split(b"\n\n", 1)[0].lower()  # plain header, never RFC 2047-encoded
    value = str(reply["List-Unsubscribe"])
    https, mailto = (part.strip().strip("<>") for part in value.split(","))
    assert https.startswith(runtime.settings.public_base_url + "/u/")  # the https URI first (RFC 8058)
    assert mailto.startswith("mailto:unsubscribe@waypost.test?subject=unsubscribe%20")
    assert reply["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = https.rsplit("/", 1)[1]
    assert runtime.unsubscriber.tokens.read(token) == Subscription("ann@example.org", "journeys")
    assert unquote(mailto.split("subject=", 1)[1]) == f"unsubscribe {token}"
    assert https in reply.get_body(("plain",)).get_content()  # the visible link, too
    assert https in reply.get_body(("html",)).get_content()


def test_unsubscribing_by_mail_suppresses_and_removes_from_the_allowlist(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    token = runtime.unsubscriber.tokens.make("ann@example.org", "journeys")
    message = email.message.EmailMessage()
    message["From"] = "someone-not-allowlisted@example.net"  # a forwarding address; the token decides
    message["To"] = "unsubscribe@waypost.test"
    message["Subject"] = f"unsubscribe {token}"
    message.set_content("")
    message_id = runtime.inbox.accept(ReceivedMail(message.as_bytes(), "someone-not-allowlisted@example.net",
                                                   ("unsubscribe@waypost.test",), "192.0.2.1"))
    drain(runtime)

    row = inbound(runtime, message_id)
    assert row.status == "processed" and row.reason == "unsubscribed ann@example.org from journeys"
    entry = suppressed(runtime, "ann@example.org")
    assert entry is not None and entry.reason == "UNSUBSCRIBE" and entry.source == "mailto"
    assert not runtime.allowlist.allows("ann@example.org")
    assert caught(runtime) == []  # nobody is written to about it


def test_mail_to_the_unsubscribe_address_without_a_token_changes_nothing(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    message = email.message.EmailMessage()
    message["From"] = "ann@example.org"
    message["To"] = "unsubscribe@waypost.test"
    message["Subject"] = "please remove me"
    message.set_content("unsubscribe eyJhIjoiYW5uQGV4YW1wbGUub3JnIn0.forgedforgedforgedforgedforged")
    message_id = runtime.inbox.accept(ReceivedMail(message.as_bytes(), "ann@example.org",
                                                   ("unsubscribe@waypost.test",), "192.0.2.1"))
    drain(runtime)

    assert "no valid unsubscribe token" in inbound(runtime, message_id).reason
    assert suppressed(runtime, "ann@example.org") is None and runtime.allowlist.allows("ann@example.org")


def test_someone_who_left_is_refused_even_with_their_domain_allowed_until_added_again(runtime: Any) -> None:
    runtime.allowlist.add("example.org")
    with runtime.engine.begin() as conn:
        runtime.unsubscriber.apply(conn, runtime.unsubscriber.tokens.read(
            runtime.unsubscriber.tokens.make("ann@example.org", "journeys")), source="test")

    first = deliver(runtime, photo_mail())
    drain(runtime)
    assert inbound(runtime, first).status == "refused"
    assert inbound(runtime, first).reason.startswith("sender-unsubscribed")
    assert caught(runtime) == []

    runtime.allowlist.add("ann@example.org")  # the operator lets them back in
    assert suppressed(runtime, "ann@example.org") is None
    second = deliver(runtime, photo_mail(subject="Back again"))
    drain(runtime)
    assert inbound(runtime, second).status == "processed" and len(caught(runtime)) == 1


def test_a_reply_to_a_suppressed_person_ends_suppressed_and_is_never_written(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    with runtime.engine.begin() as conn:
        suppression.add(conn, "ann@example.org", suppression.Reason.BOUNCE, "test")
    deliver(runtime, photo_mail())
    drain(runtime)

    with runtime.engine.connect() as conn:
        (row,) = conn.execute(sa.select(outbound_messages)).all()
    assert row.state == "suppressed" and caught(runtime) == []


def test_one_click_over_http(live_server: Any, tmp_path: Any) -> None:
    """Against a running `waypost serve`: GET asks and changes nothing, a forged token is
    refused, the RFC 8058 POST (either form encoding) unsubscribes at once, without a cookie
    or a redirect."""
    server = live_server(WAYPOST_SECRET_KEYS=KEY)
    tokens = UnsubscribeTokens(signing_keys(load_settings(server.data_dir, secret_keys=KEY)))
    ann, bob = tokens.make("ann@example.org", "journeys"), tokens.make("bob@example.org", "journeys")
    engine = create_engine(f"sqlite:///{server.data_dir / 'waypost.sqlite3'}")
    try:
        with httpx.Client(base_url=server.http_url, follow_redirects=False, timeout=10) as client:
            assert client.post("/u/" + ann).status_code == 400  # a POST without the RFC 8058 body
            page = client.get(f"/u/{ann}")
            assert page.status_code == 200 and "Stop all mail to ann@example.org?" in page.text
            assert 'name="List-Unsubscribe" value="One-Click"' in page.text
            assert "noindex" in page.headers["x-robots-tag"]
            assert suppressed(engine, "ann@example.org") is None  # looking never unsubscribes

            forged = client.post(f"/u/{ann[:-3]}abc", data={"List-Unsubscribe": "One-Click"})
            assert forged.status_code == 400 and suppressed(engine, "ann@example.org") is None

            done = client.post(f"/u/{ann}", data={"List-Unsubscribe": "One-Click"})
            assert done.status_code == 200 and "You are unsubscribed" in done.text
            assert "set-cookie" not in done.headers
            entry = suppressed(engine, "ann@example.org")
            assert entry is not None and entry.reason == "UNSUBSCRIBE" and entry.source == "one-click"

            multipart = client.post(f"/u/{bob}", files={"List-Unsubscribe": (None, "One-Click")})
            assert multipart.status_code == 200 and suppressed(engine, "bob@example.org") is not None

            again = client.post(f"/u/{ann}", data={"List-Unsubscribe": "One-Click"})
            assert again.status_code == 200  # idempotent
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(allowlist)).scalar() == 0
    finally:
        engine.dispose()


def test_a_post_without_the_one_click_body_changes_nothing(live_server: Any) -> None:
    server = live_server(WAYPOST_SECRET_KEYS=KEY)
    token = UnsubscribeTokens([KEY.encode()]).make("ann@example.org", "journeys")
    engine = create_engine(f"sqlite:///{server.data_dir / 'waypost.sqlite3'}")
    try:
        with httpx.Client(base_url=server.http_url, follow_redirects=False, timeout=10) as client:
            for body in ({}, {"List-Unsubscribe": "Yes"}):
                response = client.post(f"/u/{token}", data=body)
                assert response.status_code == 400 and "Nothing changed" in response.text
        assert suppressed(engine, "ann@example.org") is None
    finally:
        engine.dispose()


def test_mailto_finds_compressed_tokens(runtime: Any) -> None:
    """itsdangerous compresses payloads that shrink, and marks them with a leading '.'"""
    address = "maria.mariani@mariani-mariani.example.it"
    token = runtime.unsubscriber.tokens.make(address, "journeys")
    assert token.startswith(".")  # the case this test is about
    assert runtime.unsubscriber.tokens.find(f"unsubscribe {token}") == Subscription(address, "journeys")
    assert runtime.unsubscriber.tokens.find(f"Re: unsubscribe {token}.") == Subscription(address, "journeys")


def test_leaving_covers_tagged_addresses_and_coming_back_lifts_them(runtime: Any) -> None:
    runtime.allowlist.add("example.org")
    with runtime.engine.begin() as conn:
        runtime.unsubscriber.apply(conn, Subscription("ann+trips@example.org", "journeys"), source="test")
        runtime.unsubscriber.apply(conn, Subscription("bob@example.org", "journeys"), source="test")

    refused = deliver(runtime, photo_mail(sender="bob+x@example.org"))
    drain(runtime)
    assert inbound(runtime, refused).reason.startswith("sender-unsubscribed")

    runtime.allowlist.add("ann@example.org")
    assert suppressed(runtime, "ann+trips@example.org") is None
    assert suppressed(runtime, "bob@example.org") is not None


def test_a_dead_send_that_was_handed_over_is_not_retried(runtime: Any) -> None:
    from waypost.pipeline.deadletters import AlreadySent, DeadLetters

    runtime.allowlist.add("ann@example.org")
    deliver(runtime, photo_mail())
    drain(runtime)
    with runtime.engine.begin() as conn:  # a send that died after its handoff, settled unconfirmed
        conn.execute(outbound_messages.update().values(state="sent", unconfirmed=True))
        job_id = conn.execute(sa.select(jobs.c.id).where(jobs.c.kind == "send")).scalar_one()
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(state="dead"))

    with pytest.raises(AlreadySent, match="could deliver it twice"):
        DeadLetters(runtime.queue).retry(job_id)
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).scalar_one() == "dead"

    # a caller that catches the refusal inside its own transaction and commits changes nothing either
    with runtime.engine.begin() as conn, pytest.raises(AlreadySent):
        DeadLetters(runtime.queue).retry(job_id, conn)
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).scalar_one() == "dead"
