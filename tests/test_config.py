"""Configuration: bot.toml plus COSIGN_<SECTION>__<KEY> overrides and secrets (DESIGN.md §5)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "xoxb-0000-very-secret-token"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith(("COSIGN_", "SLACK_", "MATRIX_")):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    return str(caught.value)


def test_repo_bot_toml_has_the_documented_defaults() -> None:
    s = load_settings(ROOT / "bot.toml")
    assert s.database.url == "sqlite:///cosign.db"
    assert s.letters.timezone == "UTC"
    assert s.letters.output_dir == Path("out")
    assert s.letters.public_signatories is True
    assert s.scheduler.tick_seconds == 5
    assert s.scheduler.reminders == ["24h", "1h"]
    assert [offset for _, offset in s.scheduler.reminder_offsets] == [
        timedelta(hours=24),
        timedelta(hours=1),
    ]
    assert s.coordinators.console == ["coordinator"]
    assert s.coordinators.slack == [] and s.coordinators.matrix == []
    assert s.coordinators.announce == []
    assert s.console.enabled is True
    assert s.slack.enabled is False
    assert (s.slack.mode, s.slack.host, s.slack.port) == ("socket", "127.0.0.1", 3000)
    assert (s.slack.path, s.slack.api_url, s.slack.match_email) == ("/slack/events", "", False)
    assert s.matrix.enabled is False
    assert s.matrix.homeserver == "https://matrix.example.org"
    assert (s.matrix.user_id, s.matrix.device_id) == ("@cosign:example.org", "COSIGN")
    assert s.matrix.store_path == Path("matrix-store")
    assert s.matrix.encryption is True and s.matrix.allowed_inviters == []


def test_repo_bot_toml_matches_the_built_in_defaults() -> None:
    assert load_settings(ROOT / "bot.toml").model_dump() == Settings().model_dump()


def test_values_are_read_from_the_file(tmp_path: Path) -> None:
    s = load_settings(
        write(
            tmp_path,
            '[database]\nurl = "sqlite:///elsewhere.db"\n'
            '[letters]\ntimezone = "Europe/Brussels"\n'
            '[scheduler]\ntick_seconds = 0.5\nreminders = ["2h", "3d", "30m"]\n'
            '[coordinators]\nannounce = ["slack:C0123", "matrix:!room:example.org"]\n'
            '[slack]\nmode = "http"\nport = 8080\n',
        )
    )
    assert s.database.url == "sqlite:///elsewhere.db"
    assert str(s.letters.zone) == "Europe/Brussels"
    assert s.scheduler.tick_seconds == 0.5
    assert [label for label, _ in s.scheduler.reminder_offsets] == ["3d", "2h", "30m"]
    assert s.coordinators.announce == ["slack:C0123", "matrix:!room:example.org"]
    assert (s.slack.mode, s.slack.port) == ("http", 8080)
    assert s.console.enabled is True  # untouched sections keep their defaults


def test_missing_default_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(Path("bot.toml")).database.url == "sqlite:///cosign.db"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nowhere.toml")


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    assert "not valid TOML" in config_error(tmp_path, "[database\nurl = 1\n")


# --- environment overrides --------------------------------------------------------------------


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        '[database]\nurl = "sqlite:///from-file.db"\n'
        "[scheduler]\ntick_seconds = 3\n"
        '[coordinators]\nconsole = ["from-file"]\nslack = ["U0FILE"]\n',
    )
    monkeypatch.setenv("COSIGN_DATABASE__URL", "sqlite:///from-env.db")
    monkeypatch.setenv("COSIGN_SCHEDULER__TICK_SECONDS", "0.25")
    monkeypatch.setenv("COSIGN_COORDINATORS__CONSOLE", '["a","b"]')
    s = load_settings(path)
    assert s.database.url == "sqlite:///from-env.db"
    assert s.scheduler.tick_seconds == 0.25
    assert s.coordinators.console == ["a", "b"]
    # keys of the same section that the environment does not name keep the file's value
    assert s.coordinators.slack == ["U0FILE"]


def test_environment_override_without_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("cosign_slack__mode", "http")
    monkeypatch.setenv("COSIGN_SLACK__ENABLED", "true")
    s = load_settings(write(tmp_path, ""))
    assert s.slack.mode == "http" and s.slack.enabled is True


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("COSIGN_SCHEDULER__TICK_SECONDS", "often", "scheduler.tick_seconds"),
        ("COSIGN_SCHEDULER__TICK_SECONDS", "0", "scheduler.tick_seconds"),
        ("COSIGN_SLACK__MODE", "websocket", "slack.mode"),
        ("COSIGN_LETTERS__TIMEZONE", "Mars/Olympus_Mons", "letters.timezone"),
        ("COSIGN_SLACK__COLOUR", "blue", "slack.colour"),
    ],
)
def test_invalid_environment_value_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert key in config_error(tmp_path, "")


def test_malformed_list_in_environment_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSIGN_COORDINATORS__CONSOLE", "alice,bob")
    assert "coordinators" in config_error(tmp_path, "")


# --- invalid files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[scheduler]\ntick_seconds = -1\n", "scheduler.tick_seconds"),
        ('[scheduler]\ntick_seconds = "fast"\n', "scheduler.tick_seconds"),
        ('[scheduler]\nreminders = ["soon"]\n', "scheduler.reminders"),
        ('[slack]\nmode = "websocket"\n', "slack.mode"),
        ('[slack]\napi_url = "https://slack.com/api"\n', "slack.api_url"),
        ("[slack]\nport = 70000\n", "slack.port"),
        ('[letters]\ntimezone = "Europe/Atlantis"\n', "letters.timezone"),
        ('[coordinators]\nannounce = ["C0123"]\n', "coordinators.announce"),
        ('[coordinators]\nannounce = ["teams:general"]\n', "coordinators.announce"),
        ('[database]\nurl = "mysql://db"\n', "database.url"),
        ("[webhooks]\nenabled = true\n", "webhooks"),
        ("[slack]\ncolour = 1\n", "slack.colour"),
        ('[database]\nurl = "sqlite:///x.db"\npassword = "x"\n', "database.password"),
    ],
)
def test_invalid_file_value_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    assert key in config_error(tmp_path, toml)


def test_every_bad_key_is_named(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[slack]\nmode = "x"\n[letters]\ntimezone = "Nowhere/X"\n')
    assert "slack.mode" in message and "letters.timezone" in message


def test_secrets_table_in_the_file_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, f'[secrets]\nslack_bot_token = "{TOKEN}"\n')
    assert "secrets" in message and "environment" in message
    assert TOKEN not in message


# --- secrets ----------------------------------------------------------------------------------


def test_secrets_come_from_the_environment_and_never_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-" + TOKEN)
    monkeypatch.setenv("MATRIX_PASSWORD", "hunter2-" + TOKEN)
    s = load_settings(write(tmp_path, ""))
    token = s.secrets.slack_bot_token
    assert isinstance(token, SecretStr) and token.get_secret_value() == TOKEN
    assert s.secrets.matrix_password is not None
    assert s.secrets.matrix_password.get_secret_value() == "hunter2-" + TOKEN
    for text in (repr(s), str(s), repr(s.secrets), str(s.secrets), s.model_dump_json()):
        assert TOKEN not in text
    assert TOKEN not in str(s.model_dump())


def test_no_secrets_by_default(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""))
    assert s.secrets.slack_bot_token is None and s.secrets.matrix_access_token is None
