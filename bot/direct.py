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

from bot.models import Identity, Member, StaffLink
from bot.store import outbox

DM = "dm"
PLATFORM_ORDER = ("slack", "matrix", "console")


def _chat_account(session: Session, member_pks: list[int]) -> tuple[str, str] | None:
    """The first Slack, else Matrix account linked to these members (in the order given)."""
    linked = session.exec(
        select(Identity.member_pk, Identity.platform, Identity.external_id)
        .where(col(Identity.member_pk).in_(member_pks))
        .order_by(col(Identity.id))
    ).all()
    by_platform: dict[tuple[int, str], str] = {}
    for member_pk, platform, external_id in linked:
        by_platform.setdefault((member_pk, platform), external_id)
    for pk in member_pks:
        for platform in PLATFORM_ORDER:
            if (pk, platform) in by_platform:
                return platform, by_platform[(pk, platform)]
    return None


def account_of(session: Session, *, member: Member) -> tuple[str, str] | None:
    """(platform, account) where this member's direct messages go, or None: their own Slack or
    Matrix account, else that of the staff who act for them (DESIGN.md §8: a member with no
    chat account is reached through their staff), else the console."""
    assert member.id is not None
    own = _chat_account(session, [member.id])
    if own is not None:
        return own
    staff = session.exec(
        select(StaffLink.staff_pk)
        .join(Member, col(Member.id) == col(StaffLink.staff_pk))
        .where(StaffLink.member_pk == member.id, col(Member.active))
        .order_by(col(StaffLink.id))
    ).all()
    through_staff = _chat_account(session, list(staff)) if staff else None
    if through_staff is not None and through_staff[0] != "console":
        return through_staff
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
