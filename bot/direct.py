"""Direct messages to a roster member, through the outbox (DESIGN.md §8, rule 6).

A member is reached on one platform: Slack if they have a Slack account, else Matrix, else the
console (where a member_id is its own account). A member with no chat account is reached through
the staff who act for them. Each message is an outbox row of kind `dm` whose channel is the
account (a Slack user id, a Matrix user id, a console member_id); the platform opens or reuses
the direct conversation when it delivers it. The idempotency key makes a restart, a second
scheduler pass or a replayed command queue it once.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from bot.models import Identity, Member
from bot.store import outbox

DM = "dm"
PLATFORM_ORDER = ("slack", "matrix", "console")


def account_of(session: Session, *, member: Member) -> tuple[str, str] | None:
    """(platform, account) where this member's own direct messages go, or None."""
    assert member.id is not None
    linked = session.exec(
        select(Identity.platform, Identity.external_id)
        .where(Identity.member_pk == member.id)
        .order_by(col(Identity.id))
    ).all()
    by_platform: dict[str, str] = {}
    for platform, external_id in linked:
        by_platform.setdefault(platform, external_id)
    for platform in PLATFORM_ORDER:
        if platform in by_platform:
            return platform, by_platform[platform]
    if member.member_id:
        return "console", member.member_id  # on the console a member_id is its own account
    return None


def enqueue_dm(
    session: Session,
    *,
    member: Member,
    key: str,
    template: str,
    context: dict[str, Any],
    letter_pk: int | None = None,
) -> bool:
    """Queue one direct message to `member`: True if queued, False if it has no account or a
    message with this key was queued before.

    `key` names what the message is about (e.g. f"reminder:{slug}:{offset}:{member_id}"); the
    platform and account are added to it, so the same key never sends twice anywhere.
    """
    target = account_of(session, member=member)
    if target is None:
        return False
    platform, account = target
    queued = outbox.enqueue(
        session,
        key=f"dm:{key}",
        platform=platform,
        channel=account,
        kind=DM,
        payload={"template": template, "context": context, "member_id": member.member_id},
        letter_pk=letter_pk,
    )
    return queued is not None
