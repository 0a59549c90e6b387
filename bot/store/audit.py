"""The audit chain: every state change appends one event; the chain is one for the database."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from bot.models import AuditEvent, Compilation
from bot.models._types import utcnow
from bot.receipts import Anchor, receipt_head
from bot.timeutil import iso_utc

GENESIS = "0" * 64
_CHAIN_END = (
    sa_select(col(AuditEvent.seq), col(AuditEvent.hash))
    .order_by(col(AuditEvent.seq).desc())
    .limit(1)
)
_TAIL = "cosign_audit_tail"
_AUDIT_LOCK_ID = 0x636F7369  # "cosi": serialises appends across processes on PostgreSQL


def event_hash(
    *,
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    letter_slug: str | None,
    member_id: str | None,
    detail: dict[str, Any],
) -> str:
    canonical = json.dumps(
        {
            "seq": seq,
            "at": iso_utc(at),
            "actor": actor,
            "action": action,
            "letter": letter_slug,
            "member": member_id,
            "detail": detail,
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainLink:
    """What `append` stored: the event's place in the chain (a receipt names its head)."""

    seq: int
    at: datetime
    prev_hash: str
    hash: str


_TABLE = AuditEvent.__table__  # type: ignore[attr-defined]
# Core, prebuilt: an ORM-constructed AuditEvent and its flush cost more than the signature it
# records (profiled: ~0.4 ms of a journaled /sign's ~1.1 ms).
_INSERT = insert(_TABLE)
_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    letter_slug: str | None = None,
    member_id: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> ChainLink:
    """Append one event, in the session's transaction (it is inserted at once, not at flush).

    The first append of a transaction takes the chain's lock (PostgreSQL: an advisory lock held
    until commit; SQLite: BEGIN IMMEDIATE took the write lock already) and reads the chain's end;
    later ones continue from the end this transaction wrote. A savepoint that rolls back forgets
    that end (`_forget_tail`), so the next append reads it again.
    """
    conn = session.connection()
    transaction = session.get_transaction()
    tail = session.info.get(_TAIL)
    if tail is not None and tail[0] is transaction:
        # This transaction already holds the append lock and knows the chain's end.
        seq, prev_hash = tail[1] + 1, tail[2]
    else:
        if conn.dialect.name == "postgresql":
            conn.execute(_LOCK, {"k": _AUDIT_LOCK_ID})
        last = conn.execute(_CHAIN_END).first()
        seq = (last[0] + 1) if last else 1
        prev_hash = last[1] if last else GENESIS
    moment = at or utcnow()
    clean_detail = json.loads(json.dumps(detail or {}, default=str, ensure_ascii=False))
    digest = event_hash(
        prev_hash=prev_hash,
        seq=seq,
        at=moment,
        actor=actor,
        action=action,
        letter_slug=letter_slug,
        member_id=member_id,
        detail=clean_detail,
    )
    conn.execute(
        _INSERT,
        {
            "seq": seq,
            "at": moment,
            "actor": actor,
            "action": action,
            "letter_slug": letter_slug,
            "member_id": member_id,
            "detail": clean_detail,
            "prev_hash": prev_hash,
            "hash": digest,
        },
    )
    session.info[_TAIL] = (transaction, seq, digest)
    return ChainLink(seq=seq, at=moment, prev_hash=prev_hash, hash=digest)


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_tail(session: Session, previous_transaction: object) -> None:
    """A rolled-back append (even in a savepoint) invalidates the cached end of the chain."""
    session.info.pop(_TAIL, None)


def chain_head(session: Session) -> tuple[int, str] | None:
    """(seq, hash) of the newest event, or None for an empty chain."""
    last = session.execute(_CHAIN_END).first()
    return (last[0], last[1]) if last else None


def list_events(session: Session, *, letter_slug: str) -> Sequence[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.letter_slug == letter_slug)
    return session.exec(query.order_by(col(AuditEvent.seq))).all()


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    reason: str


def verify_chain(session: Session, *, anchors: Sequence[Anchor] = ()) -> list[ChainProblem]:
    """Recompute the whole chain; any edited, removed or reordered row shows up as a problem.

    Then hold it against every stored receipt and each anchor (a head copied from a receipt or
    from chat): the event each names must still be there with the same hash, so deleting the
    newest events, or rewriting events and recomputing every hash after them, is caught too.
    """
    receipts = _receipts(session)
    wanted = {head.seq for _, _, head in receipts} | {anchor.seq for anchor in anchors}
    kept: dict[int, AuditEvent] = {}
    problems: list[ChainProblem] = []
    prev_hash = GENESIS
    expected_seq = 1
    for event in _iterate(session):
        if event.seq != expected_seq:
            problems.append(ChainProblem(event.seq, f"expected seq {expected_seq} (rows missing)"))
        if event.prev_hash != prev_hash:
            problems.append(ChainProblem(event.seq, "prev_hash does not match the previous event"))
        recomputed = event_hash(
            prev_hash=event.prev_hash,
            seq=event.seq,
            at=event.at,
            actor=event.actor,
            action=event.action,
            letter_slug=event.letter_slug,
            member_id=event.member_id,
            detail=event.detail,
        )
        if recomputed != event.hash:
            problems.append(ChainProblem(event.seq, "hash does not match the event's content"))
        if event.seq in wanted:
            kept[event.seq] = event
        prev_hash = event.hash
        expected_seq = event.seq + 1
    end = expected_seq - 1
    for compilation, receipt, head in receipts:
        problems.extend(_check_receipt(compilation, receipt, head, kept.get(head.seq), end))
    for anchor in anchors:
        named = kept.get(anchor.seq)
        if named is None or not anchor.matches(named.hash):
            problems.append(ChainProblem(anchor.seq, f"audit head {anchor} is not in the chain"))
    return problems


def _receipts(session: Session) -> list[tuple[Compilation, dict[str, Any], Anchor]]:
    found = []
    for compilation in session.exec(select(Compilation).order_by(col(Compilation.id))).all():
        receipt = compilation.receipt
        head = receipt_head(receipt) if isinstance(receipt, dict) else None
        if receipt is not None and head is not None:
            found.append((compilation, receipt, head))
    return found


def _check_receipt(
    compilation: Compilation,
    receipt: dict[str, Any],
    head: Anchor,
    event: AuditEvent | None,
    end: int,
) -> list[ChainProblem]:
    """What is wrong between one receipt, its compilation and the event it names as head."""
    name = f"the receipt of {receipt.get('slug')} (compiled {receipt.get('compiled_at')})"
    if event is None:
        where = f"the chain ends at {end}" if end < head.seq else "it is missing"
        return [
            ChainProblem(
                head.seq,
                f"{name} names audit event {head.seq}, but {where}: events were deleted",
            )
        ]
    problems = []
    if event.hash != head.hash:
        problems.append(
            ChainProblem(
                head.seq,
                f"{name} names audit event {head.seq} with hash {head.hash[:16]}…, but the "
                f"chain has {event.hash[:16]}… there: events up to it were rewritten",
            )
        )
    closed = event.action == "letter.closed" and event.letter_slug == receipt.get("slug")
    if not closed or event.detail.get("sha256") != receipt.get("outputs"):
        problems.append(
            ChainProblem(head.seq, f"{name} does not match the letter.closed event it names")
        )
    if compilation.sha256 != receipt.get("outputs"):
        problems.append(
            ChainProblem(head.seq, f"{name} does not match the stored outputs' SHA-256")
        )
    return problems


def _iterate(session: Session, batch: int = 2000) -> Iterator[AuditEvent]:
    after = 0
    while True:
        rows = session.exec(
            select(AuditEvent)
            .where(AuditEvent.seq > after)
            .order_by(col(AuditEvent.seq))
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].seq
