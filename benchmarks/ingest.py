"""Durable ingest over SMTP: messages per second and CPU per message of `waypost serve`, against a
bare aiosmtpd server whose handler writes and fsyncs each message, in the same run.

    python benchmarks/ingest.py            # full: 5,000 messages of 10 KB over 20 sessions, 3 rounds
    python benchmarks/ingest.py --quick    # CI: 1,000 messages, 1 round
    python benchmarks/ingest.py --json out.json
    python benchmarks/ingest.py --quick --against /tmp/old/src   # also an older tree, interleaved

Both servers run as their own process on loopback and get the same messages from the same
20 client threads (each session sends its share, one message after another, as an MTA does).
The server's CPU time (user + system, from /proc) is read before and after. The worker is off
(worker.embedded=false) and 127.0.0.0/8 is trusted, so what is measured is the ingress: DATA,
the spool, the blob written and fsynced, the row and the job committed, then 250.

``--against DIR`` runs `waypost serve` a third time per round from another source tree
(``PYTHONPATH=DIR``, e.g. ``git archive HEAD src | tar -x -C /tmp/old``), so a change is
compared with what it replaces under the same load.

Target (issue "Fast where it counts"): at least 60 % of the bare server's rate. Exit status 1
when a message is not answered 250 or a server fails; a missed target is reported only.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from smtp_servers import start, stop

SESSIONS = 20
MESSAGE_BYTES = 10 * 1024
TARGET = 0.60
_TICKS = os.sysconf("SC_CLK_TCK")

BARE_SERVER = r"""
import asyncio, os, sys, uuid
from aiosmtpd.smtp import SMTP

DIRECTORY = sys.argv[1]

class Durable:
    async def handle_DATA(self, server, session, envelope):
        path = os.path.join(DIRECTORY, uuid.uuid4().hex)
        with open(path, "wb") as out:
            out.write(envelope.original_content)
            out.flush()
            os.fsync(out.fileno())
        return "250 OK"

async def main():
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(Durable()), "127.0.0.1", 0)
    print(f"smtp: 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@dataclass
class Round:
    server: str
    messages: int
    seconds: float
    per_second: float
    cpu_ms_per_message: float


def message(n: int) -> bytes:
    head = (f"From: ann@example.org\r\nTo: journeys@waypost.test\r\nSubject: ingest {n}\r\n"
            f"Message-ID: <ingest-{n}@example.org>\r\n\r\n").encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * ((MESSAGE_BYTES - len(head)) // len(line))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (proc(5) fields 14, 15)


def send(port: int, messages: list[bytes]) -> int:
    """Send over SESSIONS sessions at once; the number of 250s."""
    accepted = [0] * SESSIONS

    def session(index: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
            client.ehlo("client.example.org")
            for raw in messages[index::SESSIONS]:
                try:
                    client.sendmail("ann@example.org", ["journeys@waypost.test"], raw)
                    accepted[index] += 1
                except smtplib.SMTPResponseException:
                    pass

    threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(accepted)


def measure(name: str, command: list[str], env: dict[str, str], messages: list[bytes]) -> Round:
    process, port = start(command, env)
    try:
        send(port, messages[:SESSIONS])  # warm-up: connections, caches, the first rows
        cpu = cpu_seconds(process.pid)
        began = time.monotonic()
        accepted = send(port, messages)
        seconds = time.monotonic() - began
        cpu = cpu_seconds(process.pid) - cpu
    finally:
        stop(process)
    if accepted != len(messages):
        raise SystemExit(f"{name}: {accepted} of {len(messages)} messages accepted")
    return Round(name, len(messages), round(seconds, 2), round(len(messages) / seconds, 1),
                 round(cpu * 1000 / len(messages), 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 messages, one round")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="also run `waypost serve` from this source tree (the folder holding waypost/)")
    args = parser.parse_args(argv)
    if args.against is not None and not (args.against / "waypost" / "__init__.py").is_file():
        parser.error(f"--against: no waypost package in {args.against}")
    count, rounds = (1000, 1) if args.quick else (5000, 3)
    messages = [message(n) for n in range(count)]
    print(f"durable ingest: {count} messages of {MESSAGE_BYTES // 1024} KB over {SESSIONS} sessions, "
          f"{rounds} round(s), alternating servers; {os.cpu_count()} CPUs")
    results: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="waypost-ingest-") as tmp:
        for index in range(rounds):
            data = Path(tmp) / f"waypost-{index}"
            bare = Path(tmp) / f"bare-{index}"
            bare.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
            waypost_env = {**env, "WAYPOST_DATA_DIR": str(data), "WAYPOST_WORKER__EMBEDDED": "false",
                           "WAYPOST_TRUSTED_NETWORKS": "127.0.0.0/8", "PYTHONUNBUFFERED": "1"}
            serve = [sys.executable, "-m", "waypost", "serve", "--smtp-port", "0", "--http-port", "0"]
            plan = [("aiosmtpd + fsync", [sys.executable, "-c", BARE_SERVER, str(bare)], env),
                    ("waypost serve", serve, waypost_env)]
            if args.against is not None:
                plan.append(("waypost (against)", serve, {**waypost_env, "PYTHONPATH": str(args.against.resolve()),
                                                          "WAYPOST_DATA_DIR": str(data) + "-against"}))
            for name, command, server_env in plan[index % len(plan):] + plan[:index % len(plan)]:
                result = measure(name, command, server_env, messages)
                results.append(result)
                print(f"  round {index + 1}: {name:<17} {result.per_second:7.1f} msg/s, "
                      f"{result.cpu_ms_per_message:5.2f} ms CPU per message ({result.seconds:.1f} s)")
    servers = sorted({r.server for r in results}, key=[r.server for r in results].index)
    rate = {name: statistics.median(r.per_second for r in results if r.server == name) for name in servers}
    cpu = {name: statistics.median(r.cpu_ms_per_message for r in results if r.server == name) for name in servers}
    ratio = rate["waypost serve"] / rate["aiosmtpd + fsync"]
    print(f"  median: waypost {rate['waypost serve']:.1f} msg/s = {ratio:.2f} x the bare server's "
          f"{rate['aiosmtpd + fsync']:.1f}; target >= {TARGET:.2f}: {'met' if ratio >= TARGET else 'MISSED'}")
    ours, base, against = cpu["waypost serve"], cpu["aiosmtpd + fsync"], cpu.get("waypost (against)")
    print(f"  CPU per message: waypost {ours:.2f} ms = {ours / base:.2f} x the bare server's {base:.2f} ms")
    if against is not None:
        print(f"  against {args.against}: {rate['waypost (against)']:.1f} msg/s = "
              f"{rate['waypost (against)'] / rate['aiosmtpd + fsync']:.2f} x bare, {against:.2f} ms CPU per message; "
              f"this tree uses {ours / against:.2f} x its CPU")
    if args.json:
        args.json.write_text(json.dumps({"rounds": [asdict(r) for r in results], "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
