"""The README's own example, run as written: the commands of "Sending your own photos" (serve,
allowlist, swaks) against a real server, with Debian's swaks as the SMTP client."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, wait_until
from tests.e2e.test_serve import LINK, caught, cli
from waypost.apps.journeys.samples import DEMO_TRIP, make_photo


def readme_commands(section: str) -> list[list[str]]:
    """The commands of the first ``sh`` block under ``section``, continuation lines joined and
    comments dropped, each split as a shell would."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", body, re.S)
    assert block, f"no sh block under '## {section}' in README.md"
    joined = block.group(1).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def test_sending_your_own_photos_works_as_written(live_server: Any, tmp_path: Path) -> None:
    serve, allow, swaks = readme_commands("Sending your own photos")
    assert serve[1:] == [".venv/bin/waypost", "serve"] and allow[:2] == [".venv/bin/waypost", "allowlist"]
    assert swaks[0] == "swaks", swaks
    if shutil.which("swaks") is None:
        pytest.fail("swaks is not installed: scripts/test installs Debian's package (apt-get install swaks)")

    env_name, _, env_value = serve[0].partition("=")
    data_dir = tmp_path / "data"
    assert cli(data_dir, *allow[1:]).returncode == 0
    server = live_server(data_dir=data_dir, **{env_name: env_value})  # port 0 instead of 2525

    photos = tmp_path / "photos"
    photos.mkdir()
    names = [arg for flag, arg in zip(swaks, swaks[1:], strict=False) if flag == "--attach-name"]
    assert names == ["IMG_0001.jpg", "IMG_0002.jpg"]
    for index, name in enumerate(names):
        (photos / name).write_bytes(make_photo(DEMO_TRIP[index], seed=index))
    swaks[swaks.index("--server") + 1] = f"{server.smtp_host}:{server.smtp_port}"
    sent = subprocess.run(swaks, cwd=photos, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    reply = wait_until(lambda: caught(data_dir), timeout=60, message="the reply in the catcher")[0]
    url = LINK.search(reply.get_body(("plain",)).get_content()).group(1)
    shared = httpx.get(url + ".json")
    journey = shared.json()
    assert journey["title"] == "Weekend in the hills"
    # both photos arrived; the public JSON names them neutrally, never by the names they were sent with
    assert [p["filename"] for p in journey["photos"]] == ["Photo 1", "Photo 2"]
    assert not any(name in shared.text for name in names)
    assert journey["totals"]["on_map"] == 2
