"""`start` undoes a person's own unsubscribe by the link in our mail (one-click ``/u/…`` or the
mailto form), as it undoes their own `stop`; an operator's suppression stays. Over SMTP with
DKIM-signed mail from outside trusted_networks, so the SMTP screen and the gate both apply."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.integration.test_mail_commands import (  # noqa: F401  (signed_people is a fixture)
    ANN,
    answer_to,
    command,
    outcome,
    rows,
    send,
    signed_people,
    text_of,
)
from tests.integration.test_pipeline import drain, photo_mail
from waypost.mail.dkim_sign import DkimSigner
from waypost.outbound import suppression
from waypost.pipeline.inbox import ReceivedMail
from waypost.store.models import suppressions
from waypost.web.app import create_app


def _comes_back(runtime: Any, signer: DkimSigner, source: str) -> None:
    """Ann left by the link (``source``): refused until she writes start, then welcome again."""
    (entry,) = rows(runtime, suppressions)
    assert (entry.reason, entry.source) == ("UNSUBSCRIBE", source)
    assert not runtime.allowlist.allows(ANN)
    refused = send(runtime, signer.sign(photo_mail(subject="Later").as_bytes()))
    assert outcome(runtime, refused)[0] == "refused"

    start = command("start")
    send(runtime, signer.sign(start.as_bytes()))
    answer = answer_to(runtime, start)
    assert str(answer["Subject"]) == "Welcome back", text_of(answer)
    assert runtime.allowlist.allows(ANN) and rows(runtime, suppressions) == []
    again = photo_mail(subject="Porto")
    send(runtime, signer.sign(again.as_bytes()))
    assert "Porto" in str(answer_to(runtime, again)["Subject"])


@pytest.fixture
def signed(signed_people: tuple[Any, DkimSigner]) -> tuple[Any, DkimSigner]:  # noqa: F811
    """Ann allowlisted, her mail DKIM-signed, from outside trusted_networks (test_mail_commands)."""
    return signed_people


def test_start_undoes_a_one_click_unsubscribe(signed: tuple[Any, DkimSigner]) -> None:
    runtime, signer = signed
    token = runtime.unsubscriber.tokens.make(ANN, "journeys")
    with TestClient(create_app(runtime), client=("203.0.113.9", 50000)) as client:
        assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    _comes_back(runtime, signer, suppression.ONE_CLICK)


def test_start_undoes_a_mailto_unsubscribe(signed: tuple[Any, DkimSigner]) -> None:
    runtime, signer = signed
    token = runtime.unsubscriber.tokens.make(ANN, "journeys")
    raw = (f"From: {ANN}\r\nTo: unsubscribe@waypost.test\r\nSubject: unsubscribe {token}\r\n"
           "Message-ID: <leave@example.org>\r\n\r\n").encode()
    runtime.inbox.accept(ReceivedMail(raw, ANN, ("unsubscribe@waypost.test",), "192.0.2.1"))
    drain(runtime)
    _comes_back(runtime, signer, suppression.MAILTO)


def test_start_does_not_undo_an_operators_unsubscribe(signed: tuple[Any, DkimSigner]) -> None:
    runtime, signer = signed
    with runtime.engine.begin() as conn:
        suppression.add(conn, ANN, suppression.Reason.UNSUBSCRIBE, "console", by="console (admin)")
    message_id = send(runtime, signer.sign(command("start").as_bytes()))
    assert outcome(runtime, message_id)[0] == "refused"
    (entry,) = rows(runtime, suppressions)
    assert entry.source == "console"
