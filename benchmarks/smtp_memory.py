"""Peak memory of the SMTP ingress under concurrent big messages, against aiosmtpd's own DATA
handling in the same run, as a ratio to the bytes received.

    python benchmarks/smtp_memory.py            # full: 20 clients at once, 39 MB each (the issue's case)
    python benchmarks/smtp_memory.py --quick    # CI: 8 clients at once
    python benchmarks/smtp_memory.py --json out.json

Each scenario starts a fresh server process on loopback and has N clients send one 39 MB
message each, all at once; the server's peak resident set (VmHWM) is read when they are done.

- ``waypost, strangers``: `waypost serve` with no trusted network; From is not allowlisted,
  so every message is refused (550 5.7.1) after its data arrived, from the header alone.
- ``waypost, stored``: `waypost serve` with 127.0.0.0/8 trusted; every message is stored
  (250), streamed from the spool's file into the blob store (never held whole in memory).
- ``aiosmtpd, baseline``: aiosmtpd's Controller with a handler that answers 250 and keeps
  nothing: the library's DATA, which holds each message in memory, twice while it joins lines.

The target (issue "Hold under abuse"): waypost's peak under 400 MB for twenty 39 MB messages
at once. The worker is off (worker.embedded=false) so only the ingress is measured. Exit status
1 when a reply is not the expected one or a server fails; a missed target is reported, not fatal.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import smtplib
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from process_tree import descendants, status_kib
from smtp_servers import start, stop

MESSAGE_BYTES = 39 * 1000 * 1000
TARGET_MB = 400
MAIL_DOMAIN = "waypost.test"

BASELINE_SERVER = r"""
import asyncio
from aiosmtpd.smtp import SMTP

class Keep:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"

async def main():
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(Keep(), data_size_limit=64 * 1024 * 1024), "127.0.0.1", 0)
    print(f"smtp: 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@dataclass
class Result:
    scenario: str
    clients: int
    bytes_received: int
    idle_mb: float
    peak_mb: float
    growth_per_received: float  # (peak - idle) / bytes received
    replies: dict[str, int]
    seconds: float


def big_message(sender: str) -> bytes:
    body = base64.encodebytes(os.urandom(MESSAGE_BYTES * 3 // 4 - 2000)).replace(b"\n", b"\r\n")
    head = (f"From: {sender}\r\nTo: journeys@{MAIL_DOMAIN}\r\nSubject: a big one\r\n"
            f"Message-ID: <big@example.net>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n").encode()
    return head + body


def tree_peak_mb(pid: int) -> float:
    return sum(status_kib(p, "VmHWM") for p in [pid, *descendants(pid)]) / 1024


def tree_rss_mb(pid: int) -> float:
    return sum(status_kib(p, "VmRSS") for p in [pid, *descendants(pid)]) / 1024


def send_all(port: int, raw: bytes, clients: int, sender: str) -> dict[str, int]:
    replies: dict[str, int] = {}
    lock = threading.Lock()

    def one() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=600) as client:
                client.ehlo("client.example.net")
                client.sendmail(sender, [f"journeys@{MAIL_DOMAIN}"], raw)
                reply = "250"
        except smtplib.SMTPResponseException as err:
            reply = str(err.smtp_code)
        except (OSError, smtplib.SMTPException) as err:
            reply = f"error: {err.__class__.__name__}"
        with lock:
            replies[reply] = replies.get(reply, 0) + 1

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def run(scenario: str, command: list[str], env: dict[str, str], raw: bytes, clients: int,
        sender: str) -> Result:
    process, port = start(command, env)
    try:
        idle = tree_rss_mb(process.pid)
        began = time.monotonic()
        replies = send_all(port, raw, clients, sender)
        seconds = time.monotonic() - began
        peak = tree_peak_mb(process.pid)
    finally:
        stop(process)
    received = len(raw) * clients
    return Result(scenario, clients, received, round(idle, 1), round(peak, 1),
                  round((peak - idle) * 1024 * 1024 / received, 3), replies, round(seconds, 1))


def waypost_env(data_dir: Path, trusted: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    env.update({"WAYPOST_DATA_DIR": str(data_dir), "WAYPOST_WORKER__EMBEDDED": "false",
                "WAYPOST_MAIL_DOMAIN": MAIL_DOMAIN, "PYTHONUNBUFFERED": "1"})
    if trusted:
        env["WAYPOST_TRUSTED_NETWORKS"] = "127.0.0.0/8"
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 clients instead of 20")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    clients = 8 if args.quick else 20
    print(f"SMTP ingress memory: {clients} clients at once, {MESSAGE_BYTES / 1e6:.0f} MB each "
          f"({clients * MESSAGE_BYTES / 1e6:.0f} MB received per scenario); peak resident set of the server")
    results: list[Result] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="waypost-smtp-memory-") as tmp:
        waypost = [sys.executable, "-m", "waypost", "serve", "--smtp-port", "0", "--http-port", "0"]
        plan = [
            ("waypost, strangers", waypost, waypost_env(Path(tmp) / "strangers", trusted=False),
             "mallory@example.net", "550"),
            ("waypost, stored", waypost, waypost_env(Path(tmp) / "stored", trusted=True), "ann@example.org", "250"),
            ("aiosmtpd, baseline", [sys.executable, "-c", BASELINE_SERVER], dict(os.environ), "ann@example.org",
             "250"),
        ]
        for scenario, command, env, sender, expected in plan:
            raw = big_message(sender)
            result = run(scenario, command, env, raw, clients, sender)
            results.append(result)
            ok = result.replies == {expected: clients}
            failed |= not ok
            print(f"  {scenario:<20} peak {result.peak_mb:7.1f} MB (idle {result.idle_mb:6.1f} MB), "
                  f"growth {result.growth_per_received:.3f} x bytes received, {result.seconds:6.1f} s, "
                  f"replies {result.replies}{'' if ok else f' (expected all {expected}): FAILED'}")
    baseline = results[-1]
    for result in results[:-1]:
        ratio = result.peak_mb / baseline.peak_mb if baseline.peak_mb else float("nan")
        verdict = "met" if result.peak_mb < TARGET_MB else "MISSED"
        note = "" if clients == 20 else f" (quick mode: {clients} clients; the target is for 20)"
        print(f"  {result.scenario}: {ratio:.2f} x aiosmtpd's peak; target peak < {TARGET_MB} MB: {verdict}{note}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
