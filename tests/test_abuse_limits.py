"""Limits on what outsiders can make the bot do or store (issue 10, item 6).

An undecryptable-event hint is an answer anyone in a room can ask for with a made-up key session:
at most one per sender and room in ``HINT_WINDOW``, and ``HINTS_PER_ROOM`` per room in
``HINT_ROOM_WINDOW``. A pending request is a row coordinators read by hand, and a homeserver can
mint accounts: at most ``MAX_PENDING_PER_SERVER`` open per letter and homeserver, and
``MAX_PENDING_PER_ACCOUNT`` open per account; the unknown account is answered the same either way.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from helpers import LETTER, create_example_letter, import_example_roster
from sqlmodel import select

from bot.config import Settings
from bot.core import Dispatcher, Invocation
from bot.db import Database
from bot.models import AuditEvent, PendingRequest
from bot.models._types import utcnow
from bot.store import matrix_sync, members
from handlers import REGISTRY

ROOM = "!room:example.org"


def test_hints_per_sender_and_per_room(database: Database) -> None:
    now = utcnow()

    def take(sender: str, at: timedelta, room: str = ROOM) -> bool:
        with database.session() as session:
            return matrix_sync.take_hint(session, room_id=room, sender=sender, now=now + at)

    assert take("@a:evil.org", timedelta(0))
    assert not take("@a:evil.org", timedelta(minutes=9))  # the same sender, inside its window
    assert take("@a:evil.org", timedelta(minutes=1), room="!other:example.org")  # another room
    # Fresh accounts: a few hints a minute in one room, whoever asks.
    fresh = [take(f"@new{i}:evil.org", timedelta(minutes=5)) for i in range(10)]
    assert fresh.count(True) == matrix_sync.HINTS_PER_ROOM and fresh[0]
    assert take("@late:evil.org", timedelta(minutes=6, seconds=1))  # the next minute
    assert take("@a:evil.org", timedelta(minutes=10, seconds=1))  # its window is over
    with database.session() as session:  # markers are never owed answers
        hour = timedelta(hours=1)
        assert matrix_sync.owed(session, since=now - hour, before=now + hour) == []


def _unknown(user: str) -> Invocation:
    return Invocation("matrix", ROOM, user, "sign", ["interpol-2021"], event_id="")


def _pending(database: Database) -> list[str]:
    with database.session() as session:
        return [p.external_id for p in session.exec(select(PendingRequest)).all()]


def test_pending_requests_per_letter_and_homeserver(
    settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    dispatcher = Dispatcher(settings, database, REGISTRY)
    cap = members.MAX_PENDING_PER_SERVER
    minted = [f"@bot{i}:evil.org" for i in range(cap + 5)]
    for user in minted:
        (reply,) = dispatcher.dispatch(_unknown(user))
        assert reply.template == "replies/unknown_account.j2"  # told to ask a coordinator
    assert sorted(_pending(database)) == sorted(minted[:cap])
    assert "not recorded" in caplog.text
    # Another homeserver (whose name ends like the first) is not held to evil.org's count.
    dispatcher.dispatch(_unknown("@someone:notevil.org"))
    dispatcher.dispatch(_unknown("@x:evil_org"))
    assert {"@someone:notevil.org", "@x:evil_org"} <= set(_pending(database))
    with database.session() as session:
        recorded = session.exec(
            select(AuditEvent).where(AuditEvent.action == "pending.recorded")
        ).all()
        assert len(recorded) == cap + 2  # a refused request leaves no audit entry either


def test_pending_requests_per_account(
    settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    import_example_roster(database)
    cap = members.MAX_PENDING_PER_ACCOUNT
    text = LETTER.read_text(encoding="utf-8")
    letters = [
        create_example_letter(
            database, settings, text=text.replace('"interpol-2021"', f'"letter-{i}"', 1)
        )
        for i in range(cap + 2)
    ]

    def add(letter_pk: int | None, account: str = "U-OUTSIDER") -> bool:
        with database.session() as session:
            pending = members.add_pending(
                session,
                platform="slack",
                external_id=account,
                display_name="Outsider",
                channel="C1",
                letter_pk=letter_pk,
            )
            return pending is not None

    assert [add(letter.id) for letter in letters] == [True] * cap + [False, False]
    assert add(letters[0].id)  # the request it has open is still there
    assert "U-OUTSIDER" in caplog.text and "open already" in caplog.text
    assert add(letters[-1].id, account="U-SOMEONE-ELSE")
    with database.session() as session:
        assert members.resolve_pending(session, platform="slack", external_id="U-OUTSIDER") == cap
    assert add(letters[-1].id)  # resolved requests do not count
