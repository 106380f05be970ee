"""The demo: allowlist a demo sender, mail the service photos from a made-up day trip, wait
for the reply in the catcher, and print where to look."""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from waypost.apps.journeys.repository import list_journeys
from waypost.apps.journeys.samples import DEMO_TRIP, make_photo
from waypost.runtime import Runtime
from waypost.transactions import reading

DEMO_SENDER = "traveller@example.org"
DEMO_SUBJECT = "A day around Lisbon"
JOURNEY_LINK = re.compile(rb"https?://\S+/j/[A-Za-z0-9_-]+")


def demo_message(to: str, sender: str = DEMO_SENDER) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Demo Traveller <{sender}>"
    message["To"] = to
    message["Subject"] = DEMO_SUBJECT
    message["Date"] = format_datetime(DEMO_TRIP[-1].taken_at)  # type: ignore[arg-type]
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content("Photos from our day out. Love, the demo traveller.\n")
    for index, shot in enumerate(DEMO_TRIP):
        message.add_attachment(make_photo(shot, seed=index), maintype="image", subtype="jpeg",
                               filename=f"IMG_{1001 + index}.jpg")
    return message


def send(message: EmailMessage, smtp_address: str) -> None:
    host, _, port = smtp_address.rpartition(":")
    with smtplib.SMTP(host.strip("[]"), int(port), timeout=30) as client:
        client.send_message(message)


def wait_for_reply(outbox: Path, message_id: str, timeout: float = 60.0) -> bytes | None:
    """The catcher's copy of the reply threaded to ``message_id``, or None at the deadline."""
    deadline = time.monotonic() + timeout
    needle = message_id.encode()
    while time.monotonic() < deadline:
        for path in outbox.glob("*.eml"):
            raw = path.read_bytes()
            if needle in raw:
                return raw
        time.sleep(0.2)
    return None


def run_demo(runtime: Runtime, smtp_address: str, http_url: str, out: Callable[[str], None] = print) -> bool:
    """Mail the demo trip into an empty data directory; one that already holds journeys (a
    restart) is left as it is, so restarts do not pile up copies of the same day."""
    with reading(runtime.engine) as conn:
        if list_journeys(conn, limit=1):
            demo = [j for j in list_journeys(conn, limit=20, owner=DEMO_SENDER) if j.state() == "live"]
        else:
            demo = None
    if demo is not None:
        out(f"demo: {runtime.settings.data_dir} already holds journeys, so the demo trip is not mailed again "
            "(start with an empty --data-dir to see it afresh)")
        if demo:  # the demo sender's newest journey whose link still works
            out(f"journey: {runtime.settings.public_base_url.rstrip('/')}/j/{demo[0].token}")
        out(f"catcher: {http_url}/outbox")
        return True
    runtime.allowlist.add(DEMO_SENDER, note="demo sender")
    message = demo_message(runtime.settings.journeys_address)
    send(message, smtp_address)
    out(f"demo: mailed {len(DEMO_TRIP)} photos from {DEMO_SENDER} to {runtime.settings.journeys_address}")
    reply = wait_for_reply(runtime.settings.outbox_dir, str(message["Message-ID"]))
    if reply is None:
        out("demo: no reply within 60 s; is a worker running? (see `waypost worker --help`)")
        return False
    link = JOURNEY_LINK.search(reply)
    out(f"journey: {link.group(0).decode() if link else '(no link found in the reply)'}")
    out(f"catcher: {http_url}/outbox")
    return True
