"""The command journal: a journaled command runs once per event and its answer is kept until sent.

DESIGN.md rule 10 (a replayed command is not re-processed) and rule 12 (an acknowledged command
is never dropped: a restarted bot finds what it still owes).
"""

from __future__ import annotations

import threading
from datetime import timedelta

from helpers import create_example_letter, import_example_roster

from bot.config import Settings
from bot.core import Dispatcher, Invocation
from bot.db import Database
from bot.models._types import utcnow
from bot.platforms.base import render_reply
from bot.store import events, letters, members, signatures
from handlers import REGISTRY

REPLY_TO = {"response_url": "https://hooks.slack.example/commands/1"}


def _invocation(command: str, event_id: str, user: str = "au-abetz") -> Invocation:
    args = ["interpol-2021"]
    return Invocation("console", "#m", user, command, args, event_id=event_id, reply_to=REPLY_TO)


def _signed(database: Database) -> bool:
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        member = members.get_member(session, member_id="au-abetz")
        assert letter is not None and letter.id is not None and member is not None
        assert member.id is not None
        found = signatures.active_signature(session, letter_pk=letter.id, member_pk=member.id)
        return found is not None


def test_a_replayed_unsign_does_not_withdraw_a_newer_signature(
    settings: Settings, database: Database
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    dispatcher = Dispatcher(settings, database, REGISTRY)
    for command, event in (("sign", "e1"), ("unsign", "e2"), ("sign", "e3")):
        (reply,) = dispatcher.dispatch(_invocation(command, event))
        assert reply.template in ("replies/signed.j2", "replies/withdrawn.j2")
    assert dispatcher.dispatch(_invocation("unsign", "e2")) == []  # the replay: nothing runs
    assert _signed(database)


def test_the_answer_is_owed_until_sent(settings: Settings, database: Database) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    dispatcher = Dispatcher(settings, database, REGISTRY)
    started = utcnow()
    (reply,) = dispatcher.dispatch(_invocation("sign", "e1"))
    window = {"since": started - timedelta(minutes=30), "before": utcnow() + timedelta(seconds=1)}
    with database.session() as session:
        (row,) = events.owed(session, platform="console", **window)
        assert row.reply_to == REPLY_TO
        (kept,) = events.stored_replies(row)
        assert render_reply(kept, "text") == render_reply(reply, "text")
        assert "You signed" in render_reply(kept, "text")
        assert events.mark_answered(session, platform="console", event_ids=["e1"]) == 1
    with database.session() as session:
        assert events.owed(session, platform="console", **window) == []


def test_a_received_command_is_owed_and_runs_once(settings: Settings, database: Database) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    invocation = _invocation("sign", "e9")
    with database.session() as session:
        assert events.receive(
            session, platform="console", event_id="e9", invocation=invocation, reply_to=REPLY_TO
        )
        assert not events.receive(
            session, platform="console", event_id="e9", invocation=invocation, reply_to=REPLY_TO
        )
    window = {"since": utcnow() - timedelta(minutes=1), "before": utcnow() + timedelta(seconds=1)}
    with database.session() as session:
        (row,) = events.owed(session, platform="console", **window)
        assert row.state == events.RECEIVED and events.stored_invocation(row) == invocation
    assert not _signed(database)  # acknowledged, not yet run: a restarted bot runs it
    dispatcher = Dispatcher(settings, database, REGISTRY)
    (reply,) = dispatcher.dispatch(events.stored_invocation(row))
    assert reply.template == "replies/signed.j2" and _signed(database)
    assert dispatcher.dispatch(invocation) == []
    with database.session() as session:
        (row,) = events.owed(session, platform="console", **window)
        assert row.state == events.DONE and len(events.stored_replies(row)) == 1


def test_concurrent_deliveries_of_one_event_run_it_once(
    settings: Settings, database: Database
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    dispatcher = Dispatcher(settings, database, REGISTRY)
    results: list[int] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        results.append(len(dispatcher.dispatch(_invocation("sign", "same"))))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [0, 0, 0, 1]
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None and letter.id is not None
        assert signatures.count_active(session, letter_pk=letter.id) == 1
        assert len(signatures.signatories(session, letter_pk=letter.id)) == 1
