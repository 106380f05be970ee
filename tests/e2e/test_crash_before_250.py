"""The crash campaign of issue 18 as a test: `waypost serve` is SIGKILLed after the mail is
committed and before its 250, the client sends the same bytes again to the restarted server,
and the person still gets exactly one journey and one reply. Repeated, on SQLite and PostgreSQL."""

from __future__ import annotations

import email.policy
import signal
import smtplib
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer, wait_until
from tests.e2e.test_serve import caught, cli, rows
from tests.integration.test_pipeline import photo_mail
from waypost.store.models import inbound_messages, journeys, outbound_messages

ROUNDS = 3  # each round: two server starts, a kill, and both copies handled


@pytest.fixture
def db_env(database_url: str) -> dict[str, str]:
    return {"WAYPOST_DATABASE__URL": database_url}


def test_a_mail_retried_after_a_kill_before_250_is_answered_once(live_server: Any, tmp_path: Path,
                                                                 database_url: str,
                                                                 db_env: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    assert cli(data_dir, "allowlist", "add", "ann@example.org", **db_env).returncode == 0
    for number in range(1, ROUNDS + 1):
        raw = photo_mail(subject=f"Lisbon day {number}").as_bytes(policy=email.policy.SMTP)  # CRLF
        _send_until_killed(live_server, tmp_path / f"round-{number}", data_dir, raw, db_env)
        server = live_server(data_dir=data_dir, **db_env)
        _send(server, raw)  # the sending server's retry: the same bytes
        wait_until(lambda n=number: _settled(database_url, 2 * n), timeout=60,
                   message=f"both copies of round {number} handled and the reply sent")
        server.stop()
        assert len(caught(data_dir)) == number, f"one reply per mail (round {number})"
        assert len(rows(database_url, journeys)) == number, f"one journey per mail (round {number})"
    reasons = sorted(row.reason for row in rows(database_url, inbound_messages))
    assert reasons[ROUNDS:] == ["handled by journeys"] * ROUNDS
    assert all(reason.startswith("duplicate of ") for reason in reasons[:ROUNDS])


def _send_until_killed(live_server: Any, markers: Path, data_dir: Path, raw: bytes,
                       db_env: dict[str, str]) -> None:
    """Send ``raw`` to a server that stops right after committing it; SIGKILL it there, so the
    client never sees the 250. No embedded worker: both copies wait for the restarted server."""
    markers.mkdir()
    doomed = live_server(data_dir=data_dir, WAYPOST_WORKER__EMBEDDED="false",
                         WAYPOST_FAILPOINTS="smtp.after_accept=pause", WAYPOST_FAILPOINT_DIR=str(markers),
                         **db_env)
    outcome: list[BaseException | None] = []
    client = threading.Thread(target=lambda: outcome.append(_try_send(doomed, raw)), daemon=True)
    client.start()
    wait_until(lambda: (markers / "smtp.after_accept.hit").exists(), timeout=30,
               message="the server to commit the mail:\n" + "\n".join(doomed.lines))
    doomed.process.send_signal(signal.SIGKILL)
    doomed.stop()
    client.join(timeout=30)
    assert outcome and outcome[0] is not None, "the client must not have seen a 250"


def _try_send(server: LiveServer, raw: bytes) -> BaseException | None:
    try:
        _send(server, raw)
    except (smtplib.SMTPException, OSError) as err:
        return err
    return None


def _send(server: LiveServer, raw: bytes) -> None:
    with smtplib.SMTP(server.smtp_host, server.smtp_port, timeout=30) as client:
        client.sendmail("ann@example.org", ["journeys@waypost.test"], raw)


def _settled(database_url: str, messages: int) -> bool:
    inbound = rows(database_url, inbound_messages)
    sent = [row for row in rows(database_url, outbound_messages) if row.state == "sent"]
    return (len(inbound) == messages and all(row.status != "queued" for row in inbound)
            and len(sent) == len(rows(database_url, outbound_messages)) > 0)
