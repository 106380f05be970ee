"""Memory of authenticating one big DKIM-signed mail (SPF, DKIM, DMARC): from the SMTP spool's
file, against the whole message in memory as bytes (how every message was checked before, and
how a message under the spool's 4 MiB threshold still is), in the same run.

    python benchmarks/spooled_auth_memory.py            # 3 rounds each, taking turns
    python benchmarks/spooled_auth_memory.py --quick    # 1 round each

The mail is ``mail-40-photos.eml`` (``photo_inputs.py``) with CRLF line ends, DKIM-signed
(relaxed/relaxed, a fresh 2048-bit key) for example.org, whose key and DMARC record a DNS server
on loopback serves (``tests/support/dns_server.py``). It goes line by line through a
``MessageSpool`` that keeps nothing in memory, as the SMTP listener's DATA does past the
threshold. Each round runs ``Authenticator.authenticate`` once under tracemalloc and reports the
peak of Python's allocations over what was held before: the baseline gets the message as bytes,
the contender the ``SpooledMessage``. Both must give DKIM pass and DMARC pass (exit status 1
otherwise). Target (issue 19): the file path holds no copy of the message, well under 0.5x.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import dkim
from photo_inputs import photo_mail
from reply_latency import RECIPIENT, SENDER, on_the_wire

from waypost.ingress.limits import SessionLimits
from waypost.ingress.spool import InflightBudget, MessageSpool
from waypost.mail.authenticator import Authenticator
from waypost.mail.dkim_sign import generate_key

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.dns_server import LoopbackDns  # noqa: E402

TARGET = 0.5
PIECE = 256 * 1024  # octets of whole lines handed to the spool at a time


def signed_mail(key: Path) -> bytes:
    raw = on_the_wire(photo_mail(SENDER, RECIPIENT).read_bytes())
    return dkim.sign(raw, b"big", b"example.org", key.read_bytes(), canonicalize=(b"relaxed", b"relaxed"),
                     include_headers=[b"from", b"to", b"subject", b"message-id"], linesep=b"\r\n") + raw


def spool_of(raw: bytes, directory: Path) -> MessageSpool:
    spool = MessageSpool(InflightBudget(1024 * 1024), SessionLimits(), directory, file_over=0)
    start = 0
    while start < len(raw):
        end = raw.rfind(b"\r\n", start, start + PIECE) + 2
        end = len(raw) if end < start + 2 else end
        spool.write(raw[start:end])
        start = end
    return spool


def measure(checks: Authenticator, message: Any) -> tuple[int, float, str]:
    tracemalloc.start()
    began = time.perf_counter()
    verdict = checks.authenticate(message, "127.0.0.1", "mail.example.org", SENDER)
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, seconds, f"dkim={'/'.join(s.result for s in verdict.dkim)} dmarc={verdict.dmarc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round each")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="waypost-auth-memory-") as tmp, LoopbackDns() as dns:
        key = Path(tmp) / "key.pem"
        dns.add_txt("big._domainkey.example.org", generate_key(key, "rsa"))
        dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
        raw = signed_mail(key)
        spool = spool_of(raw, Path(tmp))
        spooled = spool.spooled()
        checks = Authenticator((dns.nameserver,), 2.0)
        measure(checks, raw[:4096])  # the resolver and imports, outside the rounds
        print(f"authenticating a DKIM-signed {len(raw) / 2**20:.1f} MiB mail; peak Python allocations (tracemalloc)")
        worst = {"bytes in memory": 0, "from the spool file": 0}
        ok = True
        for _ in range(1 if args.quick else 3):
            for name, message in (("bytes in memory", raw), ("from the spool file", spooled)):
                peak, seconds, outcome = measure(checks, message)
                worst[name] = max(worst[name], peak)
                ok = ok and outcome == "dkim=pass dmarc=pass"
                print(f"  {name:20} +{peak / 2**20:7.1f} MiB = {peak / len(raw):.2f}x the mail, "
                      f"{seconds:.2f} s (traced), {outcome}")
        spool.close()
    ratio = worst["from the spool file"] / len(raw)
    print(f"  from the file: {worst['from the spool file'] / worst['bytes in memory']:.3f}x the in-memory peak; "
          f"{ratio:.2f}x the mail (target < {TARGET}x: {'met' if ratio < TARGET else 'MISSED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
