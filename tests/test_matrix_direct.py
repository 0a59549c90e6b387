"""Direct messages on Matrix, against the real Synapse (DESIGN.md §8, issue 12).

The bot makes one direct room per member: ``createRoom`` with ``is_direct`` (the spec: the server
"sets the is_direct flag on the m.room.member events sent to the users in invite"), preset
``trusted_private_chat``, recorded in its ``m.direct`` account data ("a map of user IDs to a list
of room IDs") and in the cosign database; reused after a restart (database first, then
``m.direct``), replaced when the member left; encrypted from the start when ``encryption = true``.
A message is ``m.text`` with ``"m.mentions": {}`` (rule 10); a redelivered outbox row is the same
event (the transaction id derives from its key). The member's commands in the room are answered.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from helpers import create_example_letter
from matrix_support import MatrixWorld, Member, eventually, new_world, reply_target, running
from nio import InviteMemberEvent, KeysUploadResponse, RoomMessageNotice, RoomMessageText
from sqlalchemy import update
from sqlmodel import col, delete, select
from synapse_server import SynapseServer
from test_matrix_e2ee import E2EEMember

from bot.db import Database
from bot.direct import enqueue_dm
from bot.models import Member as RosterMember
from bot.models import OutboxMessage
from bot.models._types import utcnow
from bot.models.matrix import MatrixDirectRoom

REMINDER = "replies/reminder.j2"
SLUG = "interpol-2021"


def queue(
    database: Database,
    member_id: str,
    key: str,
    title: str = "A letter",
    time_left: str = "1 hour left",
) -> None:
    context = {"title": title, "slug": SLUG, "time_left": time_left, "count": 0}
    with database.session() as session:
        member = session.exec(select(RosterMember).where(RosterMember.member_id == member_id)).one()
        assert enqueue_dm(session, member=member, key=key, template=REMINDER, context=context)


def delivered(database: Database, key: str) -> OutboxMessage | None:
    with database.session() as session:
        row = session.exec(
            select(OutboxMessage).where(OutboxMessage.idempotency_key == f"dm:{key}")
        ).one()
        return row if row.delivered_at is not None else None


def recorded(database: Database, user_id: str) -> str | None:
    with database.session() as session:
        row = session.exec(
            select(MatrixDirectRoom).where(MatrixDirectRoom.user_id == user_id)
        ).first()
        return row.room_id if row is not None else None


def m_direct(world: MatrixWorld) -> dict[str, Any]:
    user = quote(world.bot.user_id, safe="")
    path = f"/_matrix/client/v3/user/{user}/account_data/m.direct"
    return world.server.request("GET", path, token=world.bot.access_token)


def set_m_direct(world: MatrixWorld, content: dict[str, Any]) -> None:
    user = quote(world.bot.user_id, safe="")
    path = f"/_matrix/client/v3/user/{user}/account_data/m.direct"
    world.server.request("PUT", path, token=world.bot.access_token, body=content)


def joined_rooms(world: MatrixWorld) -> set[str]:
    answer = world.server.request(
        "GET", "/_matrix/client/v3/joined_rooms", token=world.bot.access_token
    )
    return set(answer["joined_rooms"])


def rooms_of(world: MatrixWorld, member: Member) -> set[str]:
    """Every room the member is in or invited to: each room the bot ever made for them (a room
    the bot made and left again still holds the member's invite)."""
    answer = world.server.request(
        "GET",
        "/_matrix/client/v3/sync",
        token=member.user.access_token,
        query={"timeout": "0", "filter": json.dumps({"room": {"timeline": {"limit": 0}}})},
    )
    rooms = answer.get("rooms", {})
    return set(rooms.get("join", {})) | set(rooms.get("invite", {}))


def member_state(world: MatrixWorld, room_id: str, user_id: str) -> dict[str, Any]:
    path = f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{quote(user_id, safe='')}"
    return world.server.request("GET", path, token=world.bot.access_token)


def bot_texts(world: MatrixWorld, member: Member, room_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in world.server.messages(member.user.access_token, room_id, limit=100)
        if e.get("sender") == world.bot.user_id
        and e.get("type") == "m.room.message"
        and e["content"].get("msgtype") == "m.text"  # not the notices answering commands
    ]


async def deliver(database: Database, key: str) -> OutboxMessage:
    row = await eventually(lambda: delivered(database, key), timeout=30, what=f"dm {key}")
    assert isinstance(row, OutboxMessage)
    return row


async def test_direct_room_is_made_once_recorded_and_reused_after_restart(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    (member,) = world.add_members(1)
    user_id = member.user.user_id
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    before = joined_rooms(world)

    async with running(settings, database, world.platform(settings)):
        queue(database, member.member_id, "first", title="<b>@room</b> first")
        row = await deliver(database, "first")
        room = recorded(database, user_id)
        assert room is not None and row.result is not None and row.result["room_id"] == room
        # The invite carries is_direct; m.direct lists the room for the member.
        invite = member_state(world, room, user_id)
        assert invite["membership"] == "invite" and invite["is_direct"] is True
        assert m_direct(world) == {user_id: [room]}

        synapse.join(member.user.access_token, room)
        (first,) = bot_texts(world, member, room)
        content = first["content"]
        assert content["msgtype"] == "m.text" and content["m.mentions"] == {}
        assert "<b>@room</b> first" in content["body"]  # shown as typed …
        assert "&lt;b&gt;@room&lt;/b&gt;" in content["formatted_body"]  # … not as HTML

        # A second message, and the first row delivered again: the same room, no new event.
        queue(database, member.member_id, "second")
        await deliver(database, "second")
        with database.session() as session:
            session.execute(
                update(OutboxMessage)
                .where(col(OutboxMessage.idempotency_key) == "dm:first")
                .values(delivered_at=None, next_attempt_at=utcnow())
            )
        await deliver(database, "first")
        assert recorded(database, user_id) == room
        assert len(bot_texts(world, member, room)) == 2

        # The member's commands in the direct room are commands like anywhere.
        command = synapse.send_text(member.user.access_token, room, f"!status {SLUG}")
        reply = await synapse.wait_for_event_async(
            member.user.access_token,
            room,
            lambda e: e.get("sender") == world.bot.user_id and reply_target(e) == command,
            timeout=20,
        )
        assert "INTERPOL" in reply["content"]["body"]

    # Restarted, with m.direct emptied meanwhile (another client of the account, say): the
    # database names the room, nothing new is created, and m.direct lists it again.
    set_m_direct(world, {})
    async with running(settings, database, world.platform(settings)):
        queue(database, member.member_id, "after-restart")
        await deliver(database, "after-restart")
    assert recorded(database, user_id) == room
    assert joined_rooms(world) - before == {room}
    assert m_direct(world) == {user_id: [room]}

    # Without the database row (say, a restored backup), m.direct still finds it.
    with database.session() as session:
        session.execute(delete(MatrixDirectRoom))
    async with running(settings, database, world.platform(settings)):
        queue(database, member.member_id, "from-m-direct")
        await deliver(database, "from-m-direct")
    assert recorded(database, user_id) == room
    assert joined_rooms(world) - before == {room}
    assert rooms_of(world, member) == {room}  # one room was ever made for the member
    assert len(bot_texts(world, member, room)) == 4
    database.dispose()


async def test_a_member_who_left_gets_a_new_direct_room(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    (member,) = world.add_members(1)
    user_id = member.user.user_id
    settings = world.settings(sqlite_url)
    database = Database(settings.database.url)
    world.import_roster(database)

    async with running(settings, database, world.platform(settings)):
        queue(database, member.member_id, "one")
        await deliver(database, "one")
        old = recorded(database, user_id)
        assert old is not None
        synapse.join(member.user.access_token, old)
        synapse.leave(member.user.access_token, old)

        queue(database, member.member_id, "two")
        await deliver(database, "two")
        new = recorded(database, user_id)
        assert new is not None and new != old
        assert m_direct(world) == {user_id: [new]}  # the old room is no longer listed …
        assert old not in joined_rooms(world)  # … and the bot left it
        assert member_state(world, new, user_id)["is_direct"] is True
    database.dispose()


async def test_a_direct_message_too_large_for_an_event_comes_as_a_file(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str
) -> None:
    """Events are at most 64 KiB (Synapse M_TOO_LARGE, rule 8): the beginning, then the file."""
    world = new_world(synapse, tmp_path)
    (member,) = world.add_members(1)
    settings = world.settings(sqlite_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    long_text = " ".join(f"wörd{i}" for i in range(12_000))  # > 64 KiB as UTF-8
    async with running(settings, database, world.platform(settings)):
        queue(database, member.member_id, "long", time_left=long_text)
        await deliver(database, "long")
    room = recorded(database, member.user.user_id)
    assert room is not None
    synapse.join(member.user.access_token, room)
    events = [
        e
        for e in synapse.messages(member.user.access_token, room)
        if e.get("sender") == world.bot.user_id and e.get("type") == "m.room.message"
    ]
    preview, attached = events
    assert preview["content"]["msgtype"] == "m.text" and "too long" in preview["content"]["body"]
    assert attached["content"]["msgtype"] == "m.file"
    assert attached["content"]["m.mentions"] == {}
    assert long_text in world.download(attached["content"]["url"]).decode("utf-8")
    database.dispose()


@pytest.fixture
async def member_clients() -> AsyncIterator[list[E2EEMember]]:
    made: list[E2EEMember] = []
    yield made
    for client in made:
        await client.client.close()


async def test_encrypted_direct_room_the_member_decrypts_and_answers(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str, member_clients: list[E2EEMember]
) -> None:
    world = new_world(synapse, tmp_path)
    (member,) = world.add_members(1)
    settings = world.settings(sqlite_url, encryption=True)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    alice = E2EEMember(synapse, member.user, tmp_path / "member-store")
    member_clients.append(alice)
    assert isinstance(await alice.client.keys_upload(), KeysUploadResponse)

    async with running(settings, database, world.platform(settings)):
        queue(database, member.member_id, "secret", title="Confidential")
        await deliver(database, "secret")
        room = recorded(database, member.user.user_id)
        assert room is not None
        state = world.server.request(
            "GET",
            f"/_matrix/client/v3/rooms/{room}/state/m.room.encryption/",
            token=world.bot.access_token,
        )
        assert state["algorithm"] == "m.megolm.v1.aes-sha2"

        # The member's client sees a direct invite, joins, and decrypts the message.
        response = await alice.client.sync(timeout=1000)
        invite = response.rooms.invite[room]  # type: ignore[union-attr]
        assert any(
            isinstance(e, InviteMemberEvent) and e.content.get("is_direct") is True
            for e in invite.invite_state
        )
        await alice.client.join(room)
        message = await alice.wait(
            lambda e: isinstance(e, RoomMessageText) and "Confidential" in e.body, timeout=30
        )
        assert message.decrypted and message.source["content"]["m.mentions"] == {}
        encrypted = [
            e
            for e in synapse.messages(member.user.access_token, room)
            if e.get("sender") == world.bot.user_id and "state_key" not in e
        ]
        assert encrypted and all(e["type"] == "m.room.encrypted" for e in encrypted)

        # Its own command, encrypted, is answered there, encrypted.
        command = await alice.say(room, f"!status {SLUG}")
        reply = await alice.wait(
            lambda e: isinstance(e, RoomMessageNotice) and reply_target(e.source) == command,
            timeout=30,
        )
        assert reply.decrypted and "INTERPOL" in reply.body
    database.dispose()
