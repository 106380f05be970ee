"""`waypost serve` under a connection flood: a total ceiling on SMTP sessions below the file
limit, which serve raises to the hard limit at start and reports, and HTTP still answering."""

from __future__ import annotations

import re
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import LiveServer, read_addresses, server_env, stop_process, wait_until, waypost_command
from tests.integration.test_smtp_hardening import RawClient

OVER_THE_CEILING = re.compile(rb"4\.7\.0 \S+ Too many connections, try again later")


def test_sessions_over_the_ceiling_get_421_and_http_keeps_answering(live_server: Callable[..., LiveServer]) -> None:
    # loopback is a trusted network here (server_env): exempt from the per-client limit, not
    # from the ceiling, which protects descriptors whoever holds them
    server = live_server(WAYPOST_SMTP__MAX_CONNECTIONS="5")
    idle = [RawClient(server.smtp_port) for _ in range(5)]
    try:
        assert [client.reply()[0] for client in idle] == [220] * 5
        extra = RawClient(server.smtp_port)
        code, text = extra.reply()
        assert code == 421 and OVER_THE_CEILING.fullmatch(text), text
        assert extra.closed(), "refused, then closed at once"
        extra.close()
        health = httpx.get(server.http_url + "/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}, "HTTP answers at the ceiling"
        assert idle[0].command("QUIT")[0] == 221
        idle[0].close()
        wait_until(lambda: _greeted(server.smtp_port), message="a session freed by a closed one")
    finally:
        for client in idle:
            client.close()


def _greeted(port: int) -> bool:
    """One new session: greeted (220), or refused while the server has not yet noticed the
    closed one (421)."""
    client = RawClient(port)
    try:
        return client.reply()[0] == 220
    finally:
        client.close()


def test_http_answers_while_smtp_is_flooded_past_the_file_limit(tmp_path: Path) -> None:
    # 300 files: the ceiling is 75 sessions; 400 connections would leave none for HTTP (and
    # none for accept() itself) without it
    process, port, http_url, lines = _serve_under((300, 300), tmp_path / "data")
    clients: list[RawClient] = []
    try:
        clients.extend(RawClient(port) for _ in range(400))
        health = httpx.get(http_url + "/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        codes = [client.reply()[0] for client in clients]
        assert (codes.count(220), codes.count(421)) == (75, 325)
        assert not any("cannot accept connections" in line for line in lines), "no descriptor ran out"
    finally:
        for client in clients:
            client.close()
        stop_process(process)


def _serve_under(limits: tuple[int, int], data_dir: Path,
                 **env: str) -> tuple[subprocess.Popen[str], int, str, list[str]]:
    def lower() -> None:  # in the child, before exec: what a stingy shell or unit file would set
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)

    process = subprocess.Popen(waypost_command("serve", "--smtp-port", "0", "--http-port", "0"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=server_env(data_dir, **env), start_new_session=True, preexec_fn=lower)
    _, port, http_url, lines = read_addresses(process)
    return process, port, http_url, lines


def _open_files(pid: int) -> tuple[int, int]:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_serve_raises_the_soft_file_limit_to_the_hard_one_and_reports_it(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard > 512, "the test needs a hard limit above the lowered soft one"
    process, _, _, lines = _serve_under((512, hard), tmp_path / "data")
    try:
        expected = min(1000, max(hard // 4, hard - 256))
        assert f"limits: {hard} open files (raised from 512), {expected} SMTP sessions at once" in lines, lines
        assert _open_files(process.pid) == (hard, hard)
    finally:
        stop_process(process)


def test_a_ceiling_above_what_the_file_limit_allows_is_capped_with_a_warning(tmp_path: Path) -> None:
    # hard limit 300: 256 reserved would leave 44, so a quarter of the limit (75) is the most
    process, _, _, lines = _serve_under((300, 300), tmp_path / "data", WAYPOST_SMTP__MAX_CONNECTIONS="1000")
    try:
        assert "limits: 300 open files, 75 SMTP sessions at once" in lines, lines
        assert any("smtp.max_connections 1000 is capped at 75" in line for line in lines), lines
    finally:
        stop_process(process)
