"""Matrix history is never a command (DESIGN.md rule 10), against a real Synapse.

A room the bot joins comes with history: Synapse sends a newly joined room's latest events,
including those from before the join (and from before the bot ever ran), and the gap behind a
'limited' timeline is filled from ``/messages``. None of that may be answered or signed; commands
sent after the join are, even while the bot was down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import create_example_letter
from matrix_support import MatrixWorld, eventually, new_world, running
from nio import Event
from sqlmodel import select
from synapse_server import RegisteredUser, SynapseServer, unique_localpart

from bot.db import Database
from bot.models import PendingRequest, Signature
from bot.platforms.matrix.sync import after_join

SIGN = "!sign interpol-2021"  # names the letter: it would sign in any room, posted there or not


def _signers(database: Database) -> set[str]:
    with database.session() as session:
        rows = session.exec(select(Signature)).all()
        return {s.via_external_id for s in rows if s.withdrawn_at is None}


def _pending(database: Database) -> list[PendingRequest]:
    with database.session() as session:
        return list(session.exec(select(PendingRequest)).all())


def _bot_membership(world: MatrixWorld, room_id: str) -> str | None:
    path = f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{world.bot.user_id}"
    try:
        return str(world.server.request("GET", path, token=world.owner.access_token)["membership"])
    except Exception:
        return None


def _room_without_bot(world: MatrixWorld, *extra: RegisteredUser) -> str:
    """A room with the members (and `extra` accounts) but not the bot."""
    room = world.room(join_bot=False)
    for user in extra:
        world.server.invite(world.owner.access_token, room, user.user_id)
        world.server.join(user.access_token, room)
    return room


async def _invite_bot(world: MatrixWorld, room: str) -> None:
    """Invite the running bot and wait until it has joined (it accepts on its own)."""
    world.server.invite(world.owner.access_token, room, world.bot.user_id)
    await eventually(lambda: _bot_membership(world, room) == "join", what="the bot joining")


async def test_history_from_before_the_first_start_in_a_room_joined_later(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    """The reported bug: invited after its first sync, the bot answered a `!sign` from before."""
    world = new_world(synapse, tmp_path)
    alice, bob = world.add_members(2)
    stranger = synapse.register_user(unique_localpart("stranger"))
    home = world.room()
    later = _room_without_bot(world, stranger)
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{home}"])

    # Before the bot ever ran, in a room it is not in yet.
    history = [
        world.say(alice.user, later, SIGN),
        world.say(stranger, later, SIGN),  # would leave a pending request for coordinators
        world.say(world.owner, later, "!letters"),
    ]

    async with running(settings, database, world.platform(settings)):
        await world.wait_letter_post(home)  # the first sync is done
        await _invite_bot(world, later)
        new = world.say(bob.user, later, SIGN)
        reply = await world.wait_reply(later, new)
        assert "signed" in reply["content"]["body"]

    for event_id in history:
        assert world.replies_to(later, event_id) == [], event_id
    assert _signers(database) == {bob.user.user_id}
    assert _pending(database) == []
    database.dispose()


async def test_invited_while_running_into_a_room_with_recent_history(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    """History sent after the bot's first sync: Synapse puts it in the newly joined room's
    timeline (marked 'limited', with older history behind it); none of it is answered."""
    world = new_world(synapse, tmp_path)
    alice, bob = world.add_members(2)
    home = world.room()
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{home}"])

    platform = world.platform(settings, timeline_limit=4)  # the invite, the join and two more
    async with running(settings, database, platform):
        await world.wait_letter_post(home)
        room = _room_without_bot(world)
        for i in range(5):
            world.say(bob.user, room, f"chatting before the bot came {i}")
        history = [world.say(alice.user, room, SIGN), world.say(bob.user, room, "!status")]
        await _invite_bot(world, room)

        new = world.say(bob.user, room, SIGN)
        reply = await world.wait_reply(room, new)
        assert "signed" in reply["content"]["body"]
        marker = world.say(alice.user, room, "!letters")
        await world.wait_reply(room, marker)

    for event_id in history:
        assert world.replies_to(room, event_id) == [], event_id
    assert _signers(database) == {bob.user.user_id}
    database.dispose()


async def test_joined_while_down_answers_only_what_came_after_the_join(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    """The bot's join happened while it was down (say it crashed right after joining): on restart
    the gap is filled from /messages, but only back to the join."""
    world = new_world(synapse, tmp_path)
    alice, bob, carol, dave = world.add_members(4)
    home = world.room()
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{home}"])

    async with running(settings, database, world.platform(settings)):
        await world.wait_letter_post(home)

    room = _room_without_bot(world)
    history = world.say(alice.user, room, SIGN)  # after the checkpoint, before the join
    synapse.invite(world.owner.access_token, room, world.bot.user_id)
    synapse.join(world.bot.access_token, room)
    after = [
        world.say(m.user, room, text)
        for m, text in ((bob, SIGN), (carol, SIGN), (dave, "!status interpol-2021"))
    ]
    for i in range(4):
        world.say(dave.user, room, f"chatting {i}")  # pushes the join out of a 3-event timeline

    async with running(settings, database, world.platform(settings, timeline_limit=3)):
        for event_id in after:
            await world.wait_reply(room, event_id)
        marker = world.say(alice.user, room, "!letters")
        await world.wait_reply(room, marker)

    for event_id in after:
        assert len(world.replies_to(room, event_id)) == 1, event_id
    assert world.replies_to(room, history) == []
    assert _signers(database) == {bob.user.user_id, carol.user.user_id}
    database.dispose()


# --- the rule itself, on events as nio parses them ----------------------------------------------

BOT = "@cosign:example.org"


def _member(membership: str, ts: int, prev: str | None = None, who: str = BOT) -> Any:
    unsigned = {"prev_content": {"membership": prev}} if prev else {}
    return Event.parse_event(
        {
            "type": "m.room.member",
            "event_id": f"$member-{membership}-{ts}",
            "sender": who,
            "state_key": who,
            "origin_server_ts": ts,
            "content": {"membership": membership},
            "unsigned": unsigned,
        }
    )


def _text(body: str, ts: int) -> Any:
    return Event.parse_event(
        {
            "type": "m.room.message",
            "event_id": f"$text-{ts}",
            "sender": "@alice:example.org",
            "origin_server_ts": ts,
            "content": {"msgtype": "m.text", "body": body},
        }
    )


def test_only_events_after_the_latest_join_count() -> None:
    old, invite, join, new = (
        _text("!sign", 10),
        _member("invite", 20),
        _member("join", 30, prev="invite"),
        _text("!sign", 40),
    )
    kept, joined_at = after_join([old, invite, join, new], BOT, None)
    assert kept == [new] and joined_at == 30

    # A profile change of the joined bot is not a join; someone else's join neither.
    rename = _member("join", 50, prev="join")
    other = _member("join", 60, who="@alice:example.org")
    later = _text("!status", 70)
    kept, joined_at = after_join([new, rename, other, later], BOT, 30)
    assert kept == [new, rename, other, later] and joined_at == 30

    # Left and joined again: only what follows the last join.
    leave, rejoin = _member("leave", 80, prev="join"), _member("join", 90, prev="leave")
    kept, _ = after_join([new, leave, _text("!sign", 85), rejoin, _text("!sign", 95)], BOT, 30)
    assert [e.server_timestamp for e in kept] == [95]


def test_events_stamped_before_the_join_are_history_too() -> None:
    """The second line: an event placed after the join but sent before it (a late federated
    event), in this batch or a later one."""
    join = _member("join", 1000, prev="invite")
    late, fresh = _text("!sign", 999), _text("!sign", 1001)
    kept, joined_at = after_join([join, late, fresh], BOT, None)
    assert kept == [fresh]
    kept, _ = after_join([_text("!sign", 500), fresh], BOT, joined_at)
    assert kept == [fresh]
    kept, _ = after_join([_text("!sign", 500), fresh], BOT, None)  # join unknown: position only
    assert len(kept) == 2
