"""Handled platform events: run once, answered once — the command journal (rules 10 and 12).

`record` runs inside the command's own transaction: the event is marked handled and its replies
kept in the same commit as the command's effect. A retried or replayed event finds the row and
gets the stored replies instead of a second run. `owed` lists what a restarted bot must still do:
run commands that were acknowledged but never committed, send answers that were never sent.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.models import HandledEvent
from bot.models._types import utcnow

RECEIVED = "received"  # acknowledged without its answer, not run yet (kept by `receive`)
RUNNING = "running"  # claimed by the command's own transaction (never seen committed)
DONE = "done"


def was_handled(session: Session, *, platform: str, event_id: str) -> bool:
    query = select(HandledEvent.id).where(
        HandledEvent.platform == platform, HandledEvent.event_id == event_id
    )
    return session.exec(query).first() is not None


def mark_handled(session: Session, *, platform: str, event_id: str) -> bool:
    """Record the event; False when it was already recorded (a retry or a replay)."""
    if was_handled(session, platform=platform, event_id=event_id):
        return False
    try:
        with session.begin_nested():
            session.add(HandledEvent(platform=platform, event_id=event_id, answered_at=utcnow()))
    except IntegrityError:
        return False
    return True


def get_event(session: Session, *, platform: str, event_id: str) -> HandledEvent | None:
    query = select(HandledEvent).where(
        HandledEvent.platform == platform, HandledEvent.event_id == event_id
    )
    return session.exec(query).first()


def receive(
    session: Session,
    *,
    platform: str,
    event_id: str,
    invocation: Any,
    reply_to: dict[str, Any],
) -> bool:
    """Keep a command that is acknowledged without its answer: its answer is owed from now on.

    True when the command had not committed yet (it is kept, to be run after a restart); False
    when it had (its row, done, is marked owed again: the answer it recorded was not sent).
    """
    try:
        with session.begin_nested():
            session.add(
                HandledEvent(
                    platform=platform,
                    event_id=event_id,
                    state=RECEIVED,
                    invocation=pickle.dumps(invocation, pickle.HIGHEST_PROTOCOL),
                    reply_to=reply_to,
                )
            )
    except IntegrityError:
        session.execute(
            update(HandledEvent)
            .where(col(HandledEvent.platform) == platform, col(HandledEvent.event_id) == event_id)
            .values(answered_at=None)
        )
        return False
    return True


def record(
    session: Session,
    *,
    platform: str,
    event_id: str,
    replies: Sequence[Any],
    reply_to: dict[str, Any] | None,
    answered: bool = False,
) -> None:
    """Mark the event done with its replies, in the command's transaction.

    `answered`: the replies go out with the acknowledgement itself (a slash command answered
    in time), so nothing is owed once it commits; a bot killed before acknowledging leaves an
    unacknowledged command, which Slack reports to the user as failed. A command kept by
    `receive` (acknowledged without its answer) stays owed whatever `answered` says.
    """
    data = pickle.dumps(list(replies), pickle.HIGHEST_PROTOCOL)
    row = get_event(session, platform=platform, event_id=event_id)
    if row is None:
        row = HandledEvent(platform=platform, event_id=event_id)
    if answered and row.state == RUNNING:
        row.answered_at = utcnow()
    row.state = DONE
    row.replies = data
    row.invocation = None
    if reply_to is not None:
        row.reply_to = reply_to
    session.add(row)
    session.flush()


def stored_replies(row: HandledEvent) -> list[Any]:
    return list(pickle.loads(row.replies)) if row.replies else []


def stored_invocation(row: HandledEvent) -> Any:
    return pickle.loads(row.invocation) if row.invocation else None


def mark_answered(
    session: Session, *, platform: str, event_ids: Sequence[str], at: datetime | None = None
) -> int:
    """The answers to these events were sent (or handed to the platform)."""
    if not event_ids:
        return 0
    result = session.execute(
        update(HandledEvent)
        .where(
            col(HandledEvent.platform) == platform,
            col(HandledEvent.event_id).in_(list(event_ids)),
            col(HandledEvent.answered_at).is_(None),
        )
        .values(answered_at=at or utcnow())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claim(session: Session, *, platform: str, event_id: str) -> HandledEvent | None:
    """At the start of a journaled command: None to run it, or the row of a run that is done.

    A concurrent delivery of the same event waits on the unique index (PostgreSQL) or on the
    write lock (SQLite) until the first commits, then finds it done.
    """
    row = get_event(session, platform=platform, event_id=event_id)
    if row is not None:
        return row if row.state == DONE else None
    try:
        with session.begin_nested():
            session.add(HandledEvent(platform=platform, event_id=event_id, state=RUNNING))
    except IntegrityError:
        row = get_event(session, platform=platform, event_id=event_id)
        return row if row is not None and row.state == DONE else None
    return None


def owed(
    session: Session, *, platform: str, since: datetime, before: datetime, limit: int = 500
) -> list[HandledEvent]:
    """Events received in [since, before) whose command has not run or whose answer was not sent.

    `before` keeps a bot from taking over what another replica is handling right now.
    """
    query = (
        select(HandledEvent)
        .where(
            HandledEvent.platform == platform,
            col(HandledEvent.answered_at).is_(None),
            col(HandledEvent.at) >= since,
            col(HandledEvent.at) < before,
        )
        .order_by(col(HandledEvent.id))
        .limit(limit)
    )
    return list(session.exec(query).all())
