"""Signatures: signing is idempotent per (letter, member) across platforms and retries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.models import Letter, Member, Signature
from bot.names import Signatory, render_name


@dataclass(frozen=True)
class SignOutcome:
    signature: Signature
    created: bool  # False: the member had already signed (the existing signature is returned)


def active_signature(session: Session, *, letter_pk: int, member_pk: int) -> Signature | None:
    query = select(Signature).where(
        Signature.letter_pk == letter_pk,
        Signature.member_pk == member_pk,
        col(Signature.withdrawn_at).is_(None),
    )
    return session.exec(query).first()


def sign(
    session: Session,
    *,
    letter: Letter,
    member: Member,
    at: datetime,
    via_platform: str,
    via_external_id: str,
    via_event_id: str = "",
) -> SignOutcome:
    """Insert unless one is active; a concurrent duplicate loses on the unique index."""
    assert letter.id is not None and member.id is not None
    existing = active_signature(session, letter_pk=letter.id, member_pk=member.id)
    if existing is not None:
        return SignOutcome(existing, created=False)
    signature = Signature(
        letter_pk=letter.id,
        member_pk=member.id,
        signed_at=at,
        via_platform=via_platform,
        via_external_id=via_external_id,
        via_event_id=via_event_id,
        letter_version=letter.version,
    )
    try:
        with session.begin_nested():
            session.add(signature)
    except IntegrityError:
        winner = active_signature(session, letter_pk=letter.id, member_pk=member.id)
        if winner is None:
            raise
        return SignOutcome(winner, created=False)
    return SignOutcome(signature, created=True)


def withdraw(session: Session, *, letter: Letter, member: Member, at: datetime) -> Signature | None:
    """Withdraw the active signature; None when there was none."""
    assert letter.id is not None and member.id is not None
    existing = active_signature(session, letter_pk=letter.id, member_pk=member.id)
    if existing is None:
        return None
    result = session.execute(
        update(Signature)
        .where(col(Signature.id) == existing.id, col(Signature.withdrawn_at).is_(None))
        .values(withdrawn_at=at)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return None
    session.refresh(existing)
    return existing


def count_active(session: Session, *, letter_pk: int) -> int:
    query = (
        select(func.count())
        .select_from(Signature)
        .where(Signature.letter_pk == letter_pk, col(Signature.withdrawn_at).is_(None))
    )
    return int(session.exec(query).one())


def signatories(session: Session, *, letter_pk: int) -> list[Signatory]:
    """Active signatories with their rendered names (unsorted: ordering is bot.names' job)."""
    rows: Sequence[tuple[Signature, Member]] = session.exec(  # type: ignore[assignment]
        select(Signature, Member)
        .join(Member, col(Member.id) == col(Signature.member_pk))
        .where(Signature.letter_pk == letter_pk, col(Signature.withdrawn_at).is_(None))
    ).all()
    return [
        Signatory(
            member_id=member.member_id,
            name=render_name(
                title=member.title,
                given_name=member.given_name,
                family_name=member.family_name,
                post_nominals=member.post_nominals,
                display_name=member.display_name,
            ),
            group=member.group,
            family_name=member.family_name or member.display_name,
            given_name=member.given_name,
            signed_at=signature.signed_at,
            via=signature.via_platform,
        )
        for signature, member in rows
    ]


def signed_member_pks(session: Session, *, letter_pk: int) -> set[int]:
    query = select(Signature.member_pk).where(
        Signature.letter_pk == letter_pk, col(Signature.withdrawn_at).is_(None)
    )
    return set(session.exec(query).all())


def count_other_versions(session: Session, *, letter: Letter) -> int:
    """How many active signatures were given to an earlier text of the letter."""
    query = (
        select(func.count())
        .select_from(Signature)
        .where(
            Signature.letter_pk == letter.id,
            col(Signature.withdrawn_at).is_(None),
            Signature.letter_version != letter.version,
        )
    )
    return int(session.exec(query).one())
