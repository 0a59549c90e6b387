"""Outbox rows: enqueue once by idempotency key, claim with a lease, mark the outcome.

A claim carries a random token; the lease is renewed and the outcome recorded only under it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, update
from sqlmodel import Session, col, select

from bot.models import OutboxMessage

log = logging.getLogger(__name__)

QUEUED_MESSAGES = "cosign_queued_messages"  # session.info: this transaction queued something
#: Kinds sent only when nothing else is due: bot.direct.DM_FILE, the copies of a published letter
#: (one per signatory, thousands at once, each a file upload under the platform's rate limits).
BULK_KINDS = ("dm_file",)


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


def enqueue_many(session: Session, messages: Sequence[dict[str, Any]], *, now: datetime) -> int:
    """Add the messages (idempotency_key, platform, channel, kind, payload, letter_pk) whose
    keys are new, skipping the others and repeats; how many were added. One query for the keys
    and one bulk INSERT, not an ORM object each: the copies of a letter are thousands of rows."""
    keys = [m["idempotency_key"] for m in messages]
    seen = set(
        session.exec(
            select(OutboxMessage.idempotency_key).where(
                col(OutboxMessage.idempotency_key).in_(keys)
            )
        ).all()
    )
    rows = []
    for message in messages:
        if message["idempotency_key"] in seen:
            continue
        seen.add(message["idempotency_key"])
        rows.append({**message, "attempts": 0, "next_attempt_at": now, "created_at": now})
    if rows:
        session.execute(insert(OutboxMessage), rows)
        session.info[QUEUED_MESSAGES] = True
    return len(rows)


def due(
    session: Session, *, platforms: Sequence[str], now: datetime, limit: int = 50
) -> Sequence[OutboxMessage]:
    """Due messages, oldest first, bulk kinds after all others: the 10,000 copies of a letter
    never hold up a letter post, a reminder or a reply queued after them."""
    ready = (
        col(OutboxMessage.platform).in_(list(platforms)),
        col(OutboxMessage.delivered_at).is_(None),
        col(OutboxMessage.failed_at).is_(None),
        col(OutboxMessage.next_attempt_at) <= now,
        or_(col(OutboxMessage.claimed_until).is_(None), col(OutboxMessage.claimed_until) < now),
    )
    kind = col(OutboxMessage.kind)
    found: list[OutboxMessage] = []
    for kinds in (kind.not_in(BULK_KINDS), kind.in_(BULK_KINDS)):
        if len(found) < limit:
            query = (
                select(OutboxMessage)
                .where(*ready, kinds)
                .order_by(col(OutboxMessage.id))
                .limit(limit - len(found))
            )
            found += session.exec(query).all()
    return found


def claim(session: Session, *, message_id: int, now: datetime, lease: timedelta) -> str | None:
    """Take a lease so two bots sharing a database never send the same row at once.

    Returns the claim's token (None if the row is taken, sent or given up): outcomes are
    recorded, and the lease renewed, only under that token.
    """
    token = secrets.token_hex(16)
    result = session.execute(
        update(OutboxMessage)
        .where(
            col(OutboxMessage.id) == message_id,
            col(OutboxMessage.delivered_at).is_(None),
            col(OutboxMessage.failed_at).is_(None),
            or_(col(OutboxMessage.claimed_until).is_(None), col(OutboxMessage.claimed_until) < now),
        )
        .values(
            claimed_until=now + lease,
            claim_token=token,
            attempts=OutboxMessage.attempts + 1,
        )
    )
    return token if result.rowcount else None  # type: ignore[attr-defined]


def _held(message_id: int, token: str) -> tuple[Any, ...]:
    """The row is unsettled and claimed under token."""
    return (
        col(OutboxMessage.id) == message_id,
        col(OutboxMessage.delivered_at).is_(None),
        col(OutboxMessage.failed_at).is_(None),
        col(OutboxMessage.claim_token) == token,
    )


def renew(
    session: Session, *, message_id: int, token: str, now: datetime, lease: timedelta
) -> bool:
    """Extend a lease still held under token (a long rate-limit wait must not lose the row);
    False once the claim is gone: another sender took it over, or the row was settled."""
    result = session.execute(
        update(OutboxMessage).where(*_held(message_id, token)).values(claimed_until=now + lease)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _settle(
    session: Session, message_id: int, token: str, what: str, values: dict[str, Any]
) -> OutboxMessage | None:
    """Record an outcome only under the claim the caller holds; a stale holder is refused
    (None, logged), so it never overwrites what the row's new holder recorded."""
    result = session.execute(
        update(OutboxMessage)
        .where(*_held(message_id, token))
        .values(claimed_until=None, claim_token=None, **values)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        log.warning(
            "outbox message %s: not marked %s: the claim is no longer held (another sender took "
            "it over, or it was settled)",
            message_id,
            what,
        )
        return None
    return session.get(OutboxMessage, message_id, populate_existing=True)


def mark_delivered(
    session: Session,
    *,
    message_id: int,
    token: str,
    at: datetime,
    result: dict[str, Any] | None = None,
) -> OutboxMessage | None:
    """Record the send under the claim token; None when refused (the claim is not held)."""
    return _settle(
        session,
        message_id,
        token,
        "delivered",
        {"delivered_at": at, "result": result, "last_error": None},
    )


def mark_retry(
    session: Session,
    *,
    message_id: int,
    token: str,
    error: str,
    next_attempt_at: datetime,
    give_up: bool,
) -> OutboxMessage | None:
    """Release the claim with the error and when to try again (or give up); None when refused."""
    values: dict[str, Any] = {"last_error": error[:2000], "next_attempt_at": next_attempt_at}
    if give_up:
        values["failed_at"] = next_attempt_at
    return _settle(session, message_id, token, "failed" if give_up else "for retry", values)


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
