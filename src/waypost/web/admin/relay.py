"""The device relay in the console (apps/relay, docs/relay.md): devices, the links of relayed
messages with their downloads, and buttons that revoke a link (it then answers 410), add a device
(its password is shown once, on the page that answers the form) and disable or enable one."""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from waypost.apps.relay.devices import DeviceError, Devices, NewDevice
from waypost.apps.relay.links import Links
from waypost.clock import utcnow
from waypost.ingress.submission import SubmissionUsers, users_path
from waypost.web.admin.console import Call, Console
from waypost.web.admin.forms import Form

PAGE = 200
_LIST_SEPARATORS = re.compile(r"[\s,;]+")
# the device form's number fields and their defaults (as `waypost relay device add`)
_NUMBERS = {"retention_days": 30, "link_days": 7, "max_mb": 25}


def relay_routes(console: Console) -> list[Route]:
    devices = Devices(console.engine, SubmissionUsers(users_path(console.settings)),
                      max_retention_days=console.settings.relay.max_retention_days)
    links = Links(console.engine, console.runtime.blobs)

    def show(call: Call, extra: dict[str, Any] | None = None, status: int = 200) -> Response:
        device = call.query.get("device") or None
        return console.render(call, "admin/relay.html", {
            "devices": devices.list(), "links": links.list(device=device, limit=PAGE), "device": device,
            "now": utcnow(), "mailbox": f"{console.settings.relay.mailbox}+NAME@{console.settings.mail_domain}",
            "form": {}, "defaults": _NUMBERS, **(extra or {})}, status)

    def revoke(call: Call) -> Response:
        link_id = call.form.text("link_id", 16)
        if not link_id:
            return console.problem(call, "Say which link to revoke.")
        count = links.revoke(link_id=link_id, actor=call.session.actor)
        return console.redirect("/admin/relay", "revoked" if count else "not-found")

    def add(call: Call) -> Response:
        """Answered with the page itself, never a redirect: the password must not reach a URL or a log."""
        try:
            added, password = devices.add(new_device(call.form), actor=call.session.actor)
        except DeviceError as err:  # the form comes back filled in, with what was wrong
            entered = {key: values[0] for key, values in call.form.fields.items() if values}
            return show(call, {"error": str(err), "form": entered}, 400)
        return show(call, {"added": added, "password": password,
                           "notice": f"Device {added.name} added. Its password is shown only now."})

    def switch(enable: bool) -> Any:
        def handler(call: Call) -> Response:
            name = call.form.text("name", 48)
            try:
                if enable:
                    devices.enable(name, actor=call.session.actor)
                else:
                    devices.disable(name, actor=call.session.actor)
            except DeviceError as err:
                return show(call, {"error": str(err)}, 400)
            return show(call, {"notice": f"Device {name} {'enabled' if enable else 'disabled'}."})
        return handler

    return [Route("/relay", console.page(show), methods=["GET"]),
            Route("/relay/revoke", console.action(revoke), methods=["POST"]),
            Route("/relay/devices", console.action(add), methods=["POST"]),
            Route("/relay/disable", console.action(switch(enable=False)), methods=["POST"]),
            Route("/relay/enable", console.action(switch(enable=True)), methods=["POST"])]


def new_device(form: Form) -> NewDevice:
    """The console's device form as a NewDevice; raises DeviceError for a number that is not one."""
    numbers = {}
    for field, default in _NUMBERS.items():
        value = form.text(field, 12) or str(default)
        if not value.isdigit():
            raise DeviceError(f"{field.replace('_', ' ')}: {value!r} is not a whole number")
        numbers[field] = int(value)
    return NewDevice(form.text("name", 64), form.text("owner", 320), _entries(form.text("allow")),
                     _entries(form.text("default_to")), sender=form.text("sender", 320) or None, **numbers)


def _entries(text: str) -> tuple[str, ...]:
    return tuple(entry for entry in _LIST_SEPARATORS.split(text) if entry)
