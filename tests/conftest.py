"""Shared fixtures. Servers bind port 0; waits poll a condition against a deadline."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from waypost.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("WAYPOST_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T = TypeVar("T")


# --- the shared corpus ---------------------------------------------------------------------------
# Real-world samples written by others (bounces, SES notifications, camera photos, ...) live beside
# the repository in ../shared/corpus, or wherever WAYPOST_CORPUS says. Tests that read it carry the
# `corpus` marker. Without the corpus they are left out (deselected, never skipped) with one line
# at the start and one at the end of the run saying how many and how to include them; under CI
# (CI=true) a missing corpus stops the run before any test. A test that reads the corpus without
# the marker fails when it is missing, so a forgotten marker cannot pass quietly.

CORPUS = Path(os.environ.get("WAYPOST_CORPUS") or ROOT.parent / "shared" / "corpus")
_LEFT_OUT = pytest.StashKey[int]()


def corpus_present() -> bool:
    return (CORPUS / "manifest.jsonl").is_file()


def corpus_dir() -> Path:
    """The shared corpus; its absence fails the calling test, never skips it."""
    if not corpus_present():
        pytest.fail(f"corpus not found at {CORPUS} (set WAYPOST_CORPUS); a test that reads it needs "
                    "@pytest.mark.corpus, and must not pass without it")
    return CORPUS


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI", "").lower() == "true" and not corpus_present():
        raise pytest.UsageError(f"CI=true but the shared corpus is not at {CORPUS} (manifest.jsonl missing): "
                                "CI must run the corpus tests; place the corpus there or set WAYPOST_CORPUS")


@pytest.hookimpl(trylast=True)  # after -m has deselected, so the count is of tests that would have run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if corpus_present():
        return
    left_out = [item for item in items if item.get_closest_marker("corpus")]
    if left_out:
        items[:] = [item for item in items if not item.get_closest_marker("corpus")]
        config.hook.pytest_deselected(items=left_out)
    config.stash[_LEFT_OUT] = len(left_out)


def _corpus_notice(config: pytest.Config) -> str | None:
    count = config.stash.get(_LEFT_OUT, 0)
    if not count:
        return None
    return (f"CORPUS MISSING: {count} tests that read the shared corpus are left out (not found at {CORPUS}); "
            "set WAYPOST_CORPUS=/path/to/corpus to include them")


def pytest_collection_finish(session: pytest.Session) -> None:
    notice = _corpus_notice(session.config)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if notice and reporter is not None:
        reporter.write_line(notice, yellow=True, bold=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    notice = _corpus_notice(config)
    if notice:
        terminalreporter.write_line(notice, yellow=True, bold=True)


def wait_until(condition: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05,
               message: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each database test runs twice: on SQLite, and on PostgreSQL in a schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'waypost.sqlite3'}"
        return
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "data")
        overrides.setdefault("worker", {"retry_base_delay": 0.05, "retry_max_delay": 0.2, "poll_interval": 0.05})
        # photos decode in the worker thread unless a test asks for the process pool
        overrides["journeys"] = {"image_workers": 1, **overrides.get("journeys", {})}
        # the SES sandbox's 1/s would make every test that sends twice wait; the send-path
        # tests set their own limits
        # tests mail reserved example domains and reach no DNS but loopback: the recipient
        # domain check is on only where a test points dns_nameservers at its own server
        overrides["outbound"] = {"max_per_second": 10_000, "max_per_day": 0, "retry_base_delay": 0.05,
                                 "retry_max_delay": 0.2, "check_recipient_domains": False,
                                 **overrides.get("outbound", {})}
        return load_settings(**overrides)

    return build


@dataclass
class LiveServer:
    process: subprocess.Popen[str]
    smtp_host: str
    smtp_port: int
    http_url: str
    data_dir: Path
    lines: list[str]

    def stop(self) -> None:
        stop_process(self.process)


def drain_output(process: subprocess.Popen[str], lines: list[str]) -> threading.Thread:
    """Keep reading a child's output so it never blocks on a full pipe (once per process:
    a second call returns the running pump, which keeps filling its own list)."""
    if process.pid in _pumps:
        return _pumps[process.pid]
    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    _pumps[process.pid] = thread
    return thread


_pumps: dict[int, threading.Thread] = {}


def stop_process(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    """Stop with ``sig``; a process still running after 20 s gets SIGABRT first (with
    PYTHONFAULTHANDLER, from server_env, it prints every thread's stack into its output, which
    the caller can show), then SIGKILL."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    pump = _pumps.pop(process.pid, None)
    if pump is not None:
        # the pipe reaches end of file once every process holding it has gone (image
        # workers exit just after their owner); closing it under the reader would race
        pump.join(timeout=20)
        assert not pump.is_alive(), f"something still holds the output pipe of process {process.pid}"
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


def waypost_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "waypost", *args]


def start_process(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=ROOT, start_new_session=True)


def read_addresses(process: subprocess.Popen[str], timeout: float = 60.0) -> tuple[str, int, str, list[str]]:
    """Wait (with a deadline) until the server's output showed both `smtp:` and `http:`.

    The output is read by the process's pump thread from the start, so a server that hangs
    before printing cannot block the test: at the deadline it gets SIGABRT, and with
    PYTHONFAULTHANDLER set (server_env) it prints every thread's stack into the failure."""
    lines: list[str] = []
    drain_output(process, lines)

    def addresses() -> tuple[tuple[str, int], str] | None:
        smtp = http = None
        for line in list(lines):
            if match := re.match(r"^smtp: (.+):(\d+)$", line.strip()):
                smtp = (match.group(1).strip("[]"), int(match.group(2)))
            elif match := re.match(r"^http: (\S+)$", line.strip()):
                http = match.group(1)
        return (smtp, http) if smtp and http else None

    with contextlib.suppress(pytest.fail.Exception):  # reported below, with the server's stacks
        wait_until(lambda: addresses() is not None or process.poll() is not None, timeout=timeout,
                   message="the server's smtp: and http: lines")
    found = addresses()
    if found is None:
        if process.poll() is None:
            process.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack to the output
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        stop_process(process)
        pytest.fail("server did not report its addresses:\n" + "\n".join(lines))
    (host, port), http = found
    return host, port, http, lines


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAYPOST_")}
    env.update({
        "WAYPOST_DATA_DIR": str(data_dir),
        "WAYPOST_TRUSTED_NETWORKS": "127.0.0.0/8",
        "WAYPOST_WORKER__RETRY_BASE_DELAY": "0.05",
        "WAYPOST_WORKER__RETRY_MAX_DELAY": "0.5",
        "WAYPOST_WORKER__POLL_INTERVAL": "0.05",
        "WAYPOST_OUTBOUND__CHECK_RECIPIENT_DOMAINS": "false",  # as in make_settings
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
    })
    env.update(extra)
    return env


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(*extra_args: str, data_dir: Path | None = None, **env_extra: str) -> LiveServer:
        directory = data_dir or tmp_path / "data"
        args = waypost_command("serve", "--smtp-port", "0", "--http-port", "0", *extra_args)
        process = start_process(args, server_env(directory, **env_extra))
        host, port, http, lines = read_addresses(process)
        drain_output(process, lines)
        server = LiveServer(process, host, port, http, directory, lines)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def dns() -> Iterator[Any]:
    """A real DNS server on loopback (dnslib) whose records a test sets (tests/support/dns_server.py)."""
    from tests.support.dns_server import LoopbackDns

    with LoopbackDns() as server:
        yield server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A CA and an SNS signing certificate made for the test module (tests/support/sns_signing.py)."""
    from tests.support.sns_signing import make_pki

    return make_pki(tmp_path_factory.mktemp("sns-pki"))


@pytest.fixture(scope="module")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Another CA's: what a forger would sign with."""
    from tests.support.sns_signing import make_pki

    return make_pki(tmp_path_factory.mktemp("rogue-pki"), name="Someone else's CA")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on loopback, one per test module (tests/support/moto_server.py)."""
    from tests.support.moto_server import running_moto_server

    with running_moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh moto (every resource forgotten) that every boto3 client in the test talks to."""
    from tests.support.moto_server import reset, use_fake_aws

    reset(moto_endpoint)
    use_fake_aws(monkeypatch, moto_endpoint)
    return moto_endpoint


@pytest.fixture
def allowing_runtime() -> Iterator[Callable[[Settings], Any]]:
    """Wires a Runtime for the given settings with ann@example.org on the allowlist; every one
    built is closed when the test ends."""
    from waypost import runtime as wiring

    built: list[Any] = []

    def build(settings: Settings) -> Any:
        wired = wiring.build(settings)
        wired.allowlist.add("ann@example.org")
        built.append(wired)
        return wired

    yield build
    for wired in built:
        wired.close()


@pytest.fixture
def runtime(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Any]:
    """A wired Runtime on the parametrized database (SQLite, then PostgreSQL)."""
    from waypost import runtime as wiring

    built = wiring.build(make_settings(database={"url": database_url},
                                       trusted_networks=["127.0.0.0/8"]))
    yield built
    built.close()


# --- a real browser: Debian's Chromium driven by Playwright ------------------------------------

CHROMIUM = Path(os.environ.get("WAYPOST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "artifacts" / "screenshots"  # git-ignored; CI keeps them as test artifacts
PHONE = {"width": 390, "height": 844}  # the journey page is phone-first


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (`scripts/test` installs Debian's package when it is missing)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
                    "(scripts/test does when run as root) or set WAYPOST_CHROMIUM")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class BrowserPage:
    page: Any
    blocked: list[str]  # requests to anywhere but loopback, refused (tiles, CDNs, ...)
    transferred: dict[str, int]  # URL → bytes received (encoded, as on the wire)
    referers: dict[str, str | None]  # refused URL → the Referer it would have carried


DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture
def browser_page(browser: Any) -> Iterator[BrowserPage]:
    """A phone-sized page that may reach loopback only: every other request is aborted and
    recorded, so a test sees what a page would have fetched from the internet."""
    with loopback_page(browser, PHONE) as page:
        yield page


@contextlib.contextmanager
def loopback_page(browser: Any, viewport: dict[str, int]) -> Iterator[BrowserPage]:
    """``browser_page`` at any size: a phone (touch, 2x pixels) below 640 pixels, else a desktop."""
    phone = viewport["width"] < 640
    context = browser.new_context(viewport=viewport, device_scale_factor=2 if phone else 1, is_mobile=phone,
                                  has_touch=phone)
    blocked: list[str] = []
    transferred: dict[str, int] = {}
    referers: dict[str, str | None] = {}

    def only_loopback(route: Any) -> None:
        host = re.sub(r"^\[|\]$", "", route.request.url.split("/")[2].rsplit(":", 1)[0]) \
            if "://" in route.request.url else ""
        if host in ("127.0.0.1", "localhost", "::1") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            referers[route.request.url] = route.request.headers.get("referer")
            route.abort()

    def measure(response: Any) -> None:
        try:
            sizes = response.request.sizes()
        except Exception:  # a response that never finished (an aborted request)
            return
        transferred[response.url] = sizes["responseBodySize"] + sizes["responseHeadersSize"]

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("response", measure)
    yield BrowserPage(page, blocked, transferred, referers)
    context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under artifacts/screenshots (kept by CI, ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
