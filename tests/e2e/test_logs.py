"""Structured logs: `--log-format json` (or WAYPOST_LOG_FORMAT=json) makes every log line one
JSON object, for the process's own messages and its libraries' alike."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import server_env, wait_until, waypost_command
from waypost.store import migrate


def test_a_command_logs_one_json_object_per_line(tmp_path: Path) -> None:
    done = subprocess.run(waypost_command("--log-format", "json", "db", "upgrade"), capture_output=True, text=True,
                          env=server_env(tmp_path / "data"), timeout=120)

    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert records and all({"timestamp", "level", "logger", "event"} <= set(r) for r in records)
    # the schema created in a new data directory is said once, by Waypost (Alembic's own INFO lines are left out)
    head = migrate.head_revision()
    assert any(r["logger"] == "waypost.store.migrate" and f"to {head}" in r["event"] for r in records)
    assert not [r for r in records if r["logger"].startswith("alembic")]
    assert all(r["timestamp"].endswith("Z") for r in records)


def test_a_running_server_logs_json_from_the_environment(live_server: Any) -> None:
    server = live_server(WAYPOST_LOG_FORMAT="json")
    wait_until(lambda: any('"waypost.pipeline.worker"' in line for line in server.lines), timeout=30,
               message="the worker's start in the log")

    logged = [json.loads(line) for line in list(server.lines) if line.startswith("{")]
    started = [r for r in logged if r["logger"] == "waypost.pipeline.worker"]
    assert started and started[0]["level"] == "info" and "started" in started[0]["event"]
    assert not [line for line in list(server.lines) if " INFO " in line]  # no text lines mixed in
