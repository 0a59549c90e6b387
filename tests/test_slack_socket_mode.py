"""Socket Mode against a local websocket server speaking Slack's envelope protocol; the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import make_settings
from fakeslack import FakeSlack, block_action_payload, slash_command_payload
from helpers import create_example_letter
from slack_support import ROSTER, reply_text

from bot.config import ConfigError
from bot.db import Database
from bot.platforms.slack import SlackPlatform
from bot.platforms.slack.manifest import manifest, to_yaml
from bot.roster import import_roster
from bot.runtime import Bot


async def test_socket_mode_commands_and_buttons(db_url: str, tmp_path: Path) -> None:
    async with FakeSlack() as fake:
        settings = make_settings(
            db_url, tmp_path, slack={"enabled": True, "mode": "socket", "api_url": fake.api_url}
        )
        database = Database(settings.database.url)
        with database.session() as session:
            import_roster(session, data=ROSTER, actor="test")
        create_example_letter(database, settings, post_to=["slack:C1"])
        platform = SlackPlatform(settings, bot_token=fake.token, app_token=fake.app_token)
        bot = Bot(settings, database, [platform], scheduler=False, poll_seconds=0.05)
        await bot.start()
        try:
            await fake.socket_mode.wait_connected()
            envelope = await fake.socket_mode.send_envelope(
                "slash_commands",
                slash_command_payload("/sign", "", "UABETZ", response_url=fake.response_url("s1")),
            )
            ack = await fake.socket_mode.wait_ack(envelope)
            assert ack["envelope_id"] == envelope
            # the answer travels in the acknowledgement's payload, as over HTTP
            assert reply_text(ack["payload"]).startswith("✅ You signed")
            click = await fake.socket_mode.send_envelope(
                "interactive",
                block_action_payload(
                    "cosign_sign",
                    "interpol-2021",
                    "UALTON",
                    "C1",
                    response_url=fake.response_url("s2"),
                ),
            )
            await fake.socket_mode.wait_ack(click)
            (call,) = await fake.wait_for("response_url", 1)
            assert "as Lord (David) Alton (United Kingdom)?" in reply_text(call.args)
        finally:
            await bot.stop()
            database.dispose()


def test_missing_secrets_name_the_key(tmp_path: Path) -> None:
    settings = make_settings("sqlite:///x.db", tmp_path, slack={"enabled": True, "mode": "http"})
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
        SlackPlatform(settings)
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        SlackPlatform(settings, bot_token="xoxb-1")
    socket = make_settings("sqlite:///x.db", tmp_path, slack={"enabled": True, "mode": "socket"})
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        SlackPlatform(socket, bot_token="xoxb-1")


def test_manifest_declares_commands_scopes_and_mode(tmp_path: Path) -> None:
    socket = make_settings("sqlite:///x.db", tmp_path, slack={"mode": "socket"}).slack
    data = yaml.safe_load(to_yaml(manifest(socket)))
    commands = {c["command"] for c in data["features"]["slash_commands"]}
    assert commands == {"/sign", "/unsign", "/letters", "/cosign"}
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "chat:write.public", "files:write", "users:read"} <= scopes
    assert "users:read.email" not in scopes
    assert data["settings"]["socket_mode_enabled"] is True
    assert data["settings"]["interactivity"]["is_enabled"] is True

    http = make_settings(
        "sqlite:///x.db", tmp_path, slack={"mode": "http", "match_email": True}
    ).slack
    url = "https://cosign.example.org/slack/events"
    data = yaml.safe_load(to_yaml(manifest(http, url)))
    assert "users:read.email" in data["oauth_config"]["scopes"]["bot"]
    assert data["settings"]["socket_mode_enabled"] is False
    assert data["settings"]["interactivity"]["request_url"] == url
    assert all(c["url"] == url for c in data["features"]["slash_commands"])


def test_manifest_lets_users_read_and_answer_the_bots_direct_messages(tmp_path: Path) -> None:
    """The Messages tab is opt-in: without it the bot's DMs (long replies, notices that a letter
    could not be posted) are accepted by Slack and read by nobody; not read-only, so `/sign` can
    be typed in that DM. And the bot may join the public channels it uploads files to."""
    settings = make_settings("sqlite:///x.db", tmp_path, slack={"mode": "socket"}).slack
    data = yaml.safe_load(to_yaml(manifest(settings)))
    app_home = data["features"]["app_home"]
    assert app_home["messages_tab_enabled"] is True
    assert app_home["messages_tab_read_only_enabled"] is False
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    assert {"channels:join", "im:write", "chat:write.public"} <= scopes
