"""The operator's send-path commands, run as a real `waypost` process."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_serve import cli


def test_suppression_commands_add_list_page_and_remove(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for address in ("c@example.org", "a@example.org", "B@Example.org"):
        assert cli(data_dir, "suppression", "add", address, "--note", "asked by phone").returncode == 0
    again = cli(data_dir, "suppression", "add", "b@example.org")
    assert "already suppressed" in again.stdout

    first = cli(data_dir, "suppression", "list", "--limit", "2").stdout.splitlines()
    assert [line.split()[0] for line in first[:2]] == ["a@example.org", "b@example.org"]
    assert "MANUAL" in first[0] and "asked by phone" in first[0]
    assert first[2] == "more: --after b@example.org"
    rest = cli(data_dir, "suppression", "list", "--limit", "2", "--after", "b@example.org").stdout.splitlines()
    assert [line.split()[0] for line in rest] == ["c@example.org"]

    assert cli(data_dir, "suppression", "remove", "A@example.org").returncode == 2  # a removal needs a reason
    assert cli(data_dir, "suppression", "remove", "A@example.org", "--reason", "typo fixed").returncode == 0
    missing = cli(data_dir, "suppression", "remove", "a@example.org", "--reason", "again")
    assert missing.returncode == 1 and "not suppressed: a@example.org" in missing.stderr
    history = cli(data_dir, "suppression", "history", "a@example.org").stdout.splitlines()
    assert "remove a@example.org" in history[0] and "by operator (cli): typo fixed" in history[0]
    assert "add    a@example.org" in history[1] and "asked by phone" in history[1]


def test_suppression_search_export_and_import(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    good = tmp_path / "ses-export.csv"
    good.write_text("EmailAddress,Reason\nann@example.org,BOUNCE\nbob@other.example,COMPLAINT\n"
                    "cat@example.org,bounce\n", encoding="utf-8")
    imported = cli(data_dir, "suppression", "import", str(good))
    assert imported.returncode == 0 and "imported 3 entries: 3 new" in imported.stdout

    def listed(*args: str) -> list[str]:
        return [line.split()[0] for line in cli(data_dir, "suppression", "list", *args).stdout.splitlines()]

    assert listed("--domain", "example.org") == ["ann@example.org", "cat@example.org"]
    assert listed("--reason", "COMPLAINT") == ["bob@other.example"]
    assert listed("--search", "AT@") == ["cat@example.org"]

    bad = tmp_path / "bad.csv"
    bad.write_text("address,reason\nnot an address,BOUNCE\ndan@example.org,SPAM\neve@example.org,MANUAL\n")
    refused = cli(data_dir, "suppression", "import", str(bad))
    assert refused.returncode == 1 and "2 bad line(s), nothing imported" in refused.stderr
    assert "line 2:" in refused.stderr and "line 3: reason 'SPAM'" in refused.stderr
    assert "eve@example.org" not in listed()  # all or nothing

    exported = cli(data_dir, "suppression", "export")
    lines = exported.stdout.splitlines()
    assert lines[0] == "address,reason,source,detail,created_at,expires_at"
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["ann@example.org", "BOUNCE", "import"], ["bob@other.example", "COMPLAINT", "import"],
        ["cat@example.org", "BOUNCE", "import"]]
    again = tmp_path / "again.csv"
    again.write_text(exported.stdout)
    assert "3 entries: 0 new, 3 already suppressed" in cli(data_dir, "suppression", "import", str(again)).stdout


def test_pause_resume_and_status(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    status = cli(data_dir, "outbox", "status").stdout
    assert "transport: catcher" in status and "limits:    1/s, 200/24h (settings)" in status
    assert "sending:   active" in status

    assert cli(data_dir, "pause", "--reason", "bounce spike").returncode == 0
    assert cli(data_dir, "pause", "--stream", "journeys", "--reason", "template fix").returncode == 0
    status = cli(data_dir, "outbox", "status").stdout
    assert "PAUSED:    all sending" in status and "bounce spike" in status
    assert "PAUSED:    stream journeys" in status and "template fix" in status

    assert cli(data_dir, "resume").returncode == 0
    assert "all sending" not in cli(data_dir, "outbox", "status").stdout
    not_paused = cli(data_dir, "resume")
    assert not_paused.returncode == 1 and "not paused: all sending" in not_paused.stderr
    assert cli(data_dir, "pause").returncode == 2  # a pause needs a reason
    typo = cli(data_dir, "pause", "--stream", "journey", "--reason", "x")
    assert typo.returncode == 1 and "no stream 'journey'; the streams are: journeys, operator" in typo.stderr


def test_dkim_keygen_writes_a_private_key_once_and_prints_its_record(tmp_path: Path) -> None:
    data_dir, key = tmp_path / "data", tmp_path / "dkim.pem"
    made = cli(data_dir, "dkim", "keygen", "--selector", "wp2026", "--kind", "ed25519", "--out", str(key),
               WAYPOST_MAIL_DOMAIN="trips.example.org")
    assert made.returncode == 0
    assert "publish this TXT record at wp2026._domainkey.trips.example.org:" in made.stdout
    assert "v=DKIM1; k=ed25519; p=" in made.stdout
    assert key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes()
    again = cli(data_dir, "dkim", "keygen", "--selector", "wp2026", "--out", str(key))
    assert again.returncode == 1 and "never overwritten" in again.stderr and key.read_bytes() == before
