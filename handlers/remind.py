"""remind off / remind on: a member stops or resumes reminders by direct message (DESIGN.md §8).

Stored on the member, not the account, so it holds on every platform; channel reminders are not
affected. Every change is audited.
"""

from __future__ import annotations

from typing import Any

from bot.core import CommandError, Context
from bot.store import audit
from handlers.common import typed
from handlers.registry import REGISTRY


@REGISTRY.command("remind", usage="remind off|on", template="replies/remind.j2")
def remind(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Stop (off) or resume (on) the reminders I send you by direct message."""
    choice = args[0].lower() if len(args) == 1 else ""
    if choice not in ("off", "on"):
        raise ctx.usage()
    member = ctx.member
    if member is None:
        raise CommandError(
            "Your account is not linked to a roster member, so I send you no reminders. "
            "Ask a coordinator to link it."
        )
    off = choice == "off"
    unchanged = member.reminders_off == off
    if not unchanged:
        member.reminders_off = off
        ctx.session.add(member)
        audit.append(
            ctx.session,
            actor=ctx.actor,
            action="member.reminders_off" if off else "member.reminders_on",
            member_id=member.member_id,
            detail={"dm_reminders": choice},
        )
    name = member.rendered_name()
    return {
        "off": off,
        "unchanged": unchanged,
        "name": f"{name} ({member.group})" if member.group else name,
        "other": typed(ctx.invocation.platform, "remind on" if off else "remind off"),
    }
