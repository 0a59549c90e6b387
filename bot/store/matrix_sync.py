"""Matrix sync durability: the bot's own checkpoint and the replies of handled commands.

A command event is *handled* once its replies are durable: ``record_command`` marks the event id
handled and queues its replies (outbox rows of kind ``matrix_reply``) in one transaction. The sync
checkpoint is saved only after every command of a batch got that far, so a crash at any point
neither loses a command (the batch is synced again) nor repeats one (its id is marked).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from bot.models import MatrixSyncState, OutboxMessage
from bot.models._types import utcnow
from bot.store import events, outbox

PLATFORM = "matrix"
REPLY_KIND = "matrix_reply"


def reply_key(event_id: str, index: int) -> str:
    """The idempotency key of a command's index-th reply (also its transaction id's source)."""
    return f"matrix-reply:{event_id}:{index}"


def get_checkpoint(session: Session, *, user_id: str) -> str | None:
    row = session.exec(select(MatrixSyncState).where(MatrixSyncState.user_id == user_id)).first()
    return row.next_batch if row is not None else None


def save_checkpoint(session: Session, *, user_id: str, next_batch: str) -> None:
    row = session.exec(select(MatrixSyncState).where(MatrixSyncState.user_id == user_id)).first()
    if row is None:
        row = MatrixSyncState(user_id=user_id, next_batch=next_batch)
    else:
        row.next_batch = next_batch
        row.updated_at = utcnow()
    session.add(row)


def was_handled(session: Session, *, event_id: str) -> bool:
    return events.was_handled(session, platform=PLATFORM, event_id=event_id)


def record_command(
    session: Session,
    *,
    event_id: str,
    room_id: str,
    replies: Sequence[dict[str, Any]],
    hold_until: datetime,
) -> list[OutboxMessage] | None:
    """Mark the event handled and queue its replies; None if it was already handled.

    The rows wait until ``hold_until`` before the outbox deliverer may take them: the adapter sends
    them itself at once and only falls back on the outbox when that fails (or after a crash).
    """
    if not events.mark_handled(session, platform=PLATFORM, event_id=event_id):
        return None
    queued: list[OutboxMessage] = []
    for index, payload in enumerate(replies):
        message = outbox.enqueue(
            session,
            key=reply_key(event_id, index),
            platform=PLATFORM,
            channel=room_id,
            kind=REPLY_KIND,
            payload=dict(payload),
            not_before=hold_until,
        )
        if message is not None:
            queued.append(message)
    return queued


def pending_replies(session: Session, *, hold_until: datetime) -> list[OutboxMessage]:
    """Replies queued but not sent (a crash or a long outage); held again for the adapter."""
    rows = session.exec(
        select(OutboxMessage)
        .where(
            OutboxMessage.platform == PLATFORM,
            OutboxMessage.kind == REPLY_KIND,
            col(OutboxMessage.delivered_at).is_(None),
            col(OutboxMessage.failed_at).is_(None),
        )
        .order_by(col(OutboxMessage.id))
    ).all()
    for row in rows:
        row.next_attempt_at = hold_until
        session.add(row)
    return list(rows)
