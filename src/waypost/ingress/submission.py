"""The submission port (RFC 6409): the same recipient rules as the public port, but only for
clients that logged in, and logging in only over TLS.

Order on this port: EHLO, STARTTLS (required before anything but EHLO, NOOP and QUIT:
``530 5.7.0``), AUTH PLAIN or AUTH LOGIN (RFC 4954), then the usual transaction. MAIL
before AUTH gets ``530 5.7.0 Authentication required``. Authenticated clients still reach
only our own domain's mailboxes (a device writes to ``relay@``: apps/relay); the login is logged
with each accepted message and passed along in ``ReceivedMail.extra["auth_user"]``, which the
inbox records with the message (``inbound_messages.auth_user``) for the relay to know the device.

Failed logins are logged, counted (``LoginThrottle.failures``), answered only after
``failure_delay`` seconds, and once a client (see ``client_key``) has failed
``max_failures`` times within ``window`` seconds every AUTH from it gets ``421 4.7.0`` and
its connection is closed, without the password even being checked, until the oldest of
those failures leaves the window. A successful login does not clear the count, so one
valid account cannot be used to reset it while guessing others.

Users file (``smtp.submission_users_path``, default ``<data_dir>/submission-users``), one
user a line, edited with ``waypost submission passwd|remove|list``; blank lines and lines
starting with ``#`` are ignored::

    user:scrypt$n$r$p$salt_b64$hash_b64

``n``, ``r``, ``p`` are hashlib.scrypt's cost parameters (we write n=2**14, r=8, p=1),
``salt_b64`` 16 random bytes and ``hash_b64`` the 32-byte derived key, both standard
base64 with padding. User names are 1-64 printable characters without ``:`` or white
space; the password is UTF-8. The file is rewritten atomically (temporary file, fsync,
rename) with mode 0600, and read afresh at each login, so changes apply without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
import ssl
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from waypost.errors import WaypostError
from waypost.ingress.limits import ConnectionCeiling, ConnectionCounter, SessionLimits, client_key
from waypost.ingress.smtp import GuardedSMTP, IngressHandler, Spooling, listen
from waypost.passwords import decoy_hash, hash_password, verify_password
from waypost.pipeline.inbox import AcceptMail

if TYPE_CHECKING:
    from waypost.config import Settings

log = logging.getLogger(__name__)

USERS_FILE_NAME = "submission-users"
MIN_PASSWORD_LENGTH = 12
MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60.0
FAILURE_DELAY = 1.0

_USER = re.compile(r"[^\s:\x00-\x1f\x7f]{1,64}\Z")
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
LOCKED_OUT = "421 4.7.0 Too many failed logins from your address, try again later"


class UsersFileError(WaypostError):
    """The users file cannot be read or written, or a user name or password is unusable."""


def users_path(settings: Settings) -> Path:
    return settings.smtp.submission_users_path or settings.data_dir / USERS_FILE_NAME


def check_user_name(user: str) -> str:
    if not _USER.match(user):
        raise UsersFileError(f"{user!r}: a user name is 1-64 printable characters without ':' or spaces")
    return user


@dataclass
class SubmissionUsers:
    """The users file. Reads never raise for a missing file (no users); writes are atomic."""

    path: Path

    def read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as err:
            raise UsersFileError(f"cannot read {self.path}: {err}") from err
        users: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            user, sep, stored = line.partition(":")
            if not sep or not _USER.match(user) or not stored.startswith("scrypt$"):
                log.warning("%s line %d: not user:scrypt$..., ignored", self.path, number)
                continue
            users[user] = stored
        return users

    def verify(self, user: str, password: str) -> bool:
        stored = self.read().get(user)
        matched = verify_password(password, stored or decoy_hash())  # an unknown user takes as long
        return stored is not None and matched

    def set_password(self, user: str, password: str) -> bool:
        """Add ``user`` or change their password; True when the user is new."""
        check_user_name(user)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise UsersFileError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters "
                                 "(for a device, try: openssl rand -base64 24)")
        with self._locked():
            users = self.read()
            new = user not in users
            users[user] = hash_password(password)
            self._write(users)
        return new

    def remove(self, user: str) -> bool:
        with self._locked():
            users = self.read()
            if users.pop(user, None) is None:
                return False
            self._write(users)
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialises editors (two `waypost submission passwd` at once lose no change)."""
        import fcntl  # POSIX only, like the rest of `waypost serve`

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, users: dict[str, str]) -> None:
        text = "".join(f"{user}:{stored}\n" for user, stored in sorted(users.items()))
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class LoginThrottle:
    """Failed logins per client within a sliding window. Used only on the listener's loop."""

    def __init__(self, *, max_failures: int = MAX_FAILURES, window: float = FAILURE_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.failures = 0  # all failures since start, for metrics and tests
        self._recent: dict[str, deque[float]] = {}

    def locked(self, ip: str) -> bool:
        return self._count(client_key(ip)) >= self.max_failures

    def fail(self, ip: str) -> int:
        """Record a failure; return how many this client has within the window."""
        self.failures += 1
        key = client_key(ip)
        self._recent.setdefault(key, deque()).append(self.clock())
        if len(self._recent) > 10_000:  # many clients: forget the ones whose failures expired
            for other in [k for k in self._recent if not self._count(k)]:
                self._recent.pop(other, None)
        return self._count(key)

    def _count(self, key: str) -> int:
        recent = self._recent.get(key)
        if not recent:
            return 0
        horizon = self.clock() - self.window
        while recent and recent[0] <= horizon:
            recent.popleft()
        return len(recent)


# (user, password); None for a part that could not be decoded, which fails the login
Credentials = tuple[str, str | None]


class SubmissionHandler(IngressHandler):
    """The public port's hooks plus AUTH PLAIN and LOGIN against a ``SubmissionUsers`` file."""

    offers_auth = True
    ingress = "submission"

    def __init__(self, accept: AcceptMail, accepts_recipient: Callable[[str], bool],
                 is_local_domain: Callable[[str], bool], *, users: SubmissionUsers,
                 limits: SessionLimits | None = None, mail_domain: str | None = None,
                 throttle: LoginThrottle | None = None, failure_delay: float = FAILURE_DELAY,
                 spooling: Spooling | None = None, login_allowed: Callable[[str], bool] | None = None) -> None:
        """``login_allowed``: False for a user whose password is right but who may not log in now
        (a disabled relay device); answered as invalid credentials."""
        super().__init__(accept, accepts_recipient, is_local_domain, limits=limits, mail_domain=mail_domain,
                         spooling=spooling)
        self.users = users
        self.throttle = throttle or LoginThrottle()
        self.failure_delay = failure_delay
        self.login_allowed = login_allowed
        self._mechanisms: dict[str, Callable[[SMTP, list[str]], Awaitable[Credentials | None]]] = {
            "PLAIN": self._plain, "LOGIN": self._login}

    async def handle_AUTH(self, server: SMTP, session: Session, envelope: Envelope, args: list[str]) -> str | None:
        """aiosmtpd has checked TLS, EHLO and the mechanism name. None: already answered."""
        ip = session.peer[0] if isinstance(session.peer, tuple) else ""
        if self.throttle.locked(ip):
            await self._hang_up(server, ip)
            return None
        credentials = await self._mechanisms[args[0].upper()](server, args)
        if credentials is None:
            return None
        user, password = credentials
        if password is not None and await asyncio.get_running_loop().run_in_executor(
                None, self._may_log_in, user, password):
            session.authenticated = True
            session.auth_data = user  # type: ignore[assignment]  # aiosmtpd declares it None; any value is allowed
            log.info("submission login by %r from %s", user, ip)
            return AUTH_OK
        count = self.throttle.fail(ip)
        log.warning("submission login failed for %r from %s (%d in the last %.0f s)",
                    user[:64], ip, count, self.throttle.window)
        await asyncio.sleep(self.failure_delay)
        if count >= self.throttle.max_failures:
            await self._hang_up(server, ip)
            return None
        return AUTH_INVALID

    def _may_log_in(self, user: str, password: str) -> bool:
        return self.users.verify(user, password) and (self.login_allowed is None or self.login_allowed(user))

    async def _hang_up(self, server: SMTP, ip: str) -> None:
        log.warning("submission: %s is locked out after repeated failed logins", ip)
        await server.push(LOCKED_OUT)
        if server.transport is not None:
            server.transport.close()

    async def _plain(self, server: SMTP, args: list[str]) -> Credentials | None:
        """RFC 4616: [authzid] NUL authcid NUL passwd. Acting as someone else is not offered."""
        response = await _response(server, args, "")
        if response is None:
            return None
        parts = response.split(b"\x00")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return None
        authzid, user, password = (_text(part) for part in parts)
        if authzid and authzid != user:
            password = None
        return user or "", password

    async def _login(self, server: SMTP, args: list[str]) -> Credentials | None:
        user = await _response(server, args, "Username:")
        if user is None:
            return None
        password = await _challenge(server, "Password:")
        if password is None:
            return None
        return _text(user) or "", _text(password)

    def extra(self, session: Session) -> dict[str, str]:
        return {"auth_user": str(session.auth_data)} if session.authenticated else {}

    def accepted(self, message_id: str, session: Session, envelope: Envelope) -> None:
        log.info("submission: message %s from %s sent by user %r", message_id, envelope.mail_from,
                 session.auth_data)


async def _response(server: SMTP, args: list[str], challenge: str) -> bytes | None:
    """The initial response given with AUTH (``=`` is the empty one), or the answer to a
    challenge; None once the client was told why not."""
    if len(args) == 1:
        return await _challenge(server, challenge)
    if args[1] == "=":
        return b""
    try:
        return base64.b64decode(args[1], validate=True)
    except binascii.Error:
        await server.push("501 5.5.2 Can't decode base64")
        return None


async def _challenge(server: SMTP, challenge: str) -> bytes | None:
    answer = await server.challenge_auth(challenge)  # answers 501 itself for "*" and bad base64
    return None if answer is MISSING else answer


def _text(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def start_submission_server(handler: SubmissionHandler, *, host: str, port: int, hostname: str,
                                  max_message_size: int, tls_context: ssl.SSLContext,
                                  ceiling: ConnectionCeiling | None = None) -> asyncio.Server:
    """Listen for authenticated submission on host:port (0 picks a free port). TLS is
    required before AUTH and before any mail command. ``ceiling``: as for
    ``start_smtp_server``, the same object for both listeners."""
    limits = handler.limits
    connections = ConnectionCounter(limits.max_connections_per_ip, limits.unlimited_networks)

    def factory() -> SMTP:
        return GuardedSMTP(handler, connections=connections, ceiling=ceiling, data_size_limit=max_message_size,
                           hostname=hostname, ident="Waypost ESMTP submission", decode_data=False,
                           enable_SMTPUTF8=True, tls_context=tls_context, require_starttls=True,
                           auth_required=True, auth_require_tls=True)

    return await listen(factory, host=host, port=port)
