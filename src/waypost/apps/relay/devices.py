"""Relay devices: who owns each, whom it may mail, how long its files and links last.

A device logs in to the submission port as its own user (the device's name) in the submission
users file (ingress/submission.py); its password is made here, printed once and never stored
in clear; a disabled device keeps it but is refused at AUTH (``login_allowed``), so enabling it
again needs no new password. Its mailbox ``<relay.mailbox>+<name>@<mail_domain>`` serves devices
that can only send to an address: from ``trusted_networks``, or from anywhere (the SES ingress)
with the device's registered ``sender`` as From and that mail authenticated for its domain
(handler.py; docs/relay.md)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from waypost import audit
from waypost.errors import WaypostError
from waypost.ingress.submission import SubmissionUsers
from waypost.mail.addresses import AddressError, normalise_address
from waypost.store.models import relay_devices, utcnow

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,47}\Z")
_DOMAIN = re.compile(r"(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")
PASSWORD_BYTES = 24  # 192 bits, 32 characters
# audit log actions, recorded when a person (the console's operator) changes a device
ADD_ACTION, DISABLE_ACTION, ENABLE_ACTION = "relay.device.add", "relay.device.disable", "relay.device.enable"
EDIT_ACTION = "relay.device.edit"


class DeviceError(WaypostError):
    """A device name, address or setting is unusable, or the device is unknown or exists already."""


@dataclass(frozen=True)
class Device:
    name: str
    owner: str
    allow: tuple[str, ...]  # addresses (a@x.example) and domains (x.example)
    default_to: tuple[str, ...]
    retention_days: int
    link_days: int
    max_mb: int
    submission_user: str
    created_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    sender: str | None = None  # the From of its mail to the mailbox from outside trusted networks

    def allows(self, address: str) -> bool:
        """Whether ``address`` is on the allowlist: the address itself or its whole domain."""
        domain = address.rpartition("@")[2]
        return address in self.allow or domain in self.allow

    def mailbox(self, relay_mailbox: str, mail_domain: str) -> str:
        return f"{relay_mailbox}+{self.name}@{mail_domain}"


@dataclass(frozen=True)
class NewDevice:
    name: str
    owner: str
    allow: tuple[str, ...] = ()
    default_to: tuple[str, ...] = ()
    retention_days: int = 30
    link_days: int = 7
    max_mb: int = 25
    sender: str | None = None


@dataclass(frozen=True)
class DeviceChange:
    """What ``Devices.edit`` changes; None or empty leaves a setting as it is. ``allow`` replaces
    the allowlist; ``allow_add`` and ``allow_remove`` adjust it (after ``allow``)."""

    owner: str | None = None
    allow: tuple[str, ...] | None = None
    allow_add: tuple[str, ...] = ()
    allow_remove: tuple[str, ...] = ()
    default_to: tuple[str, ...] | None = None
    retention_days: int | None = None
    link_days: int | None = None
    max_mb: int | None = None


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise DeviceError(f"{name!r}: a device name is 1-48 of a-z, 0-9 and '-', starting with a letter or digit")
    return name


def allow_entry(value: str) -> str:
    """An allowlist entry: an address, or a domain (``x.example`` or ``@x.example``)."""
    value = value.strip().lower().removeprefix("@")
    if "@" in value:
        return address(value)
    if not _DOMAIN.match(value):
        raise DeviceError(f"{value!r} is neither an address nor a domain")
    return value


def address(value: str) -> str:
    try:
        return normalise_address(value.strip())
    except AddressError as err:
        raise DeviceError(f"{value!r} is not a usable address: {err}") from err


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


class Devices:
    """The devices table, and each device's login in the submission users file."""

    def __init__(self, engine: Engine, users: SubmissionUsers, *, max_retention_days: int = 365) -> None:
        self.engine = engine
        self.users = users
        # relay.max_retention_days: the bucket's lifecycle rule deletes relay files after it (AWS)
        self.max_retention_days = max_retention_days

    def add(self, new: NewDevice, *, actor: str | None = None) -> tuple[Device, str]:
        """Register a device; returns it and its password (shown once). Raises DeviceError.
        ``actor``: who did it, for the audit log (committed with the device)."""
        row = self._checked_row(new)
        if new.name in self.users.read():
            raise DeviceError(f"a submission user {new.name!r} exists already; pick another device name")
        try:
            with self.engine.begin() as conn:
                conn.execute(relay_devices.insert().values(**row))
                _audit(conn, ADD_ACTION, actor, new.name)
                password = new_password()
                self.users.set_password(new.name, password)  # last: a failed insert leaves no login
        except IntegrityError as err:
            raise DeviceError(f"device {new.name!r} exists already") from err
        return self.get(new.name), password

    def _checked_row(self, new: NewDevice) -> dict[str, object]:
        """The table row of ``new``, checked (``_row``) and within relay.max_retention_days."""
        row = _row(new)
        if new.retention_days > self.max_retention_days:
            raise DeviceError(f"retention days cannot exceed {self.max_retention_days} (relay.max_retention_days: "
                              "raise it first, and redeploy the stack's lifecycle rule in AWS mode)")
        return row

    def get(self, name: str) -> Device:
        with self.engine.connect() as conn:
            found = find(conn, name)
        if found is None:
            raise DeviceError(f"no device {name!r} (see: waypost relay device list)")
        return found

    def list(self) -> list[Device]:
        with self.engine.connect() as conn:
            return [_device(row) for row in conn.execute(sa.select(relay_devices).order_by(relay_devices.c.name))]

    def disable(self, name: str, reason: str = "disabled by the operator", *, actor: str | None = None) -> Device:
        """Refuse the device's mail and its login (535 at AUTH) from now on; its links keep working."""
        self.get(name)
        with self.engine.begin() as conn:
            disable(conn, name, reason)
            _audit(conn, DISABLE_ACTION, actor, name)
        return self.get(name)

    def enable(self, name: str, *, actor: str | None = None) -> Device:
        """Undo ``disable`` (by the operator or the spike check): the same password works again."""
        self.get(name)
        with self.engine.begin() as conn:
            _enable(conn, name)
            _audit(conn, ENABLE_ACTION, actor, name)
        return self.get(name)

    def login_allowed(self, user: str) -> bool:
        return login_allowed(self.engine, user)

    def edit(self, name: str, change: DeviceChange, *, actor: str | None = None) -> Device:
        """Change a device's owner, allowlist, default recipients or limits in place, checked as
        ``add`` checks them; its login, password, state and mailbox stay. The new limits apply
        to mail relayed from now on: links already mailed keep the expiry and retention they got."""
        device = self.get(name)
        allow = tuple(map(allow_entry, change.allow)) if change.allow is not None else device.allow
        removed = set(map(allow_entry, change.allow_remove))
        missing = sorted(removed - set(allow))
        if missing:
            raise DeviceError(f"not on {name}'s allowlist: {', '.join(missing)}")
        allow = (*[entry for entry in allow if entry not in removed], *change.allow_add)
        given: dict[str, Any] = {"owner": change.owner, "default_to": change.default_to,
                                 "retention_days": change.retention_days, "link_days": change.link_days,
                                 "max_mb": change.max_mb}
        row = self._checked_row(replace(
            NewDevice(name, device.owner, allow, device.default_to, device.retention_days, device.link_days,
                      device.max_mb, device.sender),
            **{key: value for key, value in given.items() if value is not None}))
        with self.engine.begin() as conn:
            conn.execute(relay_devices.update().where(relay_devices.c.name == name).values(
                **{key: row[key] for key in ("owner", "allow", "default_to", "retention_days", "link_days", "max_mb")}))
            _audit(conn, EDIT_ACTION, actor, name)
        return self.get(name)

    def set_sender(self, name: str, sender: str | None) -> Device:
        """The From address the device mails its mailbox with from outside; None: none."""
        self.get(name)
        with self.engine.begin() as conn:
            conn.execute(relay_devices.update().where(relay_devices.c.name == name)
                         .values(sender=address(sender) if sender else None))
        return self.get(name)

    def remove(self, name: str) -> None:
        """Forget the device and its login; its links and stored files stay until retention."""
        device = self.get(name)
        self.users.remove(device.submission_user)
        with self.engine.begin() as conn:
            conn.execute(relay_devices.delete().where(relay_devices.c.name == name))

    def rotate_password(self, name: str) -> str:
        """A new password for the device (shown once); a disabled device is enabled again."""
        device = self.get(name)
        password = new_password()
        self.users.set_password(device.submission_user, password)
        with self.engine.begin() as conn:
            _enable(conn, name)
        return password


def login_allowed(engine: Engine, user: str) -> bool:
    """False for the submission login of a disabled device; True for any other user (the
    password is the users file's business)."""
    with engine.connect() as conn:
        found = find_by_user(conn, user)
    return found is None or found.disabled_at is None


def find(conn: Connection, name: str) -> Device | None:
    row = conn.execute(sa.select(relay_devices).where(relay_devices.c.name == name)).first()
    return _device(row) if row is not None else None


def find_by_user(conn: Connection, user: str) -> Device | None:
    row = conn.execute(sa.select(relay_devices).where(relay_devices.c.submission_user == user)).first()
    return _device(row) if row is not None else None


def disable(conn: Connection, name: str, reason: str) -> None:
    conn.execute(relay_devices.update().where(relay_devices.c.name == name, relay_devices.c.disabled_at.is_(None))
                 .values(disabled_at=utcnow(), disabled_reason=reason[:255]))


def _audit(conn: Connection, action: str, actor: str | None, name: str) -> None:
    if actor is not None:
        audit.record(conn, action, actor=actor, target=name)


def _enable(conn: Connection, name: str) -> None:
    conn.execute(relay_devices.update().where(relay_devices.c.name == name)
                 .values(disabled_at=None, disabled_reason=None))


def _row(new: NewDevice) -> dict[str, object]:
    for what, days in (("retention days", new.retention_days), ("link days", new.link_days),
                       ("max MB", new.max_mb)):
        if days < 1:
            raise DeviceError(f"{what} must be at least 1")
    if new.link_days > new.retention_days:
        raise DeviceError("link days cannot exceed retention days (the file would be gone first)")
    allow, default_to = _unique(map(allow_entry, new.allow)), _unique(map(address, new.default_to))
    outside = [to for to in default_to if to not in allow and to.rpartition("@")[2] not in allow]
    if outside:
        raise DeviceError(f"default recipients must be allowed too (add --allow): {', '.join(outside)}")
    return {"name": check_name(new.name), "owner": address(new.owner), "allow": allow, "default_to": default_to,
            "retention_days": new.retention_days, "link_days": new.link_days, "max_mb": new.max_mb,
            "submission_user": new.name, "created_at": utcnow(),
            "sender": address(new.sender) if new.sender else None}


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _device(row: sa.Row) -> Device:
    return Device(row.name, row.owner, tuple(row.allow), tuple(row.default_to), row.retention_days, row.link_days,
                  row.max_mb, row.submission_user, row.created_at, row.disabled_at, row.disabled_reason,
                  row.sender)


def describe(device: Device, mailbox: str) -> Sequence[str]:
    """Lines for `waypost relay device show`."""
    state = f"disabled {device.disabled_at:%Y-%m-%d %H:%M} UTC ({device.disabled_reason})" \
        if device.disabled_at else "enabled"
    return (f"device:        {device.name} ({state})", f"owner:         {device.owner}",
            f"login:         {device.submission_user} (submission port)", f"mailbox:       {mailbox}",
            f"mailbox from:  {device.sender or '(trusted networks only)'}",
            f"allow:         {', '.join(device.allow) or '(nobody)'}",
            f"default to:    {', '.join(device.default_to) or '(none)'}",
            f"retention:     {device.retention_days} days", f"links:         {device.link_days} days",
            f"max size:      {device.max_mb} MB")
