"""Staff who sign for the members they act for (DESIGN.md §8).

Whom a staff account may sign for, the letter's proxy mode, the direct messages that tell the
member, and the coordinators' corrections: confirming a signature that awaits its member, and
voiding one recorded in error. Each runs in the caller's transaction, so the change, its audit
event and its direct messages commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from bot import direct
from bot.campaign import CampaignError
from bot.config import Settings
from bot.db import Database
from bot.models import Letter, LetterState, Member, Role, Signature, StaffLink
from bot.store import audit, letters, members, signatures
from bot.timeutil import format_utc, iso_utc

DIRECT = "direct"
CONFIRM = "confirm"


def acts_for(session: Session, *, staff: Member) -> list[Member]:
    """The active members a staff account acts for, in the roster's order; [] for anyone else."""
    if staff.role != Role.staff.value or staff.id is None:
        return []
    query = (
        select(Member)
        .join(StaffLink, col(StaffLink.member_pk) == col(Member.id))
        .where(StaffLink.staff_pk == staff.id, col(Member.active))
        .order_by(col(StaffLink.id))
    )
    return list(session.exec(query).all())


@dataclass(frozen=True)
class SignChoice:
    """Whom a Sign click would sign for: `for_id` is "" for the presser themselves."""

    for_id: str
    label: str


def sign_choices(database: Database, *, platform: str, external_id: str) -> list[SignChoice] | None:
    """What a Sign button's confirmation offers this account: itself (a member), the members it
    acts for (staff; [] if none), or None for an unknown account. Synchronous: call it in a
    thread."""
    with database.session() as session:
        member = members.member_for_account(session, platform=platform, external_id=external_id)
        if member is None:
            return None
        if member.role == Role.staff.value:
            return [SignChoice(m.member_id, label(m)) for m in acts_for(session, staff=member)]
        return [SignChoice("", label(member))]


def proxy_mode(letter: Letter, settings: Settings) -> str:
    """The letter's front matter `proxy`, else `[letters].proxy`."""
    return letter.proxy or settings.letters.proxy


def label(member: Member) -> str:
    """'Senator Eric Abetz (Australia)', or the name alone for someone without a group."""
    name = member.rendered_name()
    return f"{name} ({member.group})" if member.group else name


def signer_of(session: Session, signature: Signature) -> Member | None:
    """The staff who signed this signature for its member; None if the member signed."""
    if signature.signed_by_pk is None:
        return None
    return members.get_member_by_pk(session, pk=signature.signed_by_pk)


def _letter_context(letter: Letter) -> dict[str, Any]:
    return {"title": letter.title, "slug": letter.slug, "deadline": format_utc(letter.deadline)}


def tell(
    session: Session,
    *,
    letter: Letter,
    to: Member,
    about: str,
    template: str,
    context: dict[str, Any],
) -> bool:
    """One direct message about a proxy action (`about` makes its idempotency key); the
    delivering platform adds the command prefix its users type."""
    return direct.enqueue_dm(
        session,
        member=to,
        key=f"{about}:{letter.slug}:{to.member_id}",
        template=template,
        context=_letter_context(letter) | context,
        letter_pk=letter.id,
    )


def proxy_detail(staff: Member | None, principal: Member) -> dict[str, Any]:
    """What every audit event about a proxy action carries: actor (staff) and principal."""
    return {
        "staff": staff.member_id if staff is not None else None,
        "principal": principal.member_id,
    }


def _require_open(session: Session, letter: Letter, now: datetime, verb: str) -> None:
    letters.lock_letter(session, letter=letter, exclusive=True)
    if letter.state == LetterState.draft.value:
        raise CampaignError(f"{letter.slug} is a draft: nobody has signed it")
    if letter.state == LetterState.closed.value or letter.deadline <= now:
        closed = letter.closed_at or letter.deadline
        raise CampaignError(
            f"signing {letter.slug} closed at {format_utc(closed)}; too late to {verb}"
        )


def confirm_signature(
    session: Session,
    *,
    settings: Settings,
    letter: Letter,
    member: Member,
    actor: str,
    now: datetime,
) -> tuple[Signature, Member | None]:
    """A coordinator counts a staff signature that awaits its member; returns it and its staff."""
    _require_open(session, letter, now, "confirm")
    if proxy_mode(letter, settings) != CONFIRM:
        raise CampaignError(
            f"{letter.slug} is in direct proxy mode: staff signatures count at once, so there "
            "is nothing to confirm"
        )
    assert letter.id is not None and member.id is not None
    signature = signatures.active_signature(session, letter_pk=letter.id, member_pk=member.id)
    if signature is None or not signature.awaiting_member:
        raise CampaignError(
            f"{member.member_id} has no signature awaiting confirmation on {letter.slug}"
        )
    signatures.confirm(session, signature=signature)
    staff = signer_of(session, signature)
    audit.append(
        session,
        actor=actor,
        action="signature.confirmed",
        letter_slug=letter.slug,
        member_id=member.member_id,
        detail={"by": "coordinator", **proxy_detail(staff, member)},
        at=now,
    )
    tell(
        session,
        letter=letter,
        to=member,
        about=f"proxy-confirmed:{signature.id}",
        template="replies/dm_proxy_confirmed.j2",
        context={"name": member.rendered_name(), "staff": _name_of(staff)},
    )
    return signature, staff


def void_signature(
    session: Session,
    *,
    letter: Letter,
    member: Member,
    reason: str,
    actor: str,
    now: datetime,
) -> Member | None:
    """Remove a signature recorded in error; the member (and the staff who signed) are told.
    Returns the staff who had signed it, if any."""
    reason = " ".join(reason.split())
    if not reason:
        raise CampaignError("give the reason for voiding the signature (it goes in the audit)")
    _require_open(session, letter, now, "void a signature")
    assert letter.id is not None and member.id is not None
    signature = signatures.active_signature(session, letter_pk=letter.id, member_pk=member.id)
    if signature is None:
        raise CampaignError(
            f"{member.member_id} has not signed {letter.slug}: there is no signature to void"
        )
    staff = signer_of(session, signature)
    signatures.void(session, signature=signature)
    audit.append(
        session,
        actor=actor,
        action="signature.voided",
        letter_slug=letter.slug,
        member_id=member.member_id,
        detail={
            "reason": reason,
            "signed_at": iso_utc(signature.signed_at),
            "via": signature.via_platform,
            "awaiting_member": signature.awaiting_member,
            **proxy_detail(staff, member),
        },
        at=now,
    )
    context = {"name": member.rendered_name(), "reason": reason, "at": format_utc(now)}
    about = f"voided:{signature.id}"
    tell(
        session,
        letter=letter,
        to=member,
        about=about,
        template="replies/dm_voided.j2",
        context=context,
    )
    if staff is not None and direct.account_of(session, member=staff) != direct.account_of(
        session, member=member
    ):  # a member without a chat account was told through this same staff account already
        tell(
            session,
            letter=letter,
            to=staff,
            about=about,
            template="replies/dm_voided.j2",
            context=context,
        )
    return staff


def _name_of(member: Member | None) -> str:
    return member.rendered_name() if member is not None else ""
