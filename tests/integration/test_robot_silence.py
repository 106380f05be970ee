"""No answer to a program, end to end over SMTP (RFC 3834): an allowlisted person writing from
a trusted network (where authentication is skipped) is answered, but their out-of-office, a
bounce from the null sender and a list copy of their mail are recorded as refused with the
reason, and nothing is sent."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import corpus_dir
from tests.integration.test_pipeline import caught, photo_mail
from tests.integration.test_sender_trust import outcome, replies, submit


@pytest.fixture
def trusted_runtime(make_settings: Callable[..., Any], database_url: str,
                    allowing_runtime: Callable[..., Any]) -> Any:
    # the test client on 127.0.0.1 is a trusted network: no SPF, DKIM or DMARC is checked
    return allowing_runtime(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"]))


def out_of_office(**headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Ann <ann@example.org>"
    message["To"] = "journeys@waypost.test"
    message["Subject"] = "Automatic reply: Your journey is ready"
    message["In-Reply-To"] = "<reply-1@waypost.test>"
    message["Message-ID"] = "<ooo-1@example.org>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("I am away until Monday and will read your mail when I am back.")
    return message.as_bytes()


def as_ann(raw: bytes) -> bytes:
    """A real sample, as if the allowlisted person's own mail system had written it."""
    return re.sub(rb"(?mi)^From:[^\r\n]*", b"From: Ann <ann@example.org>", raw, count=1)


def assert_silent_refusal(runtime: Any, message_id: str, why: str) -> None:
    status, reason, _, _ = outcome(runtime, message_id)
    assert status == "refused", reason
    assert reason.startswith("automatic-mail: ") and why in reason, reason
    assert replies(runtime) == 1 and len(caught(runtime)) == 1  # only the answer to the photo mail


@pytest.fixture
def answered(trusted_runtime: Any) -> Any:
    """The same person's photo mail from the same network is answered: the path is open."""
    message_id = submit(trusted_runtime, photo_mail().as_bytes())
    assert outcome(trusted_runtime, message_id)[0] == "processed"
    assert replies(trusted_runtime) == 1
    return trusted_runtime


@pytest.mark.parametrize(("headers", "why"), [
    ({"Auto_Submitted": "auto-replied"}, "Auto-Submitted: auto-replied"),
    ({"X_Auto_Response_Suppress": "All"}, "X-Auto-Response-Suppress"),
    ({"Precedence": "bulk"}, "Precedence: bulk"),
    ({"List_Id": "<walkers.lists.example.org>"}, "List-ID"),
])
def test_an_allowed_persons_automatic_mail_from_a_trusted_network_is_not_answered(
        answered: Any, headers: dict[str, str], why: str) -> None:
    assert_silent_refusal(answered, submit(answered, out_of_office(**headers)), why)


def test_a_bounce_from_the_null_sender_is_not_answered(answered: Any) -> None:
    bounce = photo_mail(subject="Undelivered").as_bytes()  # a From of an allowed person, photos even
    assert_silent_refusal(answered, submit(answered, bounce, mail_from=""), "null-reverse-path")


def test_our_own_reply_coming_back_is_a_loop(answered: Any) -> None:
    (reply,) = caught(answered)
    del reply["Auto-Submitted"], reply["List-Unsubscribe"], reply["List-Unsubscribe-Post"]
    message_id = submit(answered, reply.as_bytes(), mail_from="journeys@waypost.test")
    assert_silent_refusal(answered, message_id, "own-address")


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["dsn/sisimai_rfc3834-01.eml", "bounces/sisimai_rfc3834-03.eml",
                                  "bounces/sisimai_rfc3834-04.eml"])
def test_real_out_of_office_answers_from_an_allowed_person_are_not_answered(answered: Any, name: str) -> None:
    raw = as_ann((corpus_dir() / name).read_bytes())
    assert_silent_refusal(answered, submit(answered, raw), "")
    with answered.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from inbound_messages where status = 'refused'")).scalar() == 1
