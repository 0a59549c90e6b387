"""Direct messages to a roster member, through the outbox (DESIGN.md §8, rule 6).

A member is reached on one platform: Slack if they have a Slack account, else Matrix, else the
console (where a member_id is its own account). A member with no chat account is reached through
the staff who act for them. Each message is an outbox row of kind `dm` whose channel is the
account (a Slack user id, a Matrix user id, a console member_id); the platform opens or reuses
the direct conversation when it delivers it. The idempotency key makes a restart, a second
scheduler pass or a replayed command queue it once.

Kind `dm_file` is a direct message with a file of a letter attached (payload `file`: the
letter's slug and the compiled format, read from the database when it is sent, so the row stays
small): the copy of the published PDF each signatory gets (DESIGN.md §10, bot.copies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from bot.models import Identity, Member, StaffLink
from bot.models._types import utcnow
from bot.store import outbox

DM = "dm"
DM_FILE = "dm_file"  # sent when nothing else is due (bot.store.outbox.BULK_KINDS)
PLATFORM_ORDER = ("slack", "matrix", "console")

Accounts = dict[tuple[int, str], str]  # (member pk, platform) -> its first account there


def _linked(session: Session, member_pks: Sequence[int]) -> Accounts:
    """Each member's first account (by link order) on each platform."""
    linked = session.exec(
        select(Identity.member_pk, Identity.platform, Identity.external_id)
        .where(col(Identity.member_pk).in_(list(member_pks)))
        .order_by(col(Identity.id))
    ).all()
    by_platform: Accounts = {}
    for member_pk, platform, external_id in linked:
        by_platform.setdefault((member_pk, platform), external_id)
    return by_platform


def _chat_account(by_platform: Accounts, member_pks: Sequence[int]) -> tuple[str, str] | None:
    """The first Slack, else Matrix account linked to these members (in the order given)."""
    for pk in member_pks:
        for platform in PLATFORM_ORDER:
            if (pk, platform) in by_platform:
                return platform, by_platform[(pk, platform)]
    return None


def accounts_of(session: Session, members: Sequence[Member]) -> dict[int, tuple[str, str]]:
    """account_of for many members in two queries (the copies of a letter go to thousands):
    member pk -> (platform, account); members who cannot be reached are left out."""
    pks = [m.id for m in members if m.id is not None]
    if not pks:
        return {}
    links = session.exec(
        select(StaffLink.member_pk, StaffLink.staff_pk)
        .join(Member, col(Member.id) == col(StaffLink.staff_pk))
        .where(col(StaffLink.member_pk).in_(pks), col(Member.active))
        .order_by(col(StaffLink.id))
    ).all()
    staff_of: dict[int, list[int]] = {}
    for member_pk, staff_pk in links:
        staff_of.setdefault(member_pk, []).append(staff_pk)
    by_platform = _linked(session, pks + [s for staff in staff_of.values() for s in staff])
    found: dict[int, tuple[str, str]] = {}
    for member in members:
        if member.id is None:
            continue
        own = _chat_account(by_platform, [member.id])
        through_staff = _chat_account(by_platform, staff_of.get(member.id, []))
        if own is not None:
            found[member.id] = own
        elif through_staff is not None and through_staff[0] != "console":
            found[member.id] = through_staff
        elif member.member_id:
            found[member.id] = ("console", member.member_id)  # a member_id is its own account
    return found


def account_of(session: Session, *, member: Member) -> tuple[str, str] | None:
    """(platform, account) where this member's direct messages go, or None: their own Slack or
    Matrix account, else that of the staff who act for them (DESIGN.md §8: a member with no
    chat account is reached through their staff), else the console."""
    assert member.id is not None
    return accounts_of(session, [member]).get(member.id)


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


@dataclass(frozen=True)
class Direct:
    """One direct message of a batch: to whom, what it is about (its key), its context."""

    member: Member
    key: str
    context: dict[str, Any]


def enqueue_dms(
    session: Session,
    directs: Sequence[Direct],
    *,
    template: str,
    letter_pk: int | None = None,
    attach: dict[str, str] | None = None,
) -> int:
    """Queue many direct messages at once, as enqueue_dm would one by one (same keys, same
    accounts), in a few queries; with `attach` ({"slug", "format"}) each carries that file
    (kind `dm_file`). How many were new."""
    accounts = accounts_of(session, [d.member for d in directs])
    rows = []
    for direct in directs:
        assert direct.member.id is not None
        target = accounts.get(direct.member.id)
        if target is None:
            continue
        payload: dict[str, Any] = {
            "template": template,
            "context": direct.context,
            "member_id": direct.member.member_id,
        }
        if attach is not None:
            payload["file"] = attach
        rows.append(
            {
                "idempotency_key": f"dm:{direct.key}",
                "platform": target[0],
                "channel": target[1],
                "kind": DM if attach is None else DM_FILE,
                "payload": payload,
                "letter_pk": letter_pk,
            }
        )
    return outbox.enqueue_many(session, rows, now=utcnow())
