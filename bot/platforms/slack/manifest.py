"""`cosign slack manifest`: the Slack app manifest this bot needs, as YAML."""

from __future__ import annotations

import json
from typing import Any

from bot.config import SlackSettings
from handlers.common import SLACK_SLASH_COMMANDS

# Slack's built-in slash commands. An app cannot declare one: Slack rejects the whole
# `slash_commands` array of a manifest that contains one ("the slash command has an invalid name").
# Sources: Slack Help Center, "Use built-in slash commands" (slack.com/help/articles/201259356);
# api.slack.com/interactivity/slash-commands ("Built-in slash commands", e.g. /topic, /remind);
# the rejection of `/status` seen by another bot's users (NousResearch/hermes-agent#17054, #18456).
SLACK_BUILTIN_COMMANDS = frozenset(
    {
        "/active", "/apps", "/archive", "/away", "/call", "/clear", "/collapse", "/dm", "/dnd",
        "/expand", "/feed", "/feedback", "/help", "/invite", "/join", "/kick", "/leave", "/me",
        "/msg", "/mute", "/open", "/pro", "/remind", "/remove", "/rename", "/search",
        "/shortcuts", "/shrug", "/star", "/status", "/topic", "/who",
    }
)  # fmt: skip

_DESCRIPTIONS = {
    "sign": ("Sign an open letter", "[SLUG]"),
    "unsign": ("Withdraw your signature", "[SLUG]"),
    "letters": ("Letters open for signing", ""),
    "cosign": ("status, help, and the coordinators' commands", "status [SLUG] | help | …"),
}
COMMANDS = [(f"/{name}", *_DESCRIPTIONS[name]) for name in SLACK_SLASH_COMMANDS]


# The App Home's Messages tab is where a user reads the bot's direct messages (long replies as a
# file; notices to coordinators). Since February 2021 it is opt-in per app: without
# `messages_tab_enabled` chat.postMessage to a user still answers ok, but the user has no tab to
# read it in (slackapi/python-slack-sdk#1015; getsentry/eng-pipes#329). Not read-only, so members
# can type `/sign` there too ("Allow users to send Slash commands and messages from the messages
# tab"; manifest reference: `messages_tab_read_only_enabled`, "whether or not the users can send
# messages to your app"). The bot does not read plain DMs (no `message.im`), only commands.
APP_HOME = {
    "home_tab_enabled": False,
    "messages_tab_enabled": True,
    "messages_tab_read_only_enabled": False,
}


def manifest(settings: SlackSettings, url: str | None = None) -> dict[str, Any]:
    socket = settings.mode == "socket" and not url
    scopes = [
        "commands",
        "chat:write",
        # chat.postMessage to public channels the bot is not in: letter posts, reminders
        "chat:write.public",
        # conversations.join: file uploads need membership, which chat:write.public does not give
        # (private channels cannot be joined: coordinators invite the bot)
        "channels:join",
        "files:write",
        "users:read",
        "app_mentions:read",
        "im:write",
    ]
    if settings.match_email:
        scopes.append("users:read.email")
    commands = []
    for name, description, hint in COMMANDS:
        command: dict[str, Any] = {
            "command": name,
            "description": description,
            "should_escape": True,
        }
        if hint:
            command["usage_hint"] = hint
        if not socket:
            command["url"] = url
        commands.append(command)
    interactivity: dict[str, Any] = {"is_enabled": True}
    events: dict[str, Any] = {"bot_events": ["app_mention"]}
    if not socket:
        interactivity["request_url"] = url
        events["request_url"] = url
    return {
        "display_information": {
            "name": "cosign",
            "description": "Co-signatures of open letters: sign, withdraw, status.",
        },
        "features": {
            "app_home": dict(APP_HOME),
            "bot_user": {"display_name": "cosign", "always_online": True},
            "slash_commands": commands,
        },
        "oauth_config": {"scopes": {"bot": scopes}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket,
            "token_rotation_enabled": False,
        },
    }


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for the manifest (strings quoted as JSON, which YAML accepts)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                body = to_yaml(item, indent + 1).lstrip()
                lines.append(f"{pad}- {body}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)
