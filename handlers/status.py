"""status: counts by group and time left; names and gaps for coordinators."""

from __future__ import annotations

from typing import Any

from bot.core import Context
from bot.status import status_view
from bot.timeutil import format_utc
from handlers.common import resolve_letter, typed
from handlers.registry import REGISTRY


@REGISTRY.command("status", usage="status [SLUG]", template="replies/status.j2")
def status(ctx: Context, args: list[str]) -> dict[str, Any]:
    """How many have signed, by group, how long is left, and whether you signed."""
    letter = resolve_letter(ctx, args)
    view = status_view(
        ctx.session,
        settings=ctx.settings,
        letter=letter,
        asker=ctx.member,
        coordinator=ctx.is_coordinator,
        now=ctx.now,
    )
    mine = view.asker_signature
    return {
        "view": view,
        "known": ctx.member is not None and ctx.member.role == "member",
        "signed_at": format_utc(mine.signed_at) if mine is not None else None,
        "signed_version": mine.version_number if mine is not None else None,
        "sign_again": typed(ctx.invocation.platform, f"sign {letter.slug}"),
    }
