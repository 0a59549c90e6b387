"""The Slack platform, one module per part.

- ``app``: ``SlackPlatform``, the Bolt app's lifecycle (HTTP endpoint or Socket Mode, /healthz)
- ``listeners``: slash commands, buttons and app mentions in; replies through response_url out
- ``outbound``: outbox messages (letter posts, messages, compiled letters) and live-counter edits
- ``blocks``: Block Kit layouts within Slack's limits (no I/O)
- ``manifest``: the app manifest ``cosign slack manifest`` prints
"""

from __future__ import annotations

from bot.platforms.slack.app import SlackPlatform

__all__ = ["SlackPlatform"]
