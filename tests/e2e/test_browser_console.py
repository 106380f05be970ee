"""The operator console in Debian's Chromium against `waypost serve` on loopback: log in, change
things through the forms, find each change in the audit log; forged posts are refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BrowserPage, LiveServer, screenshot, wait_until
from waypost.store.db import create_engine
from waypost.store.models import feedback_events, outbound_messages, utcnow

TOKEN = "browser-console-token-0123456789"
DESKTOP = {"width": 1280, "height": 900}


@dataclass
class Console:
    server: LiveServer
    page: Any
    base: str
    csp_errors: list[str]

    def open(self, path: str) -> None:
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == 200, (path, response and response.status)

    def notice(self) -> str:
        return self.page.locator(".notice").inner_text()


@pytest.fixture
def console(live_server: Any, browser_page: BrowserPage) -> Iterator[Console]:
    server = live_server(WAYPOST_WEB__ADMIN_TOKEN=TOKEN)
    page = browser_page.page
    page.set_viewport_size(DESKTOP)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before destructive actions
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    yield Console(server, page, server.http_url.rstrip("/"), errors)
    assert not browser_page.blocked, browser_page.blocked  # the console asks nothing of the internet


def seed_reputation(data_dir: Path) -> None:
    """30 days of sends with a few bounces and complaints (all under the warning thresholds,
    so the server's guard leaves sending alone), for the charts in the screenshot."""
    engine = create_engine(f"sqlite:///{data_dir / 'waypost.sqlite3'}")
    now = utcnow()
    sends, feedback = [], []
    for day in range(30):
        for n in range(40 + (day * 7) % 41):
            at = now - timedelta(days=day, minutes=n)
            sends.append({"idempotency_key": f"seed-{day}-{n}", "stream": "journeys", "recipient": f"r{n}@example.org",
                          "envelope_sender": "b@example.org", "subject": "seed", "message_id_header": f"<{day}.{n}@x>",
                          "raw": b"x", "state": "sent", "created_at": at, "window_at": at})
        for n, kind in enumerate(["bounce"] * (day % 3) + ["complaint"] * (day == 12)):
            feedback.append({"dedupe_key": f"seed-{day}-{n}", "kind": kind, "source": "ses", "outcome": "recorded",
                             "counts_as": kind, "received_at": now - timedelta(days=day, minutes=n), "raw": "{}"})
    with engine.begin() as conn:
        conn.execute(outbound_messages.insert(), sends)
        conn.execute(feedback_events.insert(), feedback)
    engine.dispose()


def log_in(console: Console) -> None:
    page = console.page
    page.goto(console.base + "/admin/reputation")
    assert page.url.startswith(console.base + "/admin/login")
    page.fill("#password", "not the token")
    page.click("form button[type=submit]")
    assert "neither the console password nor the admin token" in page.locator(".error").inner_text()
    page.fill("#password", TOKEN)
    page.click("form button[type=submit]")
    page.wait_for_url(console.base + "/admin/reputation")  # back where the login interrupted


def test_console_actions_land_in_the_audit_log(console: Console) -> None:
    page = console.page
    seed_reputation(console.server.data_dir)
    log_in(console)
    console.open("/admin/")
    assert page.locator("#sending .ok").inner_text() == "Sending is active."
    screenshot(page, "console-dashboard")

    console.open("/admin/allowlist")
    page.fill("#entry", "ann@example.org")
    page.fill("#note", "my sister")
    page.click("form[action='/admin/allowlist/add'] button")
    assert console.notice() == "Added."
    assert page.locator("td.mono", has_text="ann@example.org").count() == 1

    console.open("/admin/suppressions")
    page.fill("#add-address", "bounced@example.net")
    page.fill("#add-note", "mailbox gone")
    page.click("form[action='/admin/suppressions/add'] button")
    assert console.notice() == "Added."
    row = page.locator("tr", has=page.locator("td.mono", has_text="bounced@example.net")).first
    row.locator("input[name=reason]").fill("the mailbox is back")
    row.locator("button", has_text="Remove").click()
    assert console.notice() == "Removed."

    console.open("/admin/")
    page.select_option("#pause-scope", "*")
    page.fill("#pause-reason", "checking the templates")
    page.click("form[action='/admin/sending/pause'] button")
    assert console.notice() == "Sending is paused."
    assert "checking the templates" in page.locator("#sending").inner_text()
    page.click("form[action='/admin/sending/resume'] button")
    assert console.notice() == "Sending is resumed."

    console.open("/admin/audit")
    actions = page.locator("table.audit tbody td:nth-child(4)").all_inner_texts()
    assert actions[:6] == ["sending.resume", "sending.pause", "suppression.remove", "suppression.add",
                           "allowlist.add", "login"]
    assert "login.failed" in actions
    text = page.locator("table.audit").inner_text()
    for expected in ("ann@example.org", "bounced@example.net", "the mailbox is back", "checking the templates"):
        assert expected in text
    screenshot(page, "console-audit")

    console.open("/admin/reputation")
    assert page.locator("svg.chart-svg").count() == 5
    assert page.locator("svg.chart-svg rect.bar").count() == 5 * 30
    screenshot(page, "console-reputation")
    assert console.csp_errors == []  # no inline script or style anywhere


def test_forged_posts_are_refused(console: Console) -> None:
    page = console.page
    log_in(console)
    console.open("/admin/allowlist")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token

    # from the console's own page, with its cookie, but without the token
    status = page.evaluate("""async () => (await fetch('/admin/allowlist/add', {method: 'POST',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'},
        body: 'entry=mallory%40evil.example'})).status""")
    assert status == 403

    # a page elsewhere (a data: URL) posting a form to the console, even with the real token
    action = console.base + "/admin/allowlist/add"
    forged = (f"data:text/html,<form method=post action='{action}'><input name=entry value=mallory@evil.example>"
              f"<input name=csrf_token value={token}></form><script>document.forms[0].submit()</script>")
    with page.expect_response(lambda response: response.url == action) as answer:
        page.goto(forged)
    assert answer.value.status == 403

    console.open("/admin/allowlist")
    assert "mallory" not in page.content()
    console.open("/admin/audit")
    assert "mallory" not in page.content()
    assert "allowlist.add" not in page.locator("table.audit").inner_text()


def test_caught_html_is_shown_in_a_sandbox_where_scripts_do_not_run(console: Console) -> None:
    message = EmailMessage()
    message["From"] = "journeys@example.org"
    message["To"] = "ann@example.org"
    message["Subject"] = "Caught"
    message.set_content("The text part.")
    message.add_alternative("<p id=hello>Hello from the mail</p>"
                            "<script>document.getElementById('hello').textContent = 'script ran'</script>",
                            subtype="html")
    outbox = console.server.data_dir / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / "caught-1.eml").write_bytes(message.as_bytes())

    log_in(console)
    console.open("/admin/outbox/file/caught-1.eml")
    frame = console.page.frame_locator("iframe.mail-frame")
    hello = frame.locator("#hello")
    wait_until(lambda: hello.count() == 1, timeout=10, message="the sandboxed frame to render")
    assert hello.inner_text() == "Hello from the mail"
    assert console.page.locator("iframe.mail-frame").get_attribute("sandbox") == ""
    assert "The text part." in console.page.locator("#text").inner_text()
