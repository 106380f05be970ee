"""Confirmation links are read out of verification mail, https only, from text and HTML parts,
best first; mail that does not ask to confirm anything yields none."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support.verification_mail import REGISTRAR_LINK, SES_LINK, registrar_confirmation, ses_verification
from waypost.config import load_settings
from waypost.errors import ConfigError
from waypost.mail.confirmation import LINK_LENGTH, confirmation_links


def plain(subject: str, body: str, attachment: bytes | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = "someone@example.net"
    message["Subject"] = subject
    message.set_content(body)
    if attachment is not None:
        message.add_attachment(attachment, maintype="text", subtype="plain", filename="note.txt")
    return message.as_bytes()


@pytest.mark.parametrize(("raw", "expected"), [
    (ses_verification("verify@waypost.test"), (SES_LINK,)),
    # the link is only in the HTML href; the help link follows it; the http link is never taken
    (registrar_confirmation("hostmaster@waypost.test"), (REGISTRAR_LINK, "https://registrar.example/help")),
    (plain("Welcome", "Activate your account: https://p.example/a?k=1. Thanks!"), ("https://p.example/a?k=1",)),
    (plain("Please verify", "Go to (https://p.example/go) now"), ("https://p.example/go",)),
    (plain("Your server sends spam", "Look: https://evil.example/x"), ()),  # asks nothing
    (plain("Please confirm", "http://p.example/confirm?t=1"), ()),  # not https
    (plain("Please confirm", f"https://p.example/{'a' * LINK_LENGTH}"), ()),  # no usable link
    (plain("Please confirm", "no link here", attachment=b"https://p.example/confirm"), ()),  # attachments unread
    (b"\x00\xff not a message", ()),
])
def test_confirmation_links(raw: bytes, expected: tuple[str, ...]) -> None:
    assert confirmation_links(raw) == expected


def test_links_that_say_confirm_come_first() -> None:
    raw = plain("Confirm your address", "Home: https://p.example/\nConfirm: https://p.example/confirm/9\n")
    assert confirmation_links(raw) == ("https://p.example/confirm/9", "https://p.example/")


def test_the_verification_mailboxes_setting_reads_a_list_and_refuses_addresses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYPOST_VERIFICATION_MAILBOXES", "Hostmaster, verify  admin")
    assert load_settings(tmp_path).verification_mailboxes == ("hostmaster", "verify", "admin")
    monkeypatch.setenv("WAYPOST_VERIFICATION_MAILBOXES", "hostmaster@waypost.test")
    with pytest.raises(ConfigError, match="verification_mailboxes"):
        load_settings(tmp_path)
