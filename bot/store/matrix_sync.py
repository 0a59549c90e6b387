"""Matrix sync durability: the bot's own checkpoint, and the command journal seen from Matrix.

A Matrix command is journaled like any (``bot.store.events``): the dispatcher marks its event done
and keeps its replies (``Reply`` objects) in the command's own transaction, with ``reply_to`` the
room, the command's event id and its thread root. So a command and its handled mark commit
together: a crash before the commit re-syncs the batch and the command runs then; a crash after it
finds the event done, and only its replies (if the journal shows them unsent) go out. A journal row
is *answered* once its replies were sent. The sync checkpoint is saved only after every event of a
batch is journaled.

Events the adapter answers itself (a refusal, which rolls back; an undecryptable event; an event
given up after repeated failures) are journaled here by ``record_event``, in one transaction.

Hints about undecryptable events are limited (issue 10, item 6): per sender and room one in
``HINT_WINDOW``, and per room ``HINTS_PER_ROOM`` in ``HINT_ROOM_WINDOW``. The count lives in the
handled-event table too (one row per room and sender, its ``at`` the last hint), so a restart
does not reset it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.models import HandledEvent, MatrixSyncState
from bot.models._types import utcnow
from bot.store import events

PLATFORM = "matrix"
#: outbox rows of replies queued before the journal answered Matrix commands (the outbox
#: deliverer still sends any left over from an older version)
REPLY_KIND = "matrix_reply"

#: one undecryptable-event hint per sender per room in this window
HINT_WINDOW = timedelta(minutes=10)
#: and at most HINTS_PER_ROOM hints in one room per HINT_ROOM_WINDOW, whoever the senders
HINTS_PER_ROOM = 3
HINT_ROOM_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Answer:
    """A journaled event's replies and where they go: what the sender needs, after a crash too."""

    event_id: str
    room_id: str
    thread: str | None
    replies: tuple[Any, ...]  # bot.core.Reply
    answered: bool = False


def reply_key(event_id: str, index: int) -> str:
    """The idempotency key of a command's index-th reply (also its transaction id's source)."""
    return f"matrix-reply:{event_id}:{index}"


def reply_to(room_id: str, event_id: str, thread: str | None) -> dict[str, Any]:
    """The journal's ``reply_to`` for a Matrix event: a reply needs nothing else."""
    return {"room": room_id, "event": event_id, "thread": thread}


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


def _answer(row: HandledEvent) -> Answer:
    where = row.reply_to or {}
    return Answer(
        event_id=row.event_id,
        room_id=str(where.get("room") or ""),
        thread=where.get("thread"),
        replies=tuple(events.stored_replies(row)),
        answered=row.answered_at is not None,
    )


def was_handled(session: Session, *, event_id: str) -> bool:
    """The journal shows the event done (a claim never commits without its record)."""
    row = events.get_event(session, platform=PLATFORM, event_id=event_id)
    return row is not None and row.state == events.DONE


def journaled(session: Session, *, event_id: str) -> Answer | None:
    """The event's journaled answer, or None if it has not been handled."""
    row = events.get_event(session, platform=PLATFORM, event_id=event_id)
    return _answer(row) if row is not None and row.state == events.DONE else None


def record_event(
    session: Session,
    *,
    event_id: str,
    room_id: str,
    thread: str | None,
    replies: Sequence[Any],
) -> bool:
    """Journal an event the adapter answers itself; False when the journal has it done already.

    An event without replies is answered as it commits: nothing is owed for it.
    """
    if not events.claim(session, platform=PLATFORM, event_id=event_id).run:
        return False
    events.record(
        session,
        platform=PLATFORM,
        event_id=event_id,
        replies=list(replies),
        reply_to=reply_to(room_id, event_id, thread),
        answered=not replies,
    )
    return True


def owed(session: Session, *, since: datetime, before: datetime, limit: int = 500) -> list[Answer]:
    """Journaled Matrix events in [since, before) whose replies were never sent."""
    rows = events.owed(session, platform=PLATFORM, since=since, before=before, limit=limit)
    return [_answer(row) for row in rows if row.state == events.DONE]


def mark_answered(session: Session, *, event_ids: Sequence[str]) -> int:
    return events.mark_answered(session, platform=PLATFORM, event_ids=event_ids)


# --- undecryptable-event hints ----------------------------------------------------------------


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:20]


def take_hint(session: Session, *, room_id: str, sender: str, now: datetime | None = None) -> bool:
    """May ``sender`` be hinted in ``room_id`` now? If so the hint is counted, in this transaction.

    Fresh megolm session ids cost a sender nothing, so the limit is per sender and room (and per
    room), never per session: the bot cannot be made to answer without limit.
    """
    now = now or utcnow()
    prefix = f"hint:{_digest(room_id)}:"
    key = prefix + _digest(sender)
    row = events.get_event(session, platform=PLATFORM, event_id=key)
    if row is not None and row.at > now - HINT_WINDOW:
        return False
    recent = session.exec(
        select(func.count())
        .select_from(HandledEvent)
        .where(
            HandledEvent.platform == PLATFORM,
            col(HandledEvent.event_id).startswith(prefix),
            col(HandledEvent.at) > now - HINT_ROOM_WINDOW,
        )
    ).one()
    if int(recent) >= HINTS_PER_ROOM:
        return False
    if row is not None:
        row.at = now
        session.add(row)
        session.flush()
        return True
    try:
        with session.begin_nested():
            session.add(HandledEvent(platform=PLATFORM, event_id=key, at=now, answered_at=now))
    except IntegrityError:
        return False  # another process counted one just now
    return True


def record_undecryptable(
    session: Session, *, event_id: str, room_id: str, sender: str, hint: Any
) -> list[Any] | None:
    """Journal an undecryptable event, with ``hint`` as its reply if the limits allow one.

    None when the event was journaled before; else the replies to send (``[hint]`` or ``[]``).
    """
    if was_handled(session, event_id=event_id):
        return None
    replies = [hint] if take_hint(session, room_id=room_id, sender=sender) else []
    if not record_event(session, event_id=event_id, room_id=room_id, thread=None, replies=replies):
        return None
    return replies
