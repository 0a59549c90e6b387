"""help: every command with its usage line; a handler's docstring is its help text."""

from __future__ import annotations

from typing import Any

from bot.core import Context
from handlers.common import typed
from handlers.registry import COORDINATOR_ENTRY, REGISTRY


@REGISTRY.command("help", usage="help", template="replies/help.j2")
def show_help(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Show the commands you can use."""
    platform = ctx.invocation.platform
    commands = [
        {"usage": typed(platform, cmd.usage), "help": cmd.help}
        for cmd in REGISTRY.commands.values()
        if cmd.name != COORDINATOR_ENTRY
    ]
    return {
        "commands": commands,
        "coordinator": ctx.is_coordinator,
        "coordinator_help": typed(platform, "cosign help"),
    }
