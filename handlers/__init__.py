"""Platform-neutral command handlers. They never import slack_bolt or nio.

Importing this package registers every command in ``REGISTRY``.
"""

from __future__ import annotations

from handlers import (  # noqa: E402,F401  (registration)
    coordinator,
    help,
    letters,
    remind,
    sign,
    status,
)
from handlers.registry import REGISTRY, SUBCOMMANDS

__all__ = ["REGISTRY", "SUBCOMMANDS"]
