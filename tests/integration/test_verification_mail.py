"""Verification mail is captured, never clicked: mail to a verification mailbox on mail_domain
(hostmaster@, verify@…) is accepted over SMTP from anyone, kept in the operator inbox marked as a
verification with its confirmation link, and shown by `waypost inbox list|show` and the console.
Nothing in Waypost fetches the link: it points at a loopback server that records every
connection, and none comes. On SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from tests.integration.test_admin_console import Console, console, logged_in  # noqa: F401  (fixture)
from tests.integration.test_operator_mail import (
    inbound_rows,
    mail_to,
    operator_runtime,  # noqa: F401  (fixture)
    send,
)
from tests.integration.test_pipeline import caught
from tests.integration.test_smtp_refusal import rows, serve, wired  # noqa: F401  (fixtures)
from tests.integration.test_smtp_refusal import send as send_data
from tests.support.verification_mail import SES_SENDER, registrar_confirmation, ses_verification
from waypost.cli import cli


class Tripwire(socketserver.ThreadingTCPServer):
    """A loopback server that records every connection made to it: a fetched link would show."""

    daemon_threads = True

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.hit = threading.Event()
        super().__init__(("127.0.0.1", 0), _Record)

    def link(self, path: str) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}{path}"


class _Record(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, Tripwire)
        server.hits.append(self.client_address[0])
        server.hit.set()


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    server = Tripwire()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def assert_never_fetched(tripwire: Tripwire) -> None:
    assert tripwire.hits == []
    # the tripwire itself works: a connection made on purpose is recorded
    with socket.create_connection(("127.0.0.1", tripwire.server_address[1]), timeout=5):
        pass
    assert tripwire.hit.wait(5) and tripwire.hits == ["127.0.0.1"]


def cli_output(runtime: Any, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(runtime.settings.data_dir)],
                                env={"WAYPOST_DATABASE__URL": runtime.settings.database_url})
    assert result.exit_code == 0, result.output
    return result.output


SAMPLES = {
    "ses": (lambda to, link: ses_verification(to, link), "verify@waypost.test", SES_SENDER,
            "/?Context=111122223333&Operation=ConfirmVerification&X-Amz-Signature=0f1e"),
    "registrar": (lambda to, link: registrar_confirmation(to, link), "hostmaster@waypost.test",
                  "no-reply@registrar.example", "/confirm?token=4f9c2a&domain=waypost.test"),
}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_verification_mail_is_captured_with_its_link_and_never_followed(
        operator_runtime: Any, tripwire: Tripwire, sample: str) -> None:  # noqa: F811
    build, rcpt, sender, path = SAMPLES[sample]
    link = tripwire.link(path)
    runtime = operator_runtime()
    send(runtime, rcpt, build(rcpt, link), mail_from=sender)

    (row,) = inbound_rows(runtime)
    assert row.status == "processed"
    assert row.reason == f"kept for the operator ({rcpt}); verification link: {link}"
    assert caught(runtime) == []  # nobody is answered

    listed = cli_output(runtime, "inbox", "list", "--verification")
    assert row.id in listed and f"verification link: {link}" in listed and sender in listed
    shown = cli_output(runtime, "inbox", "show", row.id)
    assert f"verification link (not followed; open it yourself if you asked for it): {link}" in shown
    assert_never_fetched(tripwire)


def test_the_verification_filter_leaves_out_other_mail(operator_runtime: Any) -> None:  # noqa: F811
    runtime = operator_runtime()
    send(runtime, "abuse@waypost.test", mail_to("abuse@waypost.test", subject="Verify your account now"))
    send(runtime, "webmaster@waypost.test", mail_to("webmaster@waypost.test", subject="Hello there"))
    assert [r.reason for r in inbound_rows(runtime)] == [
        "kept for the operator (abuse@waypost.test)",  # reports quote phishing: never a verification
        "kept for the operator (webmaster@waypost.test)"]  # https link, but nothing asks to confirm
    assert "verification link" not in cli_output(runtime, "inbox", "list")
    assert cli_output(runtime, "inbox", "list", "--verification").strip() == "no verification mail"


def test_the_setting_names_the_mailboxes_and_an_apps_mailbox_stays_the_apps(operator_runtime: Any) -> None:  # noqa: F811
    runtime = operator_runtime(verification_mailboxes=["hostmaster", "journeys"])
    router = runtime.router
    assert router.accepts("hostmaster@waypost.test") and router.accepts("HostMaster+x@waypost.test")
    assert not router.accepts("webmaster@waypost.test") and not router.accepts("nobody@waypost.test")
    app, _ = router.app_for(["journeys@waypost.test"])
    assert app.name != "operator-inbox"  # journeys@ is still the journeys app's
    default = operator_runtime()
    assert all(default.router.accepts(f"{box}@waypost.test") for box in ("admin", "administrator", "no-reply"))
    assert not default.router.accepts("hostmaster@elsewhere.example")


def test_the_console_shows_the_link_as_text(console: Callable[..., Console],  # noqa: F811
                                            tripwire: Tripwire) -> None:
    c = console()
    link = tripwire.link("/?Context=1&Operation=ConfirmVerification")
    send(c.runtime, "verify@waypost.test", ses_verification("verify@waypost.test", link), mail_from=SES_SENDER)
    logged_in(c)
    escaped = link.replace("&", "&amp;")
    page = c.client.get("/admin/inbox")
    assert page.status_code == 200 and "Email Address Verification Request" in page.text
    assert f"<code class=\"mono\">{escaped}</code>" in page.text and f'href="{escaped}"' not in page.text
    (row,) = inbound_rows(c.runtime)
    one = c.client.get(f"/admin/inbox/{row.id}")
    assert one.status_code == 200 and f"<code class=\"mono\" data-verification>{escaped}</code>" in one.text
    assert_never_fetched(tripwire)


def test_ses_verification_for_an_apps_address_is_refused_so_verify_a_verification_mailbox(
        wired: Callable[..., Any], serve: Callable[..., Any], tripwire: Tripwire) -> None:  # noqa: F811
    # journeys@ takes mail from members only: SES's mail to verify it is refused during the session
    # (SES then shows the address as not verified), which is why docs/readiness.md has the operator
    # verify the domain, or an address such as verify@, never an app's mailbox
    runtime, listener = serve(wired())
    raw = ses_verification("journeys@waypost.test", tripwire.link("/?Operation=ConfirmVerification"))
    assert send_data(listener, raw, ["journeys@waypost.test"], mail_from=SES_SENDER) == b"550 5.7.1"
    (row,) = rows(runtime)
    assert row.status == "refused" and row.reason.startswith(f"sender-not-allowlisted: {SES_SENDER}")
    assert send_data(listener, ses_verification("verify@waypost.test", tripwire.link("/v")),
                     ["verify@waypost.test"], mail_from=SES_SENDER) == b"250 2.0.0"
    assert_never_fetched(tripwire)
