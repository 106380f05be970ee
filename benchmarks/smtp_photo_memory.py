"""Peak memory of one 40-photo mail through SMTP, from its first byte to the reply queued, as a
ratio to the size of the message.

    python benchmarks/smtp_photo_memory.py            # image_workers=1 and the default pool
    python benchmarks/smtp_photo_memory.py --quick    # CI: image_workers=1 only
    python benchmarks/smtp_photo_memory.py --json out.json

``photo_memory.py`` calls ``Inbox.accept`` itself; this one goes the way a mail comes in: a fresh
`waypost serve` (SQLite, catcher transport, loopback trusted, the sender allowlisted) on
loopback, and an ``smtplib`` client in this process, which is not measured. A 4-photo mail goes
through first, so that imports, the place index, the templates and the pool's workers exist.
Then the peak resident set (VmHWM) of the server and of every process below it is reset
(``/proc/PID/clear_refs``) and the 40-photo mail is sent; once its reply is in the catcher's
outbox, each process's peak is read again. Growth is the peak over the resident set just before
the mail was sent. The baseline is the message itself: **target: the server's growth at most
1.5x the message size.** For a pool, a second figure adds the sum of the workers' growths (an
upper bound: they need not peak at the same moment). Exit status 1 when the mail is not
answered or a server does not start; a missed target is reported, not fatal.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path

from photo_inputs import photo_mail
from process_tree import descendants, reset_peak, status_kib
from reply_latency import RECIPIENT, SENDER, Server, on_the_wire

from waypost.apps.journeys.samples import DEMO_TRIP, make_photo

TARGET = 1.5


@dataclass
class Result:
    workers: str
    mail_bytes: int
    server_growth_kib: int
    pool_growth_kib: int
    seconds: float  # first byte sent to the reply in the outbox

    @property
    def server_ratio(self) -> float:
        return self.server_growth_kib * 1024 / self.mail_bytes

    @property
    def tree_ratio(self) -> float:
        return (self.server_growth_kib + self.pool_growth_kib) * 1024 / self.mail_bytes


def warm_up_mail() -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, RECIPIENT, "warm-up"
    message["Message-ID"] = "<warm-up@example.org>"
    message.set_content("warm-up")
    for index, shot in enumerate(DEMO_TRIP[:4]):
        message.add_attachment(make_photo(shot, seed=index), maintype="image", subtype="jpeg",
                               filename=f"warm-{index}.jpg")
    return on_the_wire(message.as_bytes())


def measure(mail: bytes, workers: int, tmp: Path) -> Result:
    server = Server(tmp / f"workers-{workers}", workers)
    try:
        server.answer_seconds(warm_up_mail())
        tree = [server.process.pid, *descendants(server.process.pid)]
        before = {pid: status_kib(pid, "VmRSS") for pid in tree}
        if not all(reset_peak(pid) for pid in tree):
            raise SystemExit("cannot reset the peak resident set (/proc/PID/clear_refs)")
        began = time.monotonic()
        server.answer_seconds(mail)
        seconds = time.monotonic() - began
        growth = {pid: max(status_kib(pid, "VmHWM") - before[pid], 0) for pid in tree}
    finally:
        server.close()
    pool = sum(kib for pid, kib in growth.items() if pid != server.process.pid)
    return Result(str(workers or "default"), len(mail), growth[server.process.pid], pool, round(seconds, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="image_workers=1 only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    mail = on_the_wire(photo_mail(SENDER, RECIPIENT).read_bytes())
    print(f"40-photo mail through SMTP: {len(mail) / 2**20:.1f} MiB; peak resident set growth of `waypost serve` "
          f"from the first byte to the reply queued")
    results = []
    with tempfile.TemporaryDirectory(prefix="waypost-smtp-photos-") as tmp:
        for workers in (1,) if args.quick else (1, 0):
            result = measure(mail, workers, Path(tmp))
            results.append(result)
            verdict = "met" if result.server_ratio <= TARGET else "MISSED"
            line = (f"  image_workers={result.workers:<8} server +{result.server_growth_kib / 1024:6.1f} MiB = "
                    f"{result.server_ratio:.2f}x the message (target <= {TARGET}x: {verdict})")
            if result.pool_growth_kib:
                line += f"; with the pool's workers +{(result.server_growth_kib + result.pool_growth_kib) / 1024:.1f}" \
                        f" MiB = {result.tree_ratio:.2f}x"
            print(f"{line}; {result.seconds:.1f} s to the reply")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "server_ratio": round(r.server_ratio, 3),
                                          "tree_ratio": round(r.tree_ratio, 3)} for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
