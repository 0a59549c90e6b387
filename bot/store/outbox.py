"""Outbox rows: enqueue once by idempotency key, claim with a lease, mark the outcome."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from bot.models import OutboxMessage

QUEUED_MESSAGES = "cosign_queued_messages"  # session.info: this transaction queued something


def enqueue(
    session: Session,
    *,
    key: str,
    platform: str,
    channel: str,
    kind: str,
    payload: dict[str, Any],
    letter_pk: int | None = None,
    not_before: datetime | None = None,
) -> OutboxMessage | None:
    """Add a message unless one with this key exists (then None): enqueueing is idempotent."""
    existing = session.exec(
        select(OutboxMessage).where(OutboxMessage.idempotency_key == key)
    ).first()
    if existing is not None:
        return None
    message = OutboxMessage(
        idempotency_key=key,
        platform=platform,
        channel=channel,
        kind=kind,
        payload=payload,
        letter_pk=letter_pk,
    )
    if not_before is not None:
        message.next_attempt_at = not_before
    session.add(message)
    session.flush()
    session.info[QUEUED_MESSAGES] = True
    return message


def due(
    session: Session, *, platforms: Sequence[str], now: datetime, limit: int = 50
) -> Sequence[OutboxMessage]:
    query = (
        select(OutboxMessage)
        .where(
            col(OutboxMessage.platform).in_(list(platforms)),
            col(OutboxMessage.delivered_at).is_(None),
            col(OutboxMessage.failed_at).is_(None),
            col(OutboxMessage.next_attempt_at) <= now,
            or_(col(OutboxMessage.claimed_until).is_(None), col(OutboxMessage.claimed_until) < now),
        )
        .order_by(col(OutboxMessage.id))
        .limit(limit)
    )
    return session.exec(query).all()


def claim(session: Session, *, message_id: int, now: datetime, lease: timedelta) -> bool:
    """Take a lease so two bots sharing a database never send the same row at once."""
    result = session.execute(
        update(OutboxMessage)
        .where(
            col(OutboxMessage.id) == message_id,
            col(OutboxMessage.delivered_at).is_(None),
            or_(col(OutboxMessage.claimed_until).is_(None), col(OutboxMessage.claimed_until) < now),
        )
        .values(claimed_until=now + lease, attempts=OutboxMessage.attempts + 1)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_delivered(
    session: Session, *, message_id: int, at: datetime, result: dict[str, Any] | None = None
) -> OutboxMessage | None:
    message = session.get(OutboxMessage, message_id)
    if message is None:
        return None
    message.delivered_at = at
    message.claimed_until = None
    message.result = result
    message.last_error = None
    session.add(message)
    return message


def mark_retry(
    session: Session, *, message_id: int, error: str, next_attempt_at: datetime, give_up: bool
) -> OutboxMessage | None:
    message = session.get(OutboxMessage, message_id)
    if message is None:
        return None
    message.last_error = error[:2000]
    message.claimed_until = None
    message.next_attempt_at = next_attempt_at
    if give_up:
        message.failed_at = next_attempt_at
    session.add(message)
    return message


def pending_count(session: Session, *, platforms: Sequence[str] | None = None) -> int:
    query = select(OutboxMessage.id).where(
        col(OutboxMessage.delivered_at).is_(None), col(OutboxMessage.failed_at).is_(None)
    )
    if platforms is not None:
        query = query.where(col(OutboxMessage.platform).in_(list(platforms)))
    return len(session.exec(query).all())


def next_due_at(session: Session, *, platforms: Sequence[str]) -> datetime | None:
    query = (
        select(OutboxMessage.next_attempt_at)
        .where(
            col(OutboxMessage.platform).in_(list(platforms)),
            col(OutboxMessage.delivered_at).is_(None),
            col(OutboxMessage.failed_at).is_(None),
        )
        .order_by(col(OutboxMessage.next_attempt_at))
        .limit(1)
    )
    return session.exec(query).first()
