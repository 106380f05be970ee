"""Settings: sources in order of strength, derived values, secrets, and refusals."""

from __future__ import annotations

import ipaddress
import json
import os
from operator import attrgetter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from waypost.config import ConfigError, Settings, load_settings
from waypost.errors import WaypostError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No WAYPOST_* variable from the caller's shell, and a working directory of our own
    (the default data dir, ``data``, is relative to it)."""
    for name in list(os.environ):
        if name.upper().startswith("WAYPOST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    return directory


def write_toml(data_dir: Path, text: str) -> Path:
    path = data_dir / "waypost.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)
    return str(caught.value)


# --- defaults and derived values -----------------------------------------------------------


def test_defaults_without_any_source(data_dir: Path) -> None:
    settings = load_settings(data_dir=data_dir)

    assert settings.data_dir == data_dir
    assert settings.mail_domain == "waypost.test"
    assert settings.operator_address == "operator@waypost.test"
    assert settings.reply_address == "journeys@waypost.test"
    assert settings.journeys_address == "journeys@waypost.test"
    assert settings.smtp_hostname == "waypost.test"
    assert settings.database_url == f"sqlite:///{(data_dir / 'waypost.sqlite3').resolve()}"
    assert (settings.smtp.host, settings.smtp.port) == ("127.0.0.1", 2525)
    assert settings.public_base_url == "http://127.0.0.1:8025"
    assert settings.trusted_networks == ()
    assert settings.web.admin_token is None


def test_default_data_dir_is_relative_to_the_working_directory(tmp_path: Path) -> None:
    settings = load_settings()

    assert settings.data_dir == Path("data")
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'waypost.sqlite3'}"
    assert settings.outbox_dir == Path("data") / "outbox"
    assert settings.blob_dir == Path("data") / "blobs"


@pytest.mark.parametrize(
    ("overrides", "operator", "reply", "journeys"),
    [
        (
            {"mail_domain": "trips.example.org"},
            "operator@trips.example.org",
            "journeys@trips.example.org",
            "journeys@trips.example.org",
        ),
        (
            {"mail_domain": "Trips.Example.ORG."},
            "operator@trips.example.org",
            "journeys@trips.example.org",
            "journeys@trips.example.org",
        ),
        ({"journeys": {"mailbox": "photos"}}, "operator@waypost.test", "photos@waypost.test", "photos@waypost.test"),
        (
            {"operator_email": "ops@example.net", "reply_from": "hello@example.net"},
            "ops@example.net",
            "hello@example.net",
            "journeys@waypost.test",
        ),
    ],
)
def test_derived_addresses(data_dir: Path, overrides: dict[str, Any], operator: str, reply: str, journeys: str) -> None:
    settings = load_settings(data_dir=data_dir, **overrides)

    assert (settings.operator_address, settings.reply_address, settings.journeys_address) == (operator, reply, journeys)


def test_database_url_setting_replaces_the_sqlite_default(data_dir: Path) -> None:
    url = "postgresql+psycopg://waypost@127.0.0.1:5432/waypost"

    assert load_settings(data_dir=data_dir, database={"url": url}).database_url == url


def test_settings_are_frozen(data_dir: Path) -> None:
    settings = load_settings(data_dir=data_dir)

    with pytest.raises(ValidationError):
        settings.mail_domain = "other.example"  # type: ignore[misc]


def test_config_error_stays_outside_the_processing_error_root() -> None:
    assert not issubclass(ConfigError, WaypostError)


# --- sources: toml < env < explicit ---------------------------------------------------------


def test_toml_top_level_and_group_keys(data_dir: Path) -> None:
    write_toml(
        data_dir,
        """
mail_domain = "toml.example"
operator_name = "Toml Operator"

[smtp]
host = "0.0.0.0"
port = 2600

[journeys]
thumbnail_px = 400
""",
    )
    settings = load_settings(data_dir=data_dir)

    assert settings.mail_domain == "toml.example"
    assert settings.operator_name == "Toml Operator"
    assert (settings.smtp.host, settings.smtp.port) == ("0.0.0.0", 2600)
    assert settings.journeys.thumbnail_px == 400
    assert settings.reply_address == "journeys@toml.example"


def test_toml_is_read_from_the_data_dir_named_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_toml(elsewhere, 'mail_domain = "elsewhere.example"\n')
    monkeypatch.setenv("WAYPOST_DATA_DIR", str(elsewhere))

    settings = load_settings()

    assert settings.data_dir == elsewhere
    assert settings.mail_domain == "elsewhere.example"


def test_environment_beats_toml(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(data_dir, 'mail_domain = "toml.example"\n[smtp]\nhost = "0.0.0.0"\nport = 2600\n')
    monkeypatch.setenv("WAYPOST_MAIL_DOMAIN", "env.example")
    monkeypatch.setenv("WAYPOST_SMTP__PORT", "2700")

    settings = load_settings(data_dir=data_dir)

    assert settings.mail_domain == "env.example"
    assert settings.smtp.port == 2700
    assert settings.smtp.host == "0.0.0.0"  # the rest of the toml group survives


@pytest.mark.parametrize(
    ("variable", "env_value", "overrides", "key", "expected"),
    [
        ("WAYPOST_MAIL_DOMAIN", "env.example", {"mail_domain": "flag.example"}, "mail_domain", "flag.example"),
        ("WAYPOST_SMTP__PORT", "2700", {"smtp": {"port": 2800}}, "smtp.port", 2800),
        ("WAYPOST_JOURNEYS__MAILBOX", "envbox", {"journeys": {"mailbox": "flagbox"}}, "journeys.mailbox", "flagbox"),
    ],
)
def test_explicit_overrides_beat_environment(
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    env_value: str,
    overrides: dict[str, Any],
    key: str,
    expected: object,
) -> None:
    monkeypatch.setenv(variable, env_value)

    assert attrgetter(key)(load_settings(data_dir=data_dir, **overrides)) == expected


def test_none_overrides_are_ignored(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CLI flags left unset arrive as None and must not hide the environment
    monkeypatch.setenv("WAYPOST_MAIL_DOMAIN", "env.example")

    assert load_settings(data_dir=data_dir, mail_domain=None).mail_domain == "env.example"


# --- secrets --------------------------------------------------------------------------------


def test_secret_read_from_file_and_masked(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-admin-token"
    secret_file = tmp_path / "admin_token"
    secret_file.write_text(f"{secret}\n", encoding="utf-8")
    monkeypatch.setenv("WAYPOST_WEB__ADMIN_TOKEN_FILE", str(secret_file))

    settings = load_settings(data_dir=data_dir)

    assert settings.web.admin_token is not None
    assert settings.web.admin_token.get_secret_value() == secret
    masked = settings.masked()
    assert masked["web"]["admin_token"] == "**********"
    assert secret not in json.dumps(masked)
    assert secret not in repr(settings)
    assert secret not in str(settings)


def test_secret_file_beats_toml_and_loses_to_env(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(data_dir, '[web]\nadmin_token = "from-toml"\n')
    secret_file = tmp_path / "admin_token"
    secret_file.write_text("from-file", encoding="utf-8")
    monkeypatch.setenv("WAYPOST_WEB__ADMIN_TOKEN_FILE", str(secret_file))

    token = load_settings(data_dir=data_dir).web.admin_token
    assert token is not None and token.get_secret_value() == "from-file"

    monkeypatch.setenv("WAYPOST_WEB__ADMIN_TOKEN", "from-env")
    token = load_settings(data_dir=data_dir).web.admin_token
    assert token is not None and token.get_secret_value() == "from-env"


def test_unreadable_secret_file_names_the_variable(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAYPOST_WEB__ADMIN_TOKEN_FILE", str(tmp_path / "missing"))

    message = config_error(data_dir=data_dir)

    assert "WAYPOST_WEB__ADMIN_TOKEN_FILE" in message
    assert "missing" in message


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "env"),
    [
        ('[smtp]\nport = "abc"\n', {}),
        ("[smtp]\nport = 70000\n", {}),
        ("[smtp]\nport = -1\n", {}),
        ("", {"WAYPOST_SMTP__PORT": "abc"}),
        ("", {"WAYPOST_SMTP__PORT": "70000"}),
    ],
    ids=["toml-text", "toml-too-big", "toml-negative", "env-text", "env-too-big"],
)
def test_bad_port_names_key_and_variable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, toml: str, env: dict[str, str]
) -> None:
    toml_path = write_toml(data_dir, toml)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    message = config_error(data_dir=data_dir)

    assert "smtp.port" in message
    assert "WAYPOST_SMTP__PORT" in message
    assert str(toml_path) in message


@pytest.mark.parametrize(
    ("overrides", "key", "variable"),
    [
        ({"mail_domain": "ann@example.org"}, "mail_domain", "WAYPOST_MAIL_DOMAIN"),
        ({"mail_domain": "  "}, "mail_domain", "WAYPOST_MAIL_DOMAIN"),
        ({"base_url": "ftp://example.org"}, "base_url", "WAYPOST_BASE_URL"),
        ({"worker": {"max_attempts": 0}}, "worker.max_attempts", "WAYPOST_WORKER__MAX_ATTEMPTS"),
        ({"trusted_networks": ["not-a-network"]}, "trusted_networks", "WAYPOST_TRUSTED_NETWORKS"),
    ],
)
def test_bad_values_name_key_and_variable(data_dir: Path, overrides: dict[str, Any], key: str, variable: str) -> None:
    message = config_error(data_dir=data_dir, **overrides)

    assert f"{key}:" in message
    assert variable in message


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('colour = "red"\n', "colour"),
        ("[smtp]\nprot = 25\n", "smtp.prot"),
        ("[nonsense]\nx = 1\n", "nonsense"),
    ],
)
def test_unknown_toml_key_is_refused_by_name(data_dir: Path, toml: str, key: str) -> None:
    write_toml(data_dir, toml)

    message = config_error(data_dir=data_dir)

    assert f"{key}:" in message
    assert "unknown key" in message


def test_unknown_explicit_key_is_refused_by_name(data_dir: Path) -> None:
    message = config_error(data_dir=data_dir, smtp_prot=25)

    assert "smtp_prot:" in message
    assert "unknown key" in message


@pytest.mark.parametrize(
    "text",
    ['mail_domain = "unterminated\n', "[smtp\nport = 1\n", "port = = 1\n", b"\xff\xfe\x00"],
)
def test_invalid_toml_names_the_file(data_dir: Path, text: str | bytes) -> None:
    path = data_dir / "waypost.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")

    message = config_error(data_dir=data_dir)

    assert str(path) in message
    assert "TOML" in message


@pytest.mark.parametrize(
    "address",
    [
        "noreply@example.org",
        "no-reply@example.org",
        "donotreply@example.org",
        "do-not-reply@example.org",
        "NoReply@Example.org",
        "Journeys <no-reply@example.org>",
    ],
)
@pytest.mark.parametrize("key", ["reply_from", "operator_email"])
def test_noreply_style_sender_is_refused(data_dir: Path, key: str, address: str) -> None:
    message = config_error(data_dir=data_dir, **{key: address})

    assert key in message
    assert "noreply" in message


def test_noreply_mailbox_is_refused_through_the_derived_reply_address(data_dir: Path) -> None:
    message = config_error(data_dir=data_dir, journeys={"mailbox": "noreply"})

    assert "reply_from" in message


@pytest.mark.parametrize("address", ["not an address", "journeys@", "@example.org"])
def test_unusable_reply_from_is_refused(data_dir: Path, address: str) -> None:
    assert "reply_from" in config_error(data_dir=data_dir, reply_from=address)


# --- trusted networks -----------------------------------------------------------------------

LOOPBACK_AND_PRIVATE = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("::1/128"),
)


@pytest.mark.parametrize(
    "value",
    [
        "10.0.0.0/8,127.0.0.1,::1",
        "10.0.0.0/8 127.0.0.1 ::1",
        " 10.0.0.0/8, 127.0.0.1 ,, ::1 ",
        "10.0.0.1/8,127.0.0.1,::1",  # host bits set: accepted, normalised to the network
    ],
)
def test_trusted_networks_from_environment_string(data_dir: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WAYPOST_TRUSTED_NETWORKS", value)

    assert load_settings(data_dir=data_dir).trusted_networks == LOOPBACK_AND_PRIVATE


def test_trusted_networks_from_toml_list(data_dir: Path) -> None:
    write_toml(data_dir, 'trusted_networks = ["10.0.0.0/8", "127.0.0.1", "::1"]\n')

    assert load_settings(data_dir=data_dir).trusted_networks == LOOPBACK_AND_PRIVATE


def test_bad_trusted_network_in_environment_names_the_variable(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYPOST_TRUSTED_NETWORKS", "10.0.0.0/8, 300.1.1.1")

    message = config_error(data_dir=data_dir)

    assert "trusted_networks" in message
    assert "WAYPOST_TRUSTED_NETWORKS" in message


def test_settings_class_uses_the_same_sources(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(data_dir, "[http]\nport = 9000\n")
    monkeypatch.setenv("WAYPOST_HTTP__HOST", "0.0.0.0")

    settings = Settings(data_dir=data_dir)

    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 9000)


def test_a_group_set_as_one_variable_is_a_config_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WAYPOST_SMTP", "oops")
    with pytest.raises(ConfigError, match="WAYPOST_SMTP__PORT"):
        load_settings(tmp_path)


@pytest.mark.parametrize("base_url", [None, "http://trips.example.org"])
@pytest.mark.parametrize("transport", ["smtp", "ses"])
def test_real_transports_need_an_https_base_url(data_dir: Path, transport: str, base_url: str | None) -> None:
    message = config_error(data_dir=data_dir, outbound={"transport": transport}, base_url=base_url)

    assert "base_url" in message and "https" in message and "RFC 8058" in message


def test_the_catcher_and_https_base_urls_are_fine(data_dir: Path) -> None:
    assert load_settings(data_dir, base_url="http://127.0.0.1:8025").outbound.transport == "catcher"
    settings = load_settings(data_dir, outbound={"transport": "smtp"}, base_url="https://trips.example.org")
    assert settings.public_base_url == "https://trips.example.org"


def test_dns_nameservers_are_parsed_and_refused_by_name(data_dir: Path) -> None:
    settings = load_settings(data_dir, dns_nameservers="127.0.0.1:5353, ::1 [::1]:54")
    assert settings.dns_nameservers == ("127.0.0.1:5353", "[::1]:53", "[::1]:54")
    message = config_error(data_dir=data_dir, dns_nameservers="ns1.example.org")
    assert "dns_nameservers" in message and "not an IP address" in message


def test_feedback_topics_come_as_a_list_or_a_comma_separated_variable(data_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (data_dir / "waypost.toml").write_text('[feedback]\nsns_topic_arns = ["arn:aws:sns:eu-west-1:111122223333:a"]\n')
    assert load_settings(data_dir).feedback.sns_topic_arns == ("arn:aws:sns:eu-west-1:111122223333:a",)
    monkeypatch.setenv("WAYPOST_FEEDBACK__SNS_TOPIC_ARNS",
                       "arn:aws:sns:eu-west-1:111122223333:a, arn:aws:sns:eu-west-1:111122223333:b")
    assert len(load_settings(data_dir).feedback.sns_topic_arns) == 2
    monkeypatch.setenv("WAYPOST_FEEDBACK__SNS_TOPIC_ARNS", "ses-feedback")
    with pytest.raises(ConfigError, match="feedback.sns_topic_arns.*not a topic ARN"):
        load_settings(data_dir)


def test_sns_messages_older_than_an_hour_are_refused_unless_set_otherwise(data_dir: Path) -> None:
    assert load_settings(data_dir).feedback.sns_max_age_minutes == 60
    assert load_settings(data_dir, feedback={"sns_max_age_minutes": 0}).feedback.sns_max_age_minutes == 0
    assert "feedback.sns_max_age_minutes" in config_error(data_dir=data_dir, feedback={"sns_max_age_minutes": -1})


def test_trusted_proxies_are_none_by_default_and_parsed_as_networks(data_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(data_dir).web.trusted_proxies == ()
    monkeypatch.setenv("WAYPOST_WEB__TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8 fd00::/8")
    assert load_settings(data_dir).web.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    monkeypatch.setenv("WAYPOST_WEB__TRUSTED_PROXIES", "nginx.internal")
    assert "web.trusted_proxies" in config_error(data_dir=data_dir)


@pytest.mark.parametrize("guard, message", [
    ({"bounce_warn": 0.09, "bounce_pause": 0.08}, "bounce_warn must not be above bounce_pause"),
    ({"complaint_warn": 0.01}, "complaint_warn must not be above complaint_pause"),
    ({"bounce_pause": 1.5}, "guard.bounce_pause"),
])
def test_guard_thresholds_must_make_sense(data_dir: Path, guard: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(data_dir, guard=guard)
