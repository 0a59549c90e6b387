"""Members, their chat identities and pending (unknown-account) requests."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy import event as sa_event
from sqlalchemy.orm import ORMExecuteState
from sqlmodel import Session, col, select

from bot.models import Identity, Member, PendingRequest, Role
from bot.models._types import utcnow
from bot.names import FILING_KEY_PREFIX, clean_platform_text, email_key

log = logging.getLogger(__name__)


def get_member(session: Session, *, member_id: str) -> Member | None:
    return session.exec(select(Member).where(Member.member_id == member_id)).first()


def get_member_by_pk(session: Session, *, pk: int) -> Member | None:
    return session.get(Member, pk)


def list_members(session: Session) -> Sequence[Member]:
    return session.exec(select(Member).order_by(col(Member.member_id))).all()


def get_identity(session: Session, *, platform: str, external_id: str) -> Identity | None:
    query = select(Identity).where(
        Identity.platform == platform, Identity.external_id == external_id
    )
    return session.exec(query).first()


# Built once: every command looks up its caller.
_MEMBER_FOR_ACCOUNT = (
    select(Member)
    .join(Identity, col(Identity.member_pk) == col(Member.id))
    .where(
        Identity.platform == bindparam("platform"),
        Identity.external_id == bindparam("external_id"),
    )
)


_MEMBERS_FOR_ACCOUNTS = (
    select(Member, Identity.external_id)
    .join(Identity, col(Identity.member_pk) == col(Member.id))
    .where(
        Identity.platform == bindparam("platform"),
        col(Identity.external_id).in_(bindparam("external_ids", expanding=True)),
    )
)
#: session.info: (transaction, {(platform, external_id): linked member or None}), what
#: `prefetch_accounts` found; dropped when the transaction writes a member or an identity, or
#: rolls anything back
_ACCOUNTS = "cosign_members_by_account"
_ACCOUNT_TABLES = (Member.__table__, Identity.__table__)  # type: ignore[attr-defined]


def prefetch_accounts(session: Session, *, accounts: Iterable[tuple[str, str]]) -> None:
    """Look up the members behind several chat accounts in one query, for this transaction.

    A group commit's commands each look up their caller: one query for all of them costs
    about what one of theirs did. `member_for_account` answers from what was found until the
    transaction writes a member or an identity (a link, a roster change) or rolls back.
    """
    wanted: dict[str, set[str]] = {}
    for platform, external_id in accounts:
        wanted.setdefault(platform, set()).add(external_id)
    found: dict[tuple[str, str], Member | None] = {}
    for platform, external_ids in wanted.items():
        params = {"platform": platform, "external_ids": sorted(external_ids)}
        rows = session.exec(_MEMBERS_FOR_ACCOUNTS, params=params).all()
        linked = {external_id: member for member, external_id in rows}
        for external_id in external_ids:
            found[(platform, external_id)] = linked.get(external_id)
    session.info[_ACCOUNTS] = (session.get_transaction(), found)


def _prefetched(session: Session, key: tuple[str, str]) -> tuple[bool, Member | None]:
    kept = session.info.get(_ACCOUNTS)
    if kept is None or kept[0] is not session.get_transaction() or key not in kept[1]:
        return False, None
    return True, kept[1][key]


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_accounts(session: Session, previous_transaction: object) -> None:
    session.info.pop(_ACCOUNTS, None)


@sa_event.listens_for(Session, "after_flush")
def _forget_accounts_on_write(session: Session, _context: object) -> None:
    """A member or an identity written: what was found may be stale now."""
    if _ACCOUNTS in session.info and any(
        isinstance(obj, (Member, Identity))
        for obj in (*session.new, *session.dirty, *session.deleted)
    ):
        session.info.pop(_ACCOUNTS, None)


@sa_event.listens_for(Session, "do_orm_execute")
def _forget_accounts_on_bulk_write(state: ORMExecuteState) -> None:
    if _ACCOUNTS in state.session.info and not state.is_select:
        target = getattr(state.statement, "table", None)
        if any(target is table for table in _ACCOUNT_TABLES) or any(
            m.class_ in (Member, Identity) for m in state.all_mappers
        ):
            state.session.info.pop(_ACCOUNTS, None)


def member_for_account(session: Session, *, platform: str, external_id: str) -> Member | None:
    """The roster member behind a chat account, or None for an unknown account."""
    known, member = _prefetched(session, (platform, external_id))
    if not known:
        params = {"platform": platform, "external_id": external_id}
        member = session.exec(_MEMBER_FOR_ACCOUNT, params=params).first()
    if member is None and platform == "console":
        # The console is local and trusted: a USER that is a member_id is that member.
        member = get_member(session, member_id=external_id)
    return member if member is not None and member.active else None


def identities_of(session: Session, *, member_pk: int) -> Sequence[Identity]:
    return session.exec(select(Identity).where(Identity.member_pk == member_pk)).all()


def link_identity(
    session: Session,
    *,
    platform: str,
    external_id: str,
    member: Member,
    linked_via: str,
    linked_by: str,
) -> Identity:
    """Link (or re-link) a chat account to a member; one member per account."""
    assert member.id is not None
    identity = get_identity(session, platform=platform, external_id=external_id)
    if identity is None:
        identity = Identity(platform=platform, external_id=external_id, member_pk=member.id)
    identity.member_pk = member.id
    identity.linked_via = linked_via
    identity.linked_by = linked_by
    identity.linked_at = utcnow()
    session.add(identity)
    session.flush()
    return identity


def is_coordinator_member(session: Session, *, platform: str, external_id: str) -> bool:
    member = member_for_account(session, platform=platform, external_id=external_id)
    return member is not None and member.role == Role.coordinator.value


def linkable_by_email(session: Session, *, platform: str, email: str) -> Member | None:
    """The one active `member` with this e-mail and no account yet on this platform, or None.

    Coordinators are never linked by e-mail (that would hand an outsider their rights), nor is a
    member already linked on the platform (that would give them a second account, or take theirs).
    """
    key = email_key(email)
    if not key:
        return None
    query = select(Member).where(col(Member.email_key) == key, col(Member.active))
    found = session.exec(query.limit(2)).all()
    if len(found) != 1 or found[0].role != Role.member.value:
        return None
    linked = select(Identity.id).where(
        Identity.member_pk == found[0].id, Identity.platform == platform
    )
    return None if session.exec(linked).first() is not None else found[0]


#: open pending requests one letter may hold from one homeserver (Matrix) or platform: a
#: homeserver can mint accounts without end, and coordinators read this list by hand
MAX_PENDING_PER_SERVER = 50
#: open pending requests one account may hold, across letters
MAX_PENDING_PER_ACCOUNT = 3


def account_server(platform: str, external_id: str) -> str | None:
    """The homeserver of a Matrix account (``@name:server``); None elsewhere (the platform's
    accounts come from one workspace, or are local)."""
    if platform == "matrix" and ":" in external_id:
        return external_id.split(":", 1)[1]
    return None


def _open_pending(session: Session, platform: str) -> Any:
    return (
        select(func.count())
        .select_from(PendingRequest)
        .where(PendingRequest.platform == platform, col(PendingRequest.resolved_at).is_(None))
    )


def add_pending(
    session: Session,
    *,
    platform: str,
    external_id: str,
    display_name: str,
    channel: str,
    letter_pk: int | None,
) -> PendingRequest | None:
    """Record an unknown account once per (account, letter) until a coordinator resolves it.

    None (logged) when a cap is reached: ``MAX_PENDING_PER_ACCOUNT`` open requests for the
    account, or ``MAX_PENDING_PER_SERVER`` open requests for the letter from the account's
    homeserver (its platform, outside Matrix). The account is still told to ask a coordinator.
    """
    query = select(PendingRequest).where(
        PendingRequest.platform == platform,
        PendingRequest.external_id == external_id,
        PendingRequest.letter_pk == letter_pk,
        col(PendingRequest.resolved_at).is_(None),
    )
    existing = session.exec(query).first()
    if existing is not None:
        return existing
    mine = _open_pending(session, platform).where(PendingRequest.external_id == external_id)
    if session.exec(mine).one() >= MAX_PENDING_PER_ACCOUNT:
        log.warning(
            "pending request from %s:%s not recorded: it has %d open already",
            platform,
            external_id,
            MAX_PENDING_PER_ACCOUNT,
        )
        return None
    same_server = _open_pending(session, platform).where(PendingRequest.letter_pk == letter_pk)
    server = account_server(platform, external_id)
    if server is not None:
        same_server = same_server.where(
            col(PendingRequest.external_id).endswith(":" + server, autoescape=True)
        )
    if session.exec(same_server).one() >= MAX_PENDING_PER_SERVER:
        log.warning(
            "pending request from %s:%s not recorded: the letter has %d open from %s already",
            platform,
            external_id,
            MAX_PENDING_PER_SERVER,
            server or platform,
        )
        return None
    pending = PendingRequest(
        platform=platform,
        external_id=external_id,
        display_name=clean_platform_text(display_name),
        channel=channel,
        letter_pk=letter_pk,
    )
    session.add(pending)
    session.flush()
    return pending


def list_pending(session: Session, *, letter_pk: int | None = None) -> Sequence[PendingRequest]:
    query = select(PendingRequest).where(col(PendingRequest.resolved_at).is_(None))
    if letter_pk is not None:
        query = query.where(PendingRequest.letter_pk == letter_pk)
    return session.exec(query.order_by(col(PendingRequest.at))).all()


def resolve_pending(session: Session, *, platform: str, external_id: str) -> int:
    rows = session.exec(
        select(PendingRequest).where(
            PendingRequest.platform == platform,
            PendingRequest.external_id == external_id,
            col(PendingRequest.resolved_at).is_(None),
        )
    ).all()
    for row in rows:
        row.resolved_at = utcnow()
        session.add(row)
    return len(rows)


def refresh_listing_fields(session: Session) -> int:
    """Recompute filing keys and printed names that are missing or of another format (a new
    column, a new UCA table; see bot.models.member).

    Runs after every migration; when all keys are current it is one query. Returns how many
    members it updated.
    """
    prefix = FILING_KEY_PREFIX
    stale = session.exec(
        select(Member).where(
            col(Member.filing_key).is_(None)
            | (func.substr(col(Member.filing_key), 1, len(prefix)) != prefix)
        )
    ).all()
    for member in stale:
        member.filing_key, member.printed_name = member.listing_fields()
        session.add(member)
    return len(stale)
