"""help: every command with its usage line; a handler's docstring is its help text."""

from __future__ import annotations

from typing import Any

from bot.core import Context
from handlers.common import prefix_for
from handlers.registry import REGISTRY


@REGISTRY.command("help", usage="help", template="replies/help.j2")
def show_help(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Show the commands you can use."""
    commands = [
        {"usage": cmd.usage, "help": cmd.help}
        for cmd in REGISTRY.commands.values()
        if not cmd.coordinator_only
    ]
    return {
        "prefix": prefix_for(ctx.invocation.platform),
        "commands": commands,
        "coordinator": ctx.is_coordinator,
    }
