"""Signatures: signing is idempotent per (letter, member) across platforms and retries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import bindparam, delete, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from bot.models import Letter, Member, Signature
from bot.names import (
    ListedSignatory,
    Signatory,
    filing_family,
    is_current_filing_key,
    nfc,
    render_name,
)


class SignOutcome:
    """What `sign` did. `created`: False when the member had already signed (`signature` is then
    the existing one). A new signature is built only when asked for: the common reply ("you
    signed") needs nothing from it, and constructing an SQLModel object costs ~0.1 ms."""

    __slots__ = ("_signature", "_values", "created")

    def __init__(
        self,
        signature: Signature | None = None,
        created: bool = False,
        *,
        values: dict[str, Any] | None = None,
    ) -> None:
        if signature is None and values is None:
            raise ValueError("a signature or its values")
        self._signature = signature
        self._values = values
        self.created = created

    @property
    def signature(self) -> Signature:
        if self._signature is None:
            self._signature = Signature(**(self._values or {}))
        return self._signature


# Built once: constructing a statement cost more than running it (profiled; ~0.2 ms each).
_ACTIVE_SIGNATURE = select(Signature).where(
    Signature.letter_pk == bindparam("letter_pk"),
    Signature.member_pk == bindparam("member_pk"),
    col(Signature.withdrawn_at).is_(None),
)


def active_signature(session: Session, *, letter_pk: int, member_pk: int) -> Signature | None:
    params = {"letter_pk": letter_pk, "member_pk": member_pk}
    return session.exec(_ACTIVE_SIGNATURE, params=params).first()


def _insert_unless_signed(dialect: str) -> Any:
    """INSERT … ON CONFLICT (the partial unique index) DO NOTHING RETURNING id.

    On the table, run on the connection: as an ORM bulk insert it cost ~0.3 ms a signature."""
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(Signature.__table__)  # type: ignore[attr-defined]
        .on_conflict_do_nothing(
            index_elements=["letter_pk", "member_pk"],
            index_where=col(Signature.withdrawn_at).is_(None),
        )
        .returning(col(Signature.id))
    )


_INSERT_UNLESS_SIGNED = {name: _insert_unless_signed(name) for name in ("sqlite", "postgresql")}


def sign(
    session: Session,
    *,
    letter: Letter,
    member: Member,
    at: datetime,
    via_platform: str,
    via_external_id: str,
    via_event_id: str = "",
    signed_by: Member | None = None,
    awaiting_member: bool = False,
) -> SignOutcome:
    """Insert unless one is active: the unique index decides, so a concurrent duplicate (another
    platform, a retry, a second process) finds the first signature instead of an error.

    `signed_by`: the staff who signed for the member; `awaiting_member`: it counts only once the
    member or a coordinator confirms it (proxy mode `confirm`, DESIGN.md §8).
    """
    assert letter.id is not None and member.id is not None
    values: dict[str, Any] = {
        "letter_pk": letter.id,
        "member_pk": member.id,
        "signed_at": at,
        "withdrawn_at": None,
        "via_platform": via_platform,
        "via_external_id": via_external_id,
        "via_event_id": via_event_id,
        "letter_version": letter.version,
        "version_number": letter.version_number,
        "signed_by_pk": signed_by.id if signed_by is not None else None,
        "awaiting_member": awaiting_member,
    }
    session.flush()  # what the ORM's autoflush did before this insert went through Core
    conn = session.connection()
    statement = _INSERT_UNLESS_SIGNED[conn.dialect.name]
    for _ in range(3):  # PostgreSQL: the conflicting signature may be withdrawn in between
        inserted = conn.execute(statement, values).first()
        if inserted is not None:
            return SignOutcome(created=True, values={"id": inserted[0], **values})
        existing = active_signature(session, letter_pk=letter.id, member_pk=member.id)
        if existing is not None:
            return SignOutcome(existing, created=False)
    raise RuntimeError("signature conflict without an active signature, three times")


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


def confirm(session: Session, *, signature: Signature) -> bool:
    """A signature awaiting its member now counts; False if it did not await (or is gone)."""
    result = session.execute(
        update(Signature)
        .where(
            col(Signature.id) == signature.id,
            col(Signature.withdrawn_at).is_(None),
            col(Signature.awaiting_member).is_(True),
        )
        .values(awaiting_member=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return False
    session.refresh(signature)
    return True


def void(session: Session, *, signature: Signature) -> bool:
    """Remove a signature recorded in error (a coordinator's correction, not a withdrawal: the
    member did not ask, so nothing records them as having withdrawn; the audit event keeps what
    was removed). False if it was no longer active."""
    result = session.execute(
        delete(Signature).where(
            col(Signature.id) == signature.id, col(Signature.withdrawn_at).is_(None)
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def reconfirm(
    session: Session,
    *,
    signature: Signature,
    letter: Letter,
    signed_by: Member | None = None,
    awaiting_member: bool = False,
) -> bool:
    """A signature given to an earlier text now stands for the current one (DESIGN.md §9); its
    signing time is kept. `signed_by`: the staff who re-confirmed it for the member (then
    `awaiting_member` as their proxy mode says); by the member, nothing awaits them any more.
    False if it did not await re-confirmation (or is gone)."""
    values: dict[str, Any] = {
        "awaiting_reconfirmation": False,
        "letter_version": letter.version,
        "version_number": letter.version_number,
        "awaiting_member": awaiting_member,
    }
    if signed_by is not None:
        values["signed_by_pk"] = signed_by.id
    result = session.execute(
        update(Signature)
        .where(
            col(Signature.id) == signature.id,
            col(Signature.withdrawn_at).is_(None),
            col(Signature.awaiting_reconfirmation).is_(True),
        )
        .values(**values)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return False
    session.refresh(signature)
    return True


@dataclass(frozen=True)
class Lapsed:
    """A signature that stopped counting when the text changed: who to ask, and what they read."""

    signature_pk: int
    member_pk: int
    signed_by_pk: int | None
    version_number: int
    signed_at: datetime


def lapse_signatures(session: Session, *, letter: Letter) -> list[Lapsed]:
    """A material change (DESIGN.md §9): every active signature on an earlier text stops
    counting until re-confirmed. Returns those that lapsed now (not those already waiting)."""
    assert letter.id is not None
    rows = session.execute(
        sa_select(
            col(Signature.id),
            col(Signature.member_pk),
            col(Signature.signed_by_pk),
            col(Signature.version_number),
            col(Signature.signed_at),
        )
        .where(
            col(Signature.letter_pk) == letter.id,
            col(Signature.withdrawn_at).is_(None),
            col(Signature.awaiting_reconfirmation).is_(False),
            col(Signature.version_number) != letter.version_number,
        )
        .order_by(col(Signature.id))
    ).all()
    session.execute(
        update(Signature)
        .where(
            col(Signature.letter_pk) == letter.id,
            col(Signature.withdrawn_at).is_(None),
            col(Signature.awaiting_reconfirmation).is_(False),
            col(Signature.version_number) != letter.version_number,
        )
        .values(awaiting_reconfirmation=True)
    )
    return [Lapsed(*row) for row in rows]


def move_to_version(session: Session, *, letter: Letter) -> int:
    """A minor change: signatures that count move to the current text without asking anyone;
    how many moved. (Those awaiting re-confirmation still do: they agreed to neither text.)"""
    result = session.execute(
        update(Signature)
        .where(
            col(Signature.letter_pk) == letter.id,
            col(Signature.withdrawn_at).is_(None),
            col(Signature.awaiting_reconfirmation).is_(False),
        )
        .values(letter_version=letter.version, version_number=letter.version_number)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# What counts (status, counters, reminders, compile): active, not awaiting its member, and
# given to the current text (or re-confirmed since it changed).
_COUNTED = (
    col(Signature.withdrawn_at).is_(None),
    col(Signature.awaiting_member).is_(False),
    col(Signature.awaiting_reconfirmation).is_(False),
)


def count_active(session: Session, *, letter_pk: int) -> int:
    """Signatures that count: active and not awaiting their member's confirmation."""
    query = (
        select(func.count())
        .select_from(Signature)
        .where(Signature.letter_pk == letter_pk, *_COUNTED)
    )
    return int(session.exec(query).one())


# Plain columns, not entities: building 20,000 ORM objects cost ~0.8 s for 10,000 signers.
_NAME_COLUMNS = (
    col(Member.member_id),
    col(Member.title),
    col(Member.given_name),
    col(Member.family_name),
    col(Member.post_nominals),
    col(Member.display_name),
    col(Member.group),
)


def _signatory(row: Any, signed_at: datetime | None = None, via: str = "") -> Signatory:
    member_id, title, given, family, post_nominals, display, group = row[:7]
    return Signatory(
        member_id=member_id,
        name=render_name(
            title=title,
            given_name=given,
            family_name=family,
            post_nominals=post_nominals,
            display_name=display,
        ),
        group=group,
        family_name=filing_family(family, display),
        given_name=given,
        signed_at=signed_at,
        via=via,
    )


def signatories(session: Session, *, letter_pk: int) -> list[Signatory]:
    """Counted signatories with their rendered names (unsorted: ordering is bot.names' job);
    what compiles, so a signature awaiting its member never does."""
    query = (
        sa_select(*_NAME_COLUMNS, col(Signature.signed_at), col(Signature.via_platform))
        .join(Member, col(Member.id) == col(Signature.member_pk))
        .where(col(Signature.letter_pk) == letter_pk, *_COUNTED)
    )
    return [_signatory(row, row[7], row[8]) for row in session.execute(query).all()]


# Listing columns, then any extras: the stored derivatives, not the name fields.
_LISTING_COLUMNS = (
    col(Member.id),
    col(Member.filing_key),
    col(Member.printed_name),
    col(Member.member_id),
    col(Member.group),
)


def _core_rows(session: Session, query: Any) -> Sequence[Any]:
    """Plain-column rows through Core: the ORM's row processing cost ~10 ms on 10,000 rows."""
    session.flush()  # what session.execute's autoflush would have done
    return session.connection().execute(query).all()


def _listed(session: Session, rows: Sequence[Any]) -> list[ListedSignatory]:
    """Rows in filing order, as listed signatories.

    Sorting by the stored filing keys compares strings, ~50× cheaper than collating names, and
    the names come printed. A member whose stored fields are missing or of another format
    (written around the ORM, or by an older version) has them computed here instead.
    """
    stale = [row[0] for row in rows if not is_current_filing_key(row[1])]
    if stale:
        fresh = {
            member.id: member.listing_fields()
            for member in session.exec(select(Member).where(col(Member.id).in_(stale))).all()
        }
        rows = [(row[0], *fresh[row[0]], *row[3:]) if row[0] in fresh else row for row in rows]
    groups: dict[str, str] = {}  # a few dozen groups: normalise each once
    listed = []
    for row in sorted(rows, key=itemgetter(1)):
        group = row[4]
        if group not in groups:
            groups[group] = nfc(group)
        listed.append(ListedSignatory(row[3], row[2], groups[group], *row[5:]))
    return listed


def listed_signatories(
    session: Session, *, letter_pk: int, signing_details: bool = False
) -> list[ListedSignatory]:
    """Active signatories in filing order; with signing_details, when and how each signed
    (reading 10,000 timestamps is a fifth of a coordinator's status on PostgreSQL).
    """
    details = (col(Signature.signed_at), col(Signature.via_platform)) if signing_details else ()
    query = (
        sa_select(*_LISTING_COLUMNS, *details)
        .select_from(Signature)
        .join(Member, col(Member.id) == col(Signature.member_pk))
        .where(col(Signature.letter_pk) == letter_pk, *_COUNTED)
    )
    return _listed(session, _core_rows(session, query))


def counts_by_group(session: Session, *, letter_pk: int) -> dict[str, int]:
    """Active signatures per group, counted by the database (unsorted)."""
    query = (
        select(Member.group, func.count())
        .join(Signature, col(Member.id) == col(Signature.member_pk))
        .where(Signature.letter_pk == letter_pk, *_COUNTED)
        .group_by(Member.group)
    )
    return {group: int(n) for group, n in session.execute(query).all()}


def not_signed(session: Session, *, letter_pk: int) -> list[ListedSignatory]:
    """Active roster members (role member) without a counted signature, in filing order (one
    awaiting its member's confirmation is not yet theirs; one awaiting re-confirmation after a
    change of text is listed by awaiting_reconfirmation instead)."""
    signed = select(Signature.member_pk).where(
        Signature.letter_pk == letter_pk, *_COUNTED[:2]
    )  # awaiting re-confirmation: listed apart (awaiting_reconfirmation)
    query = sa_select(*_LISTING_COLUMNS).where(
        col(Member.active), col(Member.role) == "member", col(Member.id).not_in(signed)
    )
    return _listed(session, _core_rows(session, query))


def signed_member_pks(session: Session, *, letter_pk: int) -> set[int]:
    """Members whose signature counts."""
    query = select(Signature.member_pk).where(Signature.letter_pk == letter_pk, *_COUNTED)
    return set(session.exec(query).all())


def awaiting_members(session: Session, *, letter_pk: int) -> list[str]:
    """member_ids whose staff signed for them and who have not confirmed it yet, sorted."""
    query = (
        select(Member.member_id)
        .join(Signature, col(Member.id) == col(Signature.member_pk))
        .where(
            Signature.letter_pk == letter_pk,
            col(Signature.withdrawn_at).is_(None),
            col(Signature.awaiting_member).is_(True),
        )
        .order_by(col(Member.member_id))
    )
    return list(session.exec(query).all())


def proxy_signers(session: Session, *, letter_pk: int) -> dict[str, str]:
    """{member_id: the staff member_id who signed for them}, for counted signatures by staff."""
    staff = aliased(Member)
    query = (
        sa_select(col(Member.member_id), col(staff.member_id))
        .select_from(Signature)
        .join(Member, col(Member.id) == col(Signature.member_pk))
        .join(staff, col(staff.id) == col(Signature.signed_by_pk))
        .where(col(Signature.letter_pk) == letter_pk, *_COUNTED)
    )
    return {member_id: staff_id for member_id, staff_id in session.execute(query).all()}


def awaiting_reconfirmation(session: Session, *, letter_pk: int) -> list[ListedSignatory]:
    """Members whose signature was given to an earlier text and not re-confirmed, in filing
    order: they stop counting until they do (DESIGN.md §9)."""
    query = (
        sa_select(*_LISTING_COLUMNS)
        .select_from(Signature)
        .join(Member, col(Member.id) == col(Signature.member_pk))
        .where(
            col(Signature.letter_pk) == letter_pk,
            col(Signature.withdrawn_at).is_(None),
            col(Signature.awaiting_reconfirmation).is_(True),
        )
    )
    return _listed(session, _core_rows(session, query))
