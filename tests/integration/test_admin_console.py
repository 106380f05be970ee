"""The operator console (/admin): who can reach it, logging in, CSRF, and that every action
does what it says and lands in the audit log. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.conftest import ROOT, server_env, wait_until, waypost_command
from waypost import audit
from waypost import runtime as wiring
from waypost.apps.journeys import repository
from waypost.outbound import control, suppression
from waypost.store.models import (
    allowlist,
    feedback_events,
    inbound_messages,
    jobs,
    journeys,
    outbound_messages,
    utcnow,
)
from waypost.store.queue import enqueue
from waypost.web.admin import auth
from waypost.web.admin.password import verify_password, write_password
from waypost.web.app import create_app

TOKEN = "console-token-0123456789abcdef"
PASSWORD = "correct horse battery staple"
LOCAL, REMOTE = "127.0.0.1", "203.0.113.9"


@dataclass
class Console:
    runtime: Any
    app: Any
    client: TestClient

    def other(self, host: str) -> TestClient:
        """Another client (own cookies, own address) of the same running app."""
        return TestClient(self.app, client=(host, 50001))

    def actions(self) -> list[audit.AuditEntry]:
        """Every audit entry, oldest first."""
        with self.runtime.engine.connect() as conn:
            return list(reversed(audit.entries(conn, limit=1000)))


@pytest.fixture
def console(make_settings: Callable[..., Any], database_url: str) -> Iterator[Callable[..., Console]]:
    built: list[Any] = []

    def make(host: str = LOCAL, **overrides: Any) -> Console:
        web = {"admin_token": TOKEN, **overrides.pop("web", {})}
        runtime = wiring.build(make_settings(database={"url": database_url}, web=web, **overrides))
        built.append(runtime)
        if "admin_password_path" not in web:
            write_password(runtime.settings.admin_password_file, PASSWORD)
        app = create_app(runtime)
        return Console(runtime, app, TestClient(app, client=(host, 50000)))

    yield make
    for runtime in built:
        runtime.close()


def login(client: TestClient, secret: str = PASSWORD, **extra: str) -> Any:
    form = client.get("/admin/login")
    assert form.status_code == 200, form.text
    nonce = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert nonce is not None
    return client.post("/admin/login", data={"login_token": nonce.group(1), "password": secret, **extra},
                       follow_redirects=False)


def csrf_token(client: TestClient, path: str = "/admin/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def logged_in(console: Console, secret: str = PASSWORD) -> str:
    assert login(console.client, secret).status_code == 303
    return csrf_token(console.client)


def post(client: TestClient, path: str, token: str | None, **fields: str) -> Any:
    data = {**fields, **({"csrf_token": token} if token is not None else {})}
    return client.post(path, data=data, follow_redirects=False)


def allowlisted(runtime: Any) -> list[str]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(allowlist.c.value)).scalars())


NOT_FOUND_MARK = "There is nothing at this address"


# --- who can reach it ---------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("GET", "/admin"), ("GET", "/admin/"), ("GET", "/admin/login"), ("GET", "/admin/audit"),
    ("GET", "/admin/no-such-page"), ("POST", "/admin/login"), ("POST", "/admin/allowlist/add"),
    ("PUT", "/admin/"), ("GET", "/admin/outbox/1/html"),
])
def test_a_remote_client_gets_the_ordinary_404_for_everything(console: Callable[..., Console], method: str,
                                                             path: str) -> None:
    remote = console(REMOTE)
    response = remote.client.request(method, path, follow_redirects=False)
    assert response.status_code == 404
    assert NOT_FOUND_MARK in response.text  # the site's own 404 page: nothing says "console"
    assert "console" not in response.text.lower() and "set-cookie" not in response.headers


def test_admin_remote_opens_the_console_to_other_addresses_behind_a_login(console: Callable[..., Console]) -> None:
    remote = console(REMOTE, web={"admin_remote": True})
    first = remote.client.get("/admin/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/admin/login")
    assert login(remote.client).status_code == 303
    assert remote.client.get("/admin/").status_code == 200
    assert remote.actions()[-1].ip == REMOTE


# --- logging in -----------------------------------------------------------------------------

PAGES = ["/admin/", "/admin/allowlist", "/admin/suppressions", "/admin/suppressions.csv", "/admin/queues",
         "/admin/jobs/1", "/admin/outbox", "/admin/outbox/1", "/admin/outbox/1/html", "/admin/journeys",
         "/admin/reputation", "/admin/audit"]
ACTIONS = ["/admin/logout", "/admin/sending/pause", "/admin/sending/resume", "/admin/allowlist/add",
           "/admin/allowlist/remove", "/admin/suppressions/add", "/admin/suppressions/remove",
           "/admin/suppressions/import", "/admin/jobs/1/retry", "/admin/jobs/1/discard",
           "/admin/journeys/1/revoke", "/admin/journeys/1/rotate", "/admin/journeys/1/expiry"]


def test_without_a_session_pages_send_to_the_login_and_actions_are_refused(console: Callable[..., Console]) -> None:
    c = console()
    for path in PAGES:
        response = c.client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/admin/login?next=%2Fadmin"), path
    for path in ACTIONS:
        response = c.client.post(path, data={"entry": "x@example.org", "scope": "*", "reason": "r",
                                             "csrf_token": "guess"}, follow_redirects=False)
        assert response.status_code == 403, path
    assert allowlisted(c.runtime) == [] and c.actions() == []
    with c.runtime.engine.connect() as conn:
        assert control.pauses(conn) == []


def test_a_forged_session_cookie_is_no_session(console: Callable[..., Console]) -> None:
    c = console()
    c.client.cookies.set(auth.COOKIE, "eyJhIjoiYWRtaW4ifQ.forged.signature", path="/admin")
    assert c.client.get("/admin/", follow_redirects=False).status_code == 303


def test_wrong_secrets_are_refused_slowly_and_audited_and_the_right_ones_let_in(
        console: Callable[..., Console]) -> None:
    c = console()
    started = time.monotonic()
    wrong = login(c.client, "not the password at all")
    assert wrong.status_code == 401 and auth.COOKIE not in wrong.cookies
    assert time.monotonic() - started >= auth.FAILURE_DELAY
    assert c.client.get("/admin/", follow_redirects=False).status_code == 303
    failed = c.actions()[-1]
    assert (failed.action, failed.actor, failed.ip) == ("login.failed", "anonymous", LOCAL)
    assert "not the password" not in (failed.detail or "")  # the guess itself is never kept

    assert login(c.client, PASSWORD).status_code == 303
    assert c.actions()[-1].action == "login" and c.actions()[-1].actor == "admin"
    token_client = c.other(LOCAL)
    assert login(token_client, TOKEN).status_code == 303
    assert c.actions()[-1].action == "login" and c.actions()[-1].actor == "token"
    assert token_client.get("/admin/").status_code == 200


def test_the_login_form_needs_its_own_nonce_and_this_site(console: Callable[..., Console]) -> None:
    c = console()
    no_nonce = c.client.post("/admin/login", data={"password": PASSWORD}, follow_redirects=False)
    nonce = re.search(r'name="login_token" value="([^"]+)"', c.client.get("/admin/login").text)
    assert nonce is not None
    cross_site = c.client.post("/admin/login", data={"password": PASSWORD, "login_token": nonce.group(1)},
                               headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert no_nonce.status_code == 403 and cross_site.status_code == 403
    assert c.actions() == []


def test_five_failures_lock_the_client_out_but_not_others(console: Callable[..., Console],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "FAILURE_DELAY", 0.01)
    c = console()
    statuses = [login(c.client, f"guess number {n}").status_code for n in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    locked = login(c.client, PASSWORD)  # the right password, but the client is locked out
    assert locked.status_code == 429 and auth.COOKIE not in locked.cookies
    failures = [e for e in c.actions() if e.action == "login.failed"]
    assert len(failures) == 5 and "locked out" in (failures[-1].detail or "")
    assert login(c.other("127.0.0.2"), PASSWORD).status_code == 303


def login_via(client: Any, forwarded_for: str, secret: str = PASSWORD) -> Any:
    """``login`` with an X-Forwarded-For header on both requests (a TestClient or httpx.Client)."""
    headers = {"X-Forwarded-For": forwarded_for}
    form = client.get("/admin/login", headers=headers)
    assert form.status_code == 200, form.text
    nonce = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert nonce is not None
    return client.post("/admin/login", data={"login_token": nonce.group(1), "password": secret},
                       headers=headers, follow_redirects=False)


def test_a_trusted_proxy_names_the_client_that_is_locked_out_and_audited(console: Callable[..., Console],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "FAILURE_DELAY", 0.01)
    c = console("10.0.0.2", web={"admin_remote": True, "trusted_proxies": ["10.0.0.0/24"]})
    # the left part is the client's own claim, different each time; the proxy appends the truth
    statuses = [login_via(c.client, f"198.51.100.{n}, {REMOTE}", f"guess {n}").status_code for n in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    assert login_via(c.client, REMOTE).status_code == 429
    assert login_via(c.client, "203.0.113.10").status_code == 303  # someone else behind the same proxy
    assert [(e.action, e.ip) for e in c.actions()] == [("login.failed", REMOTE)] * 5 + [("login", "203.0.113.10")]


def test_without_trusted_proxies_a_forwarded_for_header_changes_no_address(console: Callable[..., Console],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "FAILURE_DELAY", 0.01)
    c = console(REMOTE, web={"admin_remote": True})
    statuses = [login_via(c.client, f"198.51.100.{n}", f"guess {n}").status_code for n in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    assert login_via(c.client, "198.51.100.99").status_code == 429
    assert {e.ip for e in c.actions()} == {REMOTE}


def audit_ips(data_dir: Path) -> list[tuple[str, str | None]]:
    engine = sa.create_engine(f"sqlite:///{data_dir / 'waypost.sqlite3'}")
    try:
        with engine.connect() as conn:
            return [(e.action, e.ip) for e in reversed(audit.entries(conn, limit=100))]
    finally:
        engine.dispose()


def test_a_loopback_process_cannot_choose_its_address_in_waypost_serve(live_server: Any, tmp_path: Path) -> None:
    """Against the real HTTP server: the loopback peer stays the client whatever it claims, so
    rotating X-Forwarded-For neither escapes the lockout nor writes another address in the log."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_password(data_dir / "admin-password", PASSWORD)
    server = live_server(data_dir=data_dir, WAYPOST_WEB__ADMIN_REMOTE="true")
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        statuses = [login_via(client, f"198.51.100.{n}", f"guess {n}").status_code for n in range(5)]
        assert statuses == [401, 401, 401, 401, 429]
        assert login_via(client, "198.51.100.99").status_code == 429
    assert audit_ips(data_dir) == [("login.failed", LOCAL)] * 5


def test_waypost_serve_believes_x_forwarded_for_from_a_configured_proxy(live_server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_password(data_dir / "admin-password", PASSWORD)
    server = live_server(data_dir=data_dir, WAYPOST_WEB__ADMIN_REMOTE="true",
                         WAYPOST_WEB__TRUSTED_PROXIES="127.0.0.1")
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        assert login_via(client, f"198.51.100.7, {REMOTE}", "a guess").status_code == 401
        assert login_via(client, "203.0.113.10").status_code == 303
    assert audit_ips(data_dir) == [("login.failed", REMOTE), ("login", "203.0.113.10")]


def test_session_cookie_flags_and_lifetime(console: Callable[..., Console]) -> None:
    c = console(base_url="https://waypost.example")
    response = login(TestClient(c.app, base_url="https://waypost.example", client=(LOCAL, 50000)))
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin" in cookie and "secure" in cookie
    plain = console(web={"admin_session_minutes": 0.02})
    assert login(plain.client).status_code == 303
    assert plain.client.get("/admin/", follow_redirects=False).status_code == 200
    wait_until(lambda: plain.client.get("/admin/", follow_redirects=False).status_code == 303, timeout=10,
               message="the session to expire")


def test_logout_ends_the_session_even_for_a_copied_cookie(console: Callable[..., Console]) -> None:
    c = console()
    token = logged_in(c)
    stolen = c.client.cookies.get(auth.COOKIE)
    assert post(c.client, "/admin/logout", token).status_code == 303
    thief = c.other(LOCAL)
    thief.cookies.set(auth.COOKIE, stolen, path="/admin")
    assert thief.get("/admin/", follow_redirects=False).status_code == 303
    assert [e.action for e in c.actions()][-2:] == ["login", "logout"]
    # a restarted server still knows the logout (it reads it back from the audit log)
    fresh = TestClient(create_app(c.runtime), client=(LOCAL, 50002))
    fresh.cookies.set(auth.COOKIE, stolen, path="/admin")
    assert fresh.get("/admin/", follow_redirects=False).status_code == 303


def test_a_new_password_ends_the_sessions_made_with_the_old_one(console: Callable[..., Console]) -> None:
    c = console()
    logged_in(c)
    write_password(c.runtime.settings.admin_password_file, "another long password")
    assert c.client.get("/admin/", follow_redirects=False).status_code == 303


# --- CSRF -----------------------------------------------------------------------------------

CHANGES = [
    ("/admin/allowlist/add", {"entry": "ann@example.org"}),
    ("/admin/suppressions/add", {"address": "bob@example.org", "reason": "MANUAL", "note": "asked"}),
    ("/admin/sending/pause", {"scope": "*", "reason": "maintenance"}),
]


@pytest.mark.parametrize("path, fields", CHANGES)
def test_a_post_without_the_right_csrf_token_is_refused_and_changes_nothing(
        console: Callable[..., Console], path: str, fields: dict[str, str]) -> None:
    c = console()
    logged_in(c)
    other = c.other(LOCAL)
    assert login(other).status_code == 303
    someone_elses = csrf_token(other)
    for token in (None, "", "wrong-token", someone_elses):
        response = post(c.client, path, token, **fields)
        assert response.status_code == 403, token
        assert "CSRF" in response.text
    assert allowlisted(c.runtime) == []
    with c.runtime.engine.connect() as conn:
        assert suppression.entries(conn) == [] and control.pauses(conn) == []
    assert {e.action for e in c.actions()} == {"login"}


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}])
def test_a_cross_site_post_is_refused_even_with_the_token(console: Callable[..., Console],
                                                          headers: dict[str, str]) -> None:
    c = console()
    token = logged_in(c)
    response = c.client.post("/admin/allowlist/add", data={"entry": "ann@example.org", "csrf_token": token},
                             headers=headers, follow_redirects=False)
    assert response.status_code == 403
    assert allowlisted(c.runtime) == []
    same = c.client.post("/admin/allowlist/add", data={"entry": "ann@example.org", "csrf_token": token},
                         headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
                         follow_redirects=False)
    assert same.status_code == 303 and allowlisted(c.runtime) == ["ann@example.org"]


def test_console_pages_carry_a_strict_policy(console: Callable[..., Console]) -> None:
    c = console()
    logged_in(c)
    page = c.client.get("/admin/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "<script>" not in page.text and " style=" not in page.text
    assert page.headers["cache-control"] == "private, no-store"
    assert page.headers["x-robots-tag"] == "noindex, nofollow"


# --- the actions, each audited ---------------------------------------------------------------


def audited(c: Console, action: str) -> audit.AuditEntry:
    entry = c.actions()[-1]
    assert entry.action == action and entry.actor == "admin" and entry.ip == LOCAL
    return entry


def test_allowlist_and_suppressions(console: Callable[..., Console]) -> None:
    c = console()
    token = logged_in(c)
    assert post(c.client, "/admin/allowlist/add", token, entry="Ann@Example.org", note="friend").status_code == 303
    assert audited(c, "allowlist.add").target == "ann@example.org"
    assert "ann@example.org" in c.client.get("/admin/allowlist").text
    assert post(c.client, "/admin/allowlist/remove", token, entry="ann@example.org").status_code == 303
    assert audited(c, "allowlist.remove").target == "ann@example.org" and allowlisted(c.runtime) == []
    assert post(c.client, "/admin/allowlist/add", token, entry="not an address@").status_code == 400

    no_reason = post(c.client, "/admin/suppressions/add", token, address="bob@example.org", reason="MANUAL")
    assert no_reason.status_code == 400
    assert post(c.client, "/admin/suppressions/add", token, address="Bob@Example.org", reason="COMPLAINT",
                note="called us").status_code == 303
    entry = audited(c, "suppression.add")
    assert entry.target == "bob@example.org" and "called us" in (entry.detail or "")
    with c.runtime.engine.connect() as conn:
        found = suppression.lookup(conn, "bob@example.org")
        assert found is not None and found.reason == suppression.Reason.COMPLAINT
    refused = post(c.client, "/admin/suppressions/remove", token, address="bob@example.org", reason="")
    assert refused.status_code == 400
    assert post(c.client, "/admin/suppressions/remove", token, address="bob@example.org",
                reason="typo fixed").status_code == 303
    assert audited(c, "suppression.remove").detail == "typo fixed"
    with c.runtime.engine.connect() as conn:
        assert suppression.lookup(conn, "bob@example.org") is None
        assert suppression.history(conn, "bob@example.org")[0].by == "console (admin)"


def test_suppression_search_and_cursor_paging(console: Callable[..., Console]) -> None:
    c = console()
    with c.runtime.engine.begin() as conn:
        suppression.add_many(conn, [suppression.NewEntry(f"user{i:03d}@{'a' if i % 2 else 'b'}.example",
                                                         suppression.Reason.BOUNCE, "test") for i in range(120)])
    logged_in(c)
    seen: list[str] = []
    path = "/admin/suppressions?domain=a.example"
    while path:
        page = c.client.get(path).text.split("Recent changes")[0]  # the list, not the log below it
        seen += re.findall(r'<td class="mono">(user\d+@a\.example)</td>', page)
        found = re.search(r'href="\?([^"]*after=[^"]+)"', page)
        path = "/admin/suppressions?" + found.group(1).replace("&amp;", "&") if found else ""
    assert seen == sorted(seen) and len(seen) == 60 == len(set(seen))
    search = c.client.get("/admin/suppressions", params={"search": "user01"}).text.split("Recent changes")[0]
    assert "user010@b.example" in search and "user020@b.example" not in search


def test_pause_and_resume(console: Callable[..., Console]) -> None:
    c = console()
    token = logged_in(c)
    assert post(c.client, "/admin/sending/pause", token, scope="*", reason="").status_code == 400
    assert post(c.client, "/admin/sending/pause", token, scope="journeys", reason="checking a template") \
        .status_code == 303
    assert audited(c, "sending.pause").target == "journeys"
    with c.runtime.engine.connect() as conn:
        assert [(p.scope, p.paused_by) for p in control.pauses(conn)] == [("journeys", "console (admin)")]
    assert "checking a template" in c.client.get("/admin/").text
    assert post(c.client, "/admin/sending/resume", token, scope="journeys").status_code == 303
    assert audited(c, "sending.resume").target == "journeys"
    with c.runtime.engine.connect() as conn:
        assert control.pauses(conn) == []


def _dead_job(runtime: Any, error: str = "could not parse: boom") -> int:
    with runtime.engine.begin() as conn:
        conn.execute(inbound_messages.insert().values(
            id="m" * 32, received_at=utcnow(), rcpt_tos=["journeys@example.org"], blob_key="inbound/x.eml", size=10,
            ingress="smtp", status="dead", reason=error))
        job_id = enqueue(conn, "inbound", {"message_id": "m" * 32}, max_attempts=3)
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(state="dead", last_error=error, attempts=3))
    return job_id


def test_dead_letters_inspect_retry_and_discard(console: Callable[..., Console]) -> None:
    c = console()
    job_id = _dead_job(c.runtime)
    token = logged_in(c)
    listed = c.client.get("/admin/queues?state=dead").text
    assert f"/admin/jobs/{job_id}" in listed and "could not parse: boom" in listed
    detail = c.client.get(f"/admin/jobs/{job_id}").text
    assert '&#34;message_id&#34;: &#34;' + "m" * 32 in detail or '"message_id": "' + "m" * 32 in detail
    assert "could not parse: boom" in detail

    assert post(c.client, f"/admin/jobs/{job_id}/retry", token).status_code == 303
    assert audited(c, "deadletter.retry").target == f"job {job_id}"
    with c.runtime.engine.connect() as conn:
        assert conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).scalar_one() == "queued"
        assert conn.execute(sa.select(inbound_messages.c.status)).scalar_one() == "queued"

    with c.runtime.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(state="dead", last_error="still broken"))
    assert post(c.client, f"/admin/jobs/{job_id}/discard", token).status_code == 303
    entry = audited(c, "deadletter.discard")
    assert entry.target == f"job {job_id}" and "still broken" in (entry.detail or "")
    with c.runtime.engine.connect() as conn:
        row = conn.execute(sa.select(jobs.c.state, jobs.c.last_error).where(jobs.c.id == job_id)).one()
    assert (row.state, row.last_error) == ("done", "discarded by admin")
    before = len(c.actions())
    assert post(c.client, f"/admin/jobs/{job_id}/discard", token).headers["location"].endswith("done=not-found")
    assert len(c.actions()) == before


def test_a_dead_send_that_may_have_left_is_not_retried(console: Callable[..., Console]) -> None:
    c = console()
    with c.runtime.engine.begin() as conn:
        outbound_id = conn.execute(outbound_messages.insert().values(
            idempotency_key="k", stream="journeys", recipient="ann@example.org", envelope_sender="b@example.org",
            subject="Your journey", message_id_header="<k@x>", raw=b"x", state="failed", created_at=utcnow(),
            handoff_at=utcnow())).inserted_primary_key[0]
        job_id = enqueue(conn, "send", {"outbound_id": outbound_id}, max_attempts=3)
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(state="dead", last_error="connection lost"))
    token = logged_in(c)
    inspected = c.client.get(f"/admin/jobs/{job_id}").text
    assert "Outbound message" in inspected and f'href="/admin/outbox/{outbound_id}"' in inspected
    refused = post(c.client, f"/admin/jobs/{job_id}/retry", token)
    assert refused.status_code == 409 and "deliver it twice" in refused.text
    with c.runtime.engine.connect() as conn:
        assert conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).scalar_one() == "dead"
    assert c.actions()[-1].action == "login"


def _journey(runtime: Any) -> repository.JourneyRef:
    with runtime.engine.begin() as conn:
        conn.execute(inbound_messages.insert().values(
            id="j" * 32, received_at=utcnow(), rcpt_tos=["journeys@example.org"], blob_key="inbound/j.eml", size=10,
            ingress="smtp", status="processed"))
        return repository.create_journey(conn, title="Lisbon <b>trip</b>", owner="ann@example.org",
                                          source_message_id="j" * 32)


def test_journey_links_revoke_rotate_and_expiry(console: Callable[..., Console]) -> None:
    c = console()
    ref = _journey(c.runtime)
    token = logged_in(c)
    listed = c.client.get("/admin/journeys").text
    assert "Lisbon &lt;b&gt;trip&lt;/b&gt;" in listed and f"/j/{ref.token}" in listed

    assert post(c.client, f"/admin/journeys/{ref.id}/expiry", token, expires="2031-05-01").status_code == 303
    assert audited(c, "journey.expiry").target == f"journey {ref.id}"
    assert post(c.client, f"/admin/journeys/{ref.id}/expiry", token, expires="soon").status_code == 400
    assert post(c.client, f"/admin/journeys/{ref.id}/revoke", token).status_code == 303
    assert audited(c, "journey.revoke").target == f"journey {ref.id}"
    with c.runtime.engine.connect() as conn:
        row = conn.execute(sa.select(journeys).where(journeys.c.id == ref.id)).one()
    assert row.revoked_at is not None and row.expires_at.isoformat().startswith("2031-05-02T00:00:00")

    assert post(c.client, f"/admin/journeys/{ref.id}/rotate", token).status_code == 303
    assert audited(c, "journey.rotate").target == f"journey {ref.id}"
    assert post(c.client, f"/admin/journeys/{ref.id}/expiry", token, clear="1").status_code == 303
    with c.runtime.engine.connect() as conn:
        row = conn.execute(sa.select(journeys).where(journeys.c.id == ref.id)).one()
    assert row.token != ref.token and row.revoked_at is None and row.expires_at is None
    assert post(c.client, "/admin/journeys/99999/revoke", token).status_code == 404


# --- outbox, reputation, audit pages ---------------------------------------------------------

HOSTILE = "<script>document.title='owned'</script><p onclick=\"alert(1)\">Hello <b>Ann</b></p>"


def _hostile_message() -> bytes:
    message = EmailMessage()
    message["From"] = "Waypost <journeys@example.org>"
    message["To"] = "ann@example.org"
    message["Subject"] = "Your journey <img src=x onerror=alert(1)>"
    message.set_content("Hello Ann, the text part.")
    message.add_alternative(HOSTILE, subtype="html")
    return message.as_bytes()


def test_the_caught_html_is_shown_sandboxed_so_its_scripts_never_run(console: Callable[..., Console]) -> None:
    c = console()
    raw = _hostile_message()
    with c.runtime.engine.begin() as conn:
        row_id = conn.execute(outbound_messages.insert().values(
            idempotency_key="journeys-reply-1", stream="journeys", recipient="ann@example.org",
            envelope_sender="bounces@example.org", subject="Your journey", message_id_header="<1@example.org>",
            raw=raw, state="sent", created_at=utcnow())).inserted_primary_key[0]
    c.runtime.settings.outbox_dir.mkdir(parents=True, exist_ok=True)
    (c.runtime.settings.outbox_dir / "journeys-reply-1.eml").write_bytes(raw)
    logged_in(c)
    for base in (f"/admin/outbox/{row_id}", "/admin/outbox/file/journeys-reply-1.eml"):
        page = c.client.get(base)
        assert page.status_code == 200
        assert re.search(rf'<iframe[^>]* sandbox src="{re.escape(base)}/html"', page.text)
        assert "<script>" not in page.text and "<img src=x" not in page.text
        assert "Hello Ann, the text part." in page.text and "journeys@example.org" in page.text
        html = c.client.get(base + "/html")
        assert html.status_code == 200 and HOSTILE in html.text
        policy = html.headers["content-security-policy"]
        assert policy.startswith("sandbox;") and "allow-scripts" not in policy and "script-src" not in policy
        assert "default-src 'none'" in policy
    listing = c.client.get("/admin/outbox").text
    assert f"/admin/outbox/{row_id}" in listing and "/admin/outbox/file/journeys-reply-1.eml" in listing
    assert c.client.get("/admin/outbox/file/..%2Fwaypost.toml").status_code in (404, 400)


def test_csv_export_and_import(console: Callable[..., Console]) -> None:
    c = console()
    token = logged_in(c)
    good = b"EmailAddress,Reason\nann@example.org,BOUNCE\nbob@example.org,COMPLAINT\n"
    response = c.client.post("/admin/suppressions/import", data={"csrf_token": token},
                             files={"file": ("list.csv", good, "text/csv")}, follow_redirects=False)
    assert response.status_code == 303
    assert audited(c, "suppression.import").detail == "2 rows, 2 newly suppressed"
    bad = c.client.post("/admin/suppressions/import", data={"csrf_token": token},
                        files={"file": ("bad.csv", b"carol@example.org\nnot an address\n", "text/csv")})
    assert bad.status_code == 400 and "line 2" in bad.text
    pasted = post(c.client, "/admin/suppressions/import", token, csv="dave@example.org\n")
    assert pasted.status_code == 303
    no_token = c.client.post("/admin/suppressions/import", files={"file": ("x.csv", b"eve@example.org\n", "text/csv")})
    assert no_token.status_code == 403

    export = c.client.get("/admin/suppressions.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert export.headers["content-disposition"] == 'attachment; filename="suppressions.csv"'
    lines = export.text.splitlines()
    assert lines[0] == "address,reason,source,detail,created_at,expires_at"
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["ann@example.org", "BOUNCE"], ["bob@example.org", "COMPLAINT"], ["dave@example.org", "MANUAL"]]
    assert audited(c, "suppression.export").detail == "3 entries"


def test_reputation_charts_count_per_day_against_the_thresholds(console: Callable[..., Console]) -> None:
    c = console()
    now = utcnow()
    with c.runtime.engine.begin() as conn:
        for n in range(4):
            when = now - timedelta(days=2 if n else 0)
            conn.execute(outbound_messages.insert().values(
                idempotency_key=f"k{n}", stream="journeys", recipient=f"r{n}@example.org",
                envelope_sender="b@example.org", subject="s", message_id_header=f"<{n}@x>", raw=b"x", state="sent",
                created_at=when, window_at=when))
        conn.execute(feedback_events.insert().values(
            dedupe_key="d1", kind="bounce", source="ses", recipient="r1@example.org", outcome="suppressed",
            counts_as="bounce", received_at=now - timedelta(days=2), raw="{}"))
    logged_in(c)
    page = c.client.get("/admin/reputation")
    assert page.status_code == 200 and page.text.count("<svg") == 5
    two_days_ago = (now - timedelta(days=2)).date().isoformat()
    assert f"<title>{two_days_ago}: 3</title>" in page.text  # sends
    assert f"<title>{two_days_ago}: 1</title>" in page.text  # bounces
    assert f"<title>{two_days_ago}: 33.33%</title>" in page.text  # the day's bounce rate
    assert 'class="threshold warn"' in page.text and "pause 8.00%" in page.text


def test_the_audit_page_filters_by_action_and_pages_newest_first(console: Callable[..., Console]) -> None:
    c = console()
    with c.runtime.engine.begin() as conn:
        for n in range(130):
            audit.record(conn, "journey.view", actor="visitor", target=str(n), ip="198.51.100.1")
    token = logged_in(c)
    post(c.client, "/admin/allowlist/add", token, entry="ann@example.org")
    first = c.client.get("/admin/audit").text
    rows = re.findall(r'<td class="mono">([a-z.]+)</td>', first)
    assert rows[:2] == ["allowlist.add", "login"] and len(rows) == 100
    assert "before=" in first
    only = c.client.get("/admin/audit", params={"action": "allowlist"}).text
    assert re.findall(r'<td class="mono">([a-z.]+)</td>', only) == ["allowlist.add"]


# --- the password command, as a real process ---------------------------------------------------


def test_admin_passwd_writes_a_private_scrypt_hash_that_logs_in(tmp_path: Path,
                                                                console: Callable[..., Console]) -> None:
    data_dir = tmp_path / "cli-data"
    env = server_env(data_dir)
    done = subprocess.run(waypost_command("admin", "passwd", "--password-stdin"), input="a brand new password\n",
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    path = data_dir / "admin-password"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    stored = path.read_text().strip()
    assert stored.startswith("scrypt$16384$8$1$") and "a brand new password" not in stored
    assert verify_password("a brand new password", stored) and not verify_password("a brand new passwor", stored)
    short = subprocess.run(waypost_command("admin", "passwd", "--password-stdin"), input="short\n",
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert short.returncode != 0 and "12 characters" in short.stderr
    assert path.read_text().strip() == stored

    c = console(web={"admin_password_path": str(path)})
    assert login(c.client, "a brand new password").status_code == 303
