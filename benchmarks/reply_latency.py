"""Time from the SMTP 250 for a 4-photo mail to its reply in the catcher, against the same four
photos through the image pool alone, in the same run.

    python benchmarks/reply_latency.py            # full: 7 rounds
    python benchmarks/reply_latency.py --quick    # CI: 3 rounds
    python benchmarks/reply_latency.py --json out.json

``waypost serve`` runs as a process of its own on loopback (SQLite, catcher transport, loopback
trusted, the sender allowlisted, ``journeys.image_workers`` at its default); an ``smtplib``
client in this process sends a mail holding four 12 MP camera JPEGs (``photo_inputs.py``, about
19 MB on the wire), each round with its own Message-ID, and the clock runs from the server's 250
to the reply's file appearing in the outbox (looked at every 5 ms). The baseline is
``ImagePool(default_workers()).process`` on the same four photos' bytes in this process, its
workers started before any timing: the least the server must do for this mail. The two take
turns, one warm-up each first; medians are reported. **Target: reply / pool <= 1.3x.** Exit
status 1 when a mail is not answered or the server does not start; a missed target is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from photo_inputs import phone_jpegs
from smtp_servers import start, stop

from waypost.apps.journeys.imagepool import ImagePool, default_workers

SENDER = "ann@example.org"
RECIPIENT = "journeys@waypost.test"
TARGET = 1.3
REPLY_WITHIN = 300.0  # seconds


def photo_mail(photos: list[bytes], round_number: int) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, RECIPIENT, f"Round {round_number}"
    message["Message-ID"] = f"<latency-{round_number}-{os.getpid()}@example.org>"
    message["Date"] = "Sat, 13 Jul 2024 20:00:00 +0100"
    message.set_content("Four photos.")
    for index, photo in enumerate(photos):
        message.add_attachment(photo, maintype="image", subtype="jpeg", filename=f"IMG_{index:04d}.jpg")
    return on_the_wire(message.as_bytes())


def on_the_wire(raw: bytes) -> bytes:
    """CRLF line ends, as SMTP carries them (smtplib sends bytes as they are)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def server_env(data_dir: Path, image_workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    env.update({"WAYPOST_DATA_DIR": str(data_dir), "WAYPOST_MAIL_DOMAIN": "waypost.test",
                "WAYPOST_TRUSTED_NETWORKS": "127.0.0.0/8", "WAYPOST_JOURNEYS__IMAGE_WORKERS": str(image_workers),
                "PYTHONUNBUFFERED": "1"})
    return env


class Server:
    """`waypost serve` on loopback with its own data directory, the sender allowlisted."""

    def __init__(self, data_dir: Path, image_workers: int = 0) -> None:
        env = server_env(data_dir, image_workers)
        subprocess.run([sys.executable, "-m", "waypost", "allowlist", "add", SENDER], env=env, check=True,
                       capture_output=True)
        self.outbox = data_dir / "outbox"
        self.process, self.port = start([sys.executable, "-m", "waypost", "serve", "--smtp-port", "0",
                                         "--http-port", "0"], env)

    def replies(self) -> int:
        return len(list(self.outbox.glob("*.eml"))) if self.outbox.exists() else 0

    def answer_seconds(self, raw: bytes) -> float:
        """From the 250 to the reply's file in the outbox."""
        expected = self.replies() + 1
        with smtplib.SMTP("127.0.0.1", self.port, timeout=300) as client:
            client.ehlo("client.example.net")
            client.sendmail(SENDER, [RECIPIENT], raw)
            accepted = time.perf_counter()
        deadline = time.monotonic() + REPLY_WITHIN
        while self.replies() < expected:
            if time.monotonic() > deadline:
                raise SystemExit(f"no reply within {REPLY_WITHIN:.0f} s")
            time.sleep(0.005)
        return time.perf_counter() - accepted

    def close(self) -> None:
        stop(self.process)


def pool_seconds(pool: ImagePool, photos: list[bytes]) -> float:
    began = time.perf_counter()
    results = pool.process(photos)
    seconds = time.perf_counter() - began
    if any(isinstance(result, Exception) for result in results):
        raise SystemExit(f"the pool refused a photo: {results}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 7
    photos = [path.read_bytes() for path in phone_jpegs(4)]
    workers = default_workers()
    print(f"4-photo mail ({len(photo_mail(photos, 0)) / 1e6:.1f} MB), SMTP 250 -> reply in the catcher, against "
          f"ImagePool({workers}) on the same photos; {rounds} rounds, medians")
    reply: list[float] = []
    alone: list[float] = []
    with tempfile.TemporaryDirectory(prefix="waypost-latency-") as tmp, ImagePool(workers) as pool:
        server = Server(Path(tmp))
        try:
            server.answer_seconds(photo_mail(photos, 0))  # warm-ups: imports, place index, pool workers
            pool_seconds(pool, photos)
            for number in range(1, rounds + 1):
                turns = [lambda n=number: reply.append(server.answer_seconds(photo_mail(photos, n))),
                         lambda: alone.append(pool_seconds(pool, photos))]
                for turn in turns if number % 2 else turns[::-1]:
                    turn()
        finally:
            server.close()
    ratio = statistics.median(reply) / statistics.median(alone)
    print(f"  reply after the 250   {statistics.median(reply) * 1000:7.0f} ms (best {min(reply) * 1000:.0f})")
    print(f"  image pool alone      {statistics.median(alone) * 1000:7.0f} ms (best {min(alone) * 1000:.0f})")
    print(f"  reply / pool          {ratio:7.2f}x (target <= {TARGET}x: {'met' if ratio <= TARGET else 'MISSED'})")
    if args.json:
        args.json.write_text(json.dumps({"reply_seconds": reply, "pool_seconds": alone, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
