"""The two registries: chat commands, and the coordinator's `cosign` subcommands."""

from __future__ import annotations

from bot.core import Registry

REGISTRY = Registry()
SUBCOMMANDS = Registry()
