"""The two registries: chat commands, and the coordinator's `cosign` subcommands."""

from __future__ import annotations

from bot.core import Registry

REGISTRY = Registry()
SUBCOMMANDS = Registry()

# `cosign …` is the coordinators' entry point; everyone may use it for the everyone-commands
# (`cosign status`), which is how Slack users type the commands Slack does not let an app declare.
COORDINATOR_ENTRY = "cosign"
