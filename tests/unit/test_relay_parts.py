"""The device relay's pure parts: the recipients line, allowlist matching, file names as served."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from waypost.apps.relay.devices import Device, DeviceError, allow_entry
from waypost.apps.relay.links import safe_filename, served_type
from waypost.apps.relay.mailparts import recipients_in, type_allowed
from waypost.web.relay_links import content_disposition


def device(*allow: str) -> Device:
    return Device("scanner", "olga@owner.example", allow, (), 30, 7, 25, "scanner", datetime.now(UTC))


@pytest.mark.parametrize(("text", "named", "left"), [
    ("To: a@x.example, b@y.example\nHello", ["a@x.example", "b@y.example"], "Hello"),
    ("Report attached.\nrecipients: a@x.example; b@y.example\nBye", ["a@x.example", "b@y.example"],
     "Report attached.\nBye"),
    ("Hello, no line here", None, "Hello, no line here"),
    ("To:\nHello", [], "Hello"),
])
def test_the_first_recipients_line_names_the_recipients(text: str, named: list[str] | None, left: str) -> None:
    assert recipients_in(text) == (named, left)


def test_the_allowlist_takes_addresses_and_whole_domains_only() -> None:
    found = device(allow_entry("Bea@Example.org"), allow_entry("@partner.example"))
    assert found.allows("bea@example.org") and found.allows("carl@partner.example")
    assert not found.allows("eve@example.org") and not found.allows("x@sub.partner.example")
    with pytest.raises(DeviceError):
        allow_entry("not a domain")


@pytest.mark.parametrize(("name", "saved"), [
    ("../../etc/passwd", "_.._etc_passwd"), (".htaccess", "htaccess"), ("scan 1.pdf", "scan 1.pdf"),
    ("rapport\u202egpj.exe", "rapport_gpj.exe"), (None, "attachment-1"), ("...", "attachment-1"),
])
def test_file_names_are_served_without_paths_or_tricks(name: str | None, saved: str) -> None:
    assert safe_filename(name, "attachment-1") == saved


def test_the_disposition_is_always_a_download_with_an_ascii_fallback() -> None:
    value = content_disposition("Überweisung 1.pdf")
    assert value == "attachment; filename=\"_berweisung 1.pdf\"; filename*=UTF-8''%C3%9Cberweisung%201.pdf"


def test_types_a_browser_could_run_are_served_as_bytes() -> None:
    assert served_type("text/html") == "application/octet-stream"
    assert served_type("image/svg+xml") == "application/octet-stream"
    assert served_type("application/pdf") == "application/pdf"
    assert type_allowed("image/png", ("image/*",)) and not type_allowed("text/html", ("image/*", "text/plain"))
