"""Handled platform events: run once, answered once — the command journal (rules 10 and 12).

`record` runs inside the command's own transaction: the event is marked handled and its replies
kept in the same commit as the command's effect (a group commit claims each event in its
command's savepoint and records them all, with `record_many`, just before its one commit). A
retried or replayed event finds the row and gets the stored replies instead of a second run.
`owed` lists what a restarted bot must still do: run commands that were acknowledged but never
committed, send answers that were never sent.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
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
    """Mark the claimed event done with its replies, in the command's transaction.

    `answered`: the replies go out with the acknowledgement itself (a slash command answered
    in time), so nothing is owed once it commits; a bot killed before acknowledging leaves an
    unacknowledged command, which Slack reports to the user as failed. Pass it only for a fresh
    claim: a command kept by `receive` (acknowledged without its answer) stays owed.
    """
    record_many(
        session,
        records=[Record(platform, event_id, list(replies), reply_to, answered=answered)],
    )


@dataclass(frozen=True)
class Record:
    """One command's `record`: a group commit writes them all at once, before its commit."""

    platform: str
    event_id: str
    replies: list[Any]
    reply_to: dict[str, Any] | None
    answered: bool = False


def record_many(session: Session, *, records: Sequence[Record]) -> None:
    """`record` for several claimed events, in this transaction: one statement for all (the
    commands of a group commit, each of which ran in a savepoint that was released)."""
    if not records:
        return
    now = utcnow()
    plain: list[dict[str, Any]] = []
    answered: list[dict[str, Any]] = []
    for entry in records:
        params: dict[str, Any] = {
            "b_platform": entry.platform,
            "b_event": entry.event_id,
            "b_replies": pickle.dumps(entry.replies, pickle.HIGHEST_PROTOCOL),
            "b_reply_to": entry.reply_to,
        }
        if entry.answered:
            params["b_answered_at"] = now
            answered.append(params)
        else:
            plain.append(params)
    conn = session.connection()
    if plain:
        conn.execute(_RECORD, plain)
    if answered:
        conn.execute(_RECORD_ANSWERED, answered)


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


@dataclass(frozen=True)
class Claim:
    """What a journaled command may do: run (or not: it ran, a replay), and whether this
    transaction created its row (else `receive` kept it: acknowledged without its answer)."""

    run: bool
    fresh: bool


_TABLE = HandledEvent.__table__  # type: ignore[attr-defined]
# bind names other than the columns': SQLAlchemy reserves those in an INSERT's or UPDATE's values
_KEY = (_TABLE.c.platform == bindparam("b_platform"), _TABLE.c.event_id == bindparam("b_event"))
_STATE = sa_select(_TABLE.c.state).where(*_KEY)


def _claim_statement(dialect: str) -> Any:
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(_TABLE)
        .values(
            platform=bindparam("b_platform"),
            event_id=bindparam("b_event"),
            at=bindparam("b_at"),
            state=RUNNING,
        )
        .on_conflict_do_nothing(index_elements=["platform", "event_id"])
        .returning(_TABLE.c.id)
    )


_CLAIM = {name: _claim_statement(name) for name in ("sqlite", "postgresql")}
_RECORD = (
    update(_TABLE)
    .where(*_KEY)
    .values(
        state=DONE,
        replies=bindparam("b_replies"),
        invocation=None,
        reply_to=bindparam("b_reply_to"),
    )
)
_RECORD_ANSWERED = _RECORD.values(answered_at=bindparam("b_answered_at"))
_TAKE = update(_TABLE).where(*_KEY, _TABLE.c.state == RECEIVED).values(state=RUNNING)


def claim(session: Session, *, platform: str, event_id: str) -> Claim:
    """At the start of a journaled command, in its transaction: may it run?

    Core statements, prebuilt: the journal is on every Slack command's path, and the ORM's way
    (a query, a savepoint, an insert) cost more than the signature itself. A concurrent delivery
    of the same event waits on the unique index (PostgreSQL) or on the write lock (SQLite) until
    the first commits, then finds it done.
    """
    conn = session.connection()
    params = {"b_platform": platform, "b_event": event_id, "b_at": utcnow()}
    if conn.execute(_CLAIM[conn.dialect.name], params).first() is not None:
        return Claim(run=True, fresh=True)
    state = conn.execute(_STATE, params).scalar()
    if state == RECEIVED:  # kept by `receive`: it runs now, and a replay later in this
        conn.execute(_TAKE, params)  # transaction (a group commit) finds it taken
        return Claim(run=True, fresh=False)
    # DONE; or RUNNING, which no transaction commits: claimed earlier in this one, whose
    # record (a group commit's, written just before its commit) is still to come
    return Claim(run=state is None, fresh=False)


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
