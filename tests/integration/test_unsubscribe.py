"""Unsubscribing: the RFC 8058 one-click POST, the confirmation page a GET shows, the mailto
form through the inbound pipeline, and what leaving means for the journeys app."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import json
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeSerializer

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


def legacy_token(keys: list[bytes], address: str, stream: str) -> str:
    """A token as the first format made them (in mail already sent): itsdangerous, readable."""
    serializer = URLSafeSerializer(list(reversed(keys)), salt="waypost.unsubscribe.v1",
                                   signer_kwargs={"digest_method": hashlib.sha256})
    return str(serializer.dumps({"a": address, "s": stream}))


def readable_forms(address: str, stream: str) -> list[str]:
    """What a token must not contain: the address and stream as text, and in base64 or JSON."""
    as_json = json.dumps({"a": address, "s": stream})
    forms = [address, stream, address.split("@")[0], as_json, json.dumps({"a": address, "s": stream},
                                                                        separators=(",", ":"))]
    encoded = [base64.urlsafe_b64encode(form.encode()).decode().rstrip("=") for form in forms]
    # a base64 form shows through wherever the text sits in the payload: every alignment
    shifted = [base64.urlsafe_b64encode(pad + address.encode()).decode()[4:-4] for pad in (b"", b"x", b"xx")]
    return forms + encoded + shifted


def test_tokens_are_opaque_and_survive_key_rotation() -> None:
    address = "ann.example@example.org"
    old = UnsubscribeTokens([b"old-key-0123456789"])
    rotated = UnsubscribeTokens([b"new-key-0123456789", b"old-key-0123456789"])
    token = old.make(address, "journeys")

    assert not any(form in token for form in readable_forms(address, "journeys"))
    assert old.make(address, "journeys") != token  # not even equal addresses are linkable
    assert rotated.read(token) == Subscription(address, "journeys")
    assert rotated.read(rotated.make(address, "journeys")) == Subscription(address, "journeys")
    with pytest.raises(InvalidToken):  # a retired key no longer opens
        UnsubscribeTokens([b"new-key-0123456789"]).read(token)
    assert rotated.find(f"Re: [EXT] unsubscribe {token} thanks") == Subscription(address, "journeys")


def flip(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1:]


def test_tampered_and_foreign_tokens_are_refused() -> None:
    tokens = UnsubscribeTokens([b"new-key-0123456789", b"old-key-0123456789"])
    token = tokens.make("ann@example.org", "journeys")
    foreign = UnsubscribeTokens([b"attacker-key-0123456"])
    forged_legacy = legacy_token([b"attacker-key-0123456"], "ann@example.org", "journeys")
    for bad in (foreign.make("ann@example.org", "journeys"), forged_legacy, flip(token, 0), flip(token, 5),
                flip(token, len(token) // 2), flip(token, len(token) - 2), token[:-1], token[:20], token + "AAAA",
                "", "not.a.token", "Ag", "é" * 80):
        with pytest.raises(InvalidToken):
            tokens.read(bad)
        assert tokens.find(f"unsubscribe {bad}") is None


def test_tokens_in_mail_already_sent_keep_working_while_their_key_is_configured() -> None:
    keys = [b"new-key-0123456789", b"old-key-0123456789"]
    legacy = legacy_token([b"old-key-0123456789"], "ann@example.org", "journeys")
    tokens = UnsubscribeTokens(keys)

    assert tokens.read(legacy) == Subscription("ann@example.org", "journeys")
    assert tokens.find(f"Re: unsubscribe {legacy}.") == Subscription("ann@example.org", "journeys")
    payload, signature = legacy.split(".")
    for bad in (payload + "." + signature[:-2] + "AA", legacy[:-1]):
        with pytest.raises(InvalidToken):
            tokens.read(bad)
    with pytest.raises(InvalidToken):
        UnsubscribeTokens([b"new-key-0123456789"]).read(legacy)
    assert "." not in tokens.make("ann@example.org", "journeys")  # only the new format is issued


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

            old = legacy_token([KEY.encode()], "cat@example.org", "journeys")  # in mail sent before
            assert client.post(f"/u/{old}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
            assert suppressed(engine, "cat@example.org") is not None
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


def test_mailto_finds_tokens_of_either_format(runtime: Any) -> None:
    """New tokens, and old ones: itsdangerous compressed payloads that shrink, marked by a leading '.'"""
    address = "maria.mariani@mariani-mariani.example.it"
    legacy = legacy_token(list(signing_keys(runtime.settings)), address, "journeys")
    assert legacy.startswith(".")  # the compressed case
    for token in (runtime.unsubscriber.tokens.make(address, "journeys"), legacy):
        assert runtime.unsubscriber.tokens.find(f"unsubscribe {token}") == Subscription(address, "journeys")
        assert runtime.unsubscriber.tokens.find(f"Re: unsubscribe {token}.") == Subscription(address, "journeys")


def test_an_old_token_unsubscribes_by_mail(runtime: Any) -> None:
    runtime.allowlist.add("ann@example.org")
    legacy = legacy_token(list(signing_keys(runtime.settings)), "ann@example.org", "journeys")
    message = email.message.EmailMessage()
    message["From"] = "ann@example.org"
    message["To"] = "unsubscribe@waypost.test"
    message["Subject"] = f"Re: unsubscribe {legacy}"
    message.set_content("")
    message_id = runtime.inbox.accept(ReceivedMail(message.as_bytes(), "ann@example.org",
                                                   ("unsubscribe@waypost.test",), "192.0.2.1"))
    drain(runtime)

    assert inbound(runtime, message_id).reason == "unsubscribed ann@example.org from journeys"
    assert not runtime.allowlist.allows("ann@example.org")


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
