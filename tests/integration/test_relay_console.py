"""The device relay's console page: devices, links with their downloads, and the revoke button."""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.testclient import TestClient

from tests.integration.test_admin_console import Console, console, logged_in, post  # noqa: F401  (fixture)
from waypost.apps.relay import links
from waypost.apps.relay.devices import Devices, NewDevice
from waypost.ingress.submission import SubmissionUsers, users_path
from waypost.link_tokens import new_token


def test_the_console_lists_devices_and_links_and_revokes_one(console: Callable[..., Console]) -> None:  # noqa: F811
    page = console()
    runtime = page.runtime
    Devices(runtime.engine, SubmissionUsers(users_path(runtime.settings))).add(
        NewDevice("scanner", "olga@owner.example", allow=("example.org",)))
    runtime.blobs.put("relay/m1/1", b"%PDF-1.4 scan")
    made = [links.NewLink(new_token(), f"link{n}", f"r{n}@example.org", "relay/m1/1", "scan.pdf",
                          "application/pdf", 13) for n in (1, 2)]
    with runtime.engine.begin() as conn:
        links.insert(conn, "scanner", "m1", made, link_days=7, retention_days=30)
    token = logged_in(page)
    shown = page.client.get("/admin/relay")
    assert shown.status_code == 200 and "scanner" in shown.text and "r1@example.org" in shown.text
    assert post(page.client, "/admin/relay/revoke", token, link_id="link1").status_code == 303
    visitor = TestClient(page.app, client=("198.51.100.7", 50002))
    assert visitor.get(f"/r/{made[0].token}").status_code == 410
    assert visitor.get(f"/r/{made[1].token}").content == b"%PDF-1.4 scan"
    assert post(page.client, "/admin/relay/revoke", None, link_id="link2").status_code == 403, "CSRF"
    assert [e.action for e in page.actions()][-1] == "relay.download"
    assert any(e.action == "relay.revoke" and e.target == "link1" for e in page.actions())


def test_the_console_adds_a_device_shows_its_password_once_and_disables_and_enables_it(
        console: Callable[..., Console]) -> None:  # noqa: F811
    page = console()
    users = SubmissionUsers(users_path(page.runtime.settings))
    devices = Devices(page.runtime.engine, users)
    token = logged_in(page)
    fields = {"name": "cam-7", "owner": "olga@owner.example", "allow": "bea@example.org, partner.example",
              "default_to": "bea@example.org", "sender": "cam7@owner.example", "retention_days": "10",
              "link_days": "3", "max_mb": "5"}

    wrong = post(page.client, "/admin/relay/devices", token, **{**fields, "default_to": "eve@evil.example"})
    assert wrong.status_code == 400 and "eve@evil.example" in wrong.text
    assert 'value="olga@owner.example"' in wrong.text, "the form comes back filled in"
    assert devices.list() == [] and "cam-7" not in users.read()
    assert post(page.client, "/admin/relay/devices", token, **{**fields, "link_days": "three"}).status_code == 400
    assert post(page.client, "/admin/relay/devices", None, **fields).status_code == 403, "CSRF"
    assert devices.list() == []

    added = post(page.client, "/admin/relay/devices", token, **fields)
    assert added.status_code == 200
    password = re.search(r'id="new-password">([^<]+)<', added.text).group(1)  # type: ignore[union-attr]
    assert users.verify("cam-7", password)
    device = devices.get("cam-7")
    assert (device.allow, device.default_to, device.sender) == (("bea@example.org", "partner.example"),
                                                                ("bea@example.org",), "cam7@owner.example")
    assert (device.retention_days, device.link_days, device.max_mb) == (10, 3, 5)
    assert password not in page.client.get("/admin/relay").text, "shown once"
    assert post(page.client, "/admin/relay/devices", token, **fields).status_code == 400, "exists already"

    assert post(page.client, "/admin/relay/disable", None, name="cam-7").status_code == 403, "CSRF"
    assert devices.get("cam-7").disabled_at is None
    assert post(page.client, "/admin/relay/disable", token, name="cam-7").status_code == 200
    assert devices.get("cam-7").disabled_at is not None and not devices.login_allowed("cam-7")
    assert post(page.client, "/admin/relay/enable", token, name="cam-7").status_code == 200
    assert devices.get("cam-7").disabled_at is None and devices.login_allowed("cam-7")
    assert post(page.client, "/admin/relay/enable", token, name="nosuch").status_code == 400
    done = [(e.action, e.target) for e in page.actions()]
    assert [entry for entry in done if entry[0].startswith("relay.device")] == [
        ("relay.device.add", "cam-7"), ("relay.device.disable", "cam-7"), ("relay.device.enable", "cam-7")]
