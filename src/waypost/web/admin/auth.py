"""Logging in to the console: the admin token or the password, a signed session cookie, and
the brakes on guessing.

- **Who may log in.** Anyone who knows ``web.admin_token`` (actor ``token``) or the password
  whose scrypt hash is in ``settings.admin_password_file`` (actor ``admin``). One field takes
  either; both checks always run, so the time taken says nothing about which one exists.
- **The session** is a cookie signed with the signing keys (itsdangerous, its own salt):
  actor, a random session id, the CSRF token, and a fingerprint of the credential it was
  issued for, so a new password or token ends every session made with the old one. It
  expires after ``web.admin_session_minutes`` whatever the browser does. ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/admin``, and ``Secure`` when ``base_url`` is https.
- **Logout** revokes the session id in this process and records ``logout`` in the audit log;
  the revocations of the last session lifetime are read back from the audit log at start.
- **Guessing** costs a delay per failure, and five failures from one client (an IPv6 client
  by its /64) within 15 minutes lock it out until the oldest leaves the window. Each failure
  is audited as ``login.failed`` with the client's address; attempts while locked out are
  logged, not audited, so they cannot flood the audit log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from waypost import audit
from waypost.clock import utcnow
from waypost.config import Settings
from waypost.transactions import Database, reading, transaction
from waypost.web.admin import csrf
from waypost.web.admin.forms import read_form
from waypost.web.admin.password import decoy_hash, read_hash, verify_password

if TYPE_CHECKING:
    from waypost.web.admin.console import Call, Console

log = logging.getLogger(__name__)

COOKIE = "waypost_admin"
LOGIN_COOKIE = "waypost_admin_login"  # double-submit nonce of the login form
MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60.0
FAILURE_DELAY = 0.5  # seconds before a failed login is answered
LOGIN_FORM_LIMIT = 16 * 1024


@dataclass(frozen=True)
class Session:
    actor: str  # admin (password) | token
    sid: str
    csrf: str


class Credentials:
    """The admin token (from the settings) and the password file (read at every use)."""

    def __init__(self, settings: Settings, key: bytes) -> None:
        token = settings.web.admin_token
        self.token = token.get_secret_value() if token is not None else None
        self.password_file = settings.admin_password_file
        self._key = key

    def check(self, secret: str) -> str | None:
        """The actor ``secret`` logs in as, or None. Always runs scrypt once."""
        stored = read_hash(self.password_file)
        password_ok = verify_password(secret, stored or decoy_hash()) and stored is not None
        token_ok = bool(self.token and secret) and hmac.compare_digest(secret.encode(), (self.token or "").encode())
        return "token" if token_ok else "admin" if password_ok else None

    def fingerprint(self, actor: str) -> str | None:
        """A keyed digest of the credential ``actor`` logged in with (the cookie must not carry
        a plain hash of the token); None when that credential is gone."""
        secret = self.token if actor == "token" else read_hash(self.password_file) if actor == "admin" else None
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()[:32] if secret else None

    @property
    def configured(self) -> bool:
        return bool(self.token) or read_hash(self.password_file) is not None


class Sessions:
    def __init__(self, settings: Settings, keys: tuple[bytes, ...], engine: Database) -> None:
        # itsdangerous signs with the last key and verifies with all; ours are newest first
        self.serializer = URLSafeTimedSerializer(list(reversed(keys)), salt="waypost.admin.session")
        self.lifetime = settings.web.admin_session_minutes * 60
        self.secure = (settings.base_url or "").startswith("https://")
        self.credentials = Credentials(settings, keys[0])
        self.engine = engine
        self._revoked: dict[str, float] | None = None  # session id → when its cookie expires anyway

    def issue(self, actor: str) -> tuple[Session, str]:
        session = Session(actor, secrets.token_hex(16), csrf.new_token())
        value = self.serializer.dumps({"a": actor, "s": session.sid, "c": session.csrf,
                                       "f": self.credentials.fingerprint(actor)})
        return session, value

    def read(self, request: Request) -> Session | None:
        """The request's valid session, or None (missing, forged, expired, revoked, stale)."""
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        try:
            # ages are whole seconds, so "older than the floor" is "older than the lifetime"
            data = self.serializer.loads(value, max_age=int(self.lifetime))
            session = Session(str(data["a"]), str(data["s"]), str(data["c"]))
        except (BadSignature, KeyError, TypeError):
            return None
        if session.sid in self.revoked() or data.get("f") != self.credentials.fingerprint(session.actor):
            return None
        return session

    def revoke(self, session: Session) -> None:
        self.revoked()[session.sid] = time.time() + self.lifetime

    def revoked(self) -> dict[str, float]:
        if self._revoked is None:
            self._revoked = self._logouts_on_record()
        now = time.time()
        for sid in [sid for sid, until in self._revoked.items() if until < now]:
            del self._revoked[sid]
        return self._revoked

    def _logouts_on_record(self) -> dict[str, float]:
        since = utcnow() - timedelta(seconds=self.lifetime)
        with reading(self.engine) as conn:
            logouts = audit.recorded_since(conn, "logout", since)
        return {entry.target.removeprefix("session "): entry.at.timestamp() + self.lifetime
                for entry in logouts if entry.target}

    def set_cookie(self, response: Response, value: str) -> None:
        response.set_cookie(COOKIE, value, max_age=int(self.lifetime), path="/admin", httponly=True,
                            samesite="strict", secure=self.secure)

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="strict", secure=self.secure)


class LoginThrottle:
    """Failed logins per client within a sliding window. Used on the event loop only, so a
    check and the reservation that follows it cannot be split by another request."""

    def __init__(self, *, max_failures: int = MAX_FAILURES, window: float = FAILURE_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._recent: dict[str, deque[float]] = {}

    def locked(self, ip: str) -> bool:
        return self.count(ip) >= self.max_failures

    def reserve(self, ip: str) -> float:
        """Count an attempt as failed before it is checked (parallel guesses cannot slip past
        the limit while scrypt runs); ``release`` gives it back when it succeeds."""
        stamp = self.clock()
        self._recent.setdefault(client_key(ip), deque()).append(stamp)
        if len(self._recent) > 10_000:  # many clients: forget those whose failures expired
            for key in [k for k, v in self._recent.items() if not v or v[-1] <= stamp - self.window]:
                del self._recent[key]
        return stamp

    def release(self, ip: str, stamp: float) -> None:
        recent = self._recent.get(client_key(ip))
        if recent is not None and stamp in recent:
            recent.remove(stamp)

    def count(self, ip: str) -> int:
        recent = self._recent.get(client_key(ip))
        if not recent:
            return 0
        horizon = self.clock() - self.window
        while recent and recent[0] <= horizon:
            recent.popleft()
        return len(recent)


def client_key(ip: str) -> str:
    """An IPv6 client is its /64 (one host usually holds the whole of it)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a console path, never another site."""
    if value and value.startswith("/admin") and "//" not in value and "\\" not in value:
        return value
    return "/admin/"


# -- login and logout ------------------------------------------------------------------------


class Login:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.sessions = console.sessions
        self.throttle = LoginThrottle()
        self.delay = FAILURE_DELAY
        self.logout = console.action(self._logout)  # a POST like any other: session and CSRF token

    async def form(self, request: Request) -> Response:
        if self.sessions.read(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        return self._form(request, None, 200)

    async def submit(self, request: Request) -> Response:
        console, ip = self.console, client_ip(request)
        if not csrf.same_origin(request, console.settings.base_url):
            return console.refuse(request, "cross-site request refused")
        form = await read_form(request, LOGIN_FORM_LIMIT)
        if form is None or not csrf.token_matches(request.cookies.get(LOGIN_COOKIE, ""), form.get("login_token")):
            return console.refuse(request, "the login form expired or was not sent from this site: try again")
        if self.throttle.locked(ip):
            log.warning("console login from %s refused: locked out", ip)
            return self._form(request, "Too many failed logins from your address. Try again later.", 429,
                              form.get("next"))
        stamp = self.throttle.reserve(ip)
        actor = await run_in_threadpool(self.sessions.credentials.check, form.get("password"))
        if actor is None:
            return await self._failed(request, ip, form.get("next"))
        self.throttle.release(ip, stamp)
        session, value = self.sessions.issue(actor)
        await run_in_threadpool(self._record, "login", actor, ip, f"session {session.sid}", None)
        response = RedirectResponse(safe_next(form.get("next")), 303, headers=console.headers)
        self.sessions.set_cookie(response, value)
        response.delete_cookie(LOGIN_COOKIE, path="/admin/login")
        return response

    def _logout(self, call: Call) -> Response:
        self.sessions.revoke(call.session)
        with transaction(self.console.engine) as tx:
            self.console.audit(tx, call, "logout", f"session {call.session.sid}")
        response = RedirectResponse("/admin/login", 303, headers=self.console.headers)
        self.sessions.clear_cookie(response)
        return response

    async def _failed(self, request: Request, ip: str, next_path: str) -> Response:
        failures = self.throttle.count(ip)
        locked = failures >= self.throttle.max_failures
        detail = f"failure {failures} in {self.throttle.window / 60:.0f} minutes" + (
            "; the client is locked out" if locked else "")
        await run_in_threadpool(self._record, "login.failed", "anonymous", ip, None, detail)
        log.warning("console login failed from %s (%s)", ip, detail)
        await asyncio.sleep(self.delay)
        message = ("Too many failed logins from your address. Try again later." if locked
                   else "That is neither the console password nor the admin token.")
        return self._form(request, message, 429 if locked else 401, next_path)

    def _record(self, action: str, actor: str, ip: str, target: str | None, detail: str | None) -> None:
        with transaction(self.console.engine) as tx:
            audit.record(tx, action, actor=actor, target=target, detail=detail, ip=ip)

    def _form(self, request: Request, error: str | None, status: int, next_path: str | None = None) -> Response:
        nonce = csrf.new_token()
        context = {"error": error, "nonce": nonce,
                   "next": safe_next(next_path or request.query_params.get("next")),
                   "configured": self.sessions.credentials.configured}
        response = self.console.render_bare(request, "admin/login.html", context, status)
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, path="/admin/login", httponly=True,
                            samesite="strict", secure=self.sessions.secure)
        return response
