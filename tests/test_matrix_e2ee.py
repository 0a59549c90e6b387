"""An encrypted room end to end: a member's nio client (with its own keys) and the bot.

The member's `!sign` reaches the homeserver as ciphertext, the bot decrypts it, signs, and its reply
(and the letter post, and the counter's edits) go out encrypted and decrypt on the member's side.
An event the bot cannot decrypt is answered with a hint, once. After a restart the bot is the same
device with the same keys, so it still reads the room.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import create_example_letter
from matrix_support import new_world, reply_target, running
from nio import (
    AsyncClient,
    AsyncClientConfig,
    KeysUploadResponse,
    MegolmEvent,
    RoomMessageNotice,
    RoomSendResponse,
    SyncResponse,
)
from synapse_server import RegisteredUser, SynapseServer

from bot.db import Database


class E2EEMember:
    """A member's own encrypted nio client; remembers every timeline event it decrypted."""

    def __init__(self, server: SynapseServer, user: RegisteredUser, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        self.client = AsyncClient(
            server.base_url,
            user.user_id,
            device_id=user.device_id,
            store_path=str(store),
            config=AsyncClientConfig(
                encryption_enabled=True, pickle_key="member-key", max_limit_exceeded=0
            ),
        )
        self.client.restore_login(user.user_id, user.device_id, user.access_token)
        self.events: list[Any] = []

    async def sync(self, timeout_ms: int = 1000, full_state: bool = False) -> None:
        response = await self.client.sync(timeout=timeout_ms, full_state=full_state or None)
        assert isinstance(response, SyncResponse), response
        for room in response.rooms.join.values():
            self.events.extend(room.timeline.events)
        if self.client.should_query_keys:
            await self.client.keys_query()

    async def wait(self, predicate: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError("no matching decrypted event")
            await self.sync()

    async def say(self, room_id: str, body: str) -> str:
        response = await self.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": body, "m.mentions": {}},
            ignore_unverified_devices=True,
        )
        assert isinstance(response, RoomSendResponse), response
        return str(response.event_id)


@pytest.fixture
async def member_clients() -> AsyncIterator[list[E2EEMember]]:
    made: list[E2EEMember] = []
    yield made
    for member in made:
        await member.client.close()


def notice_replying_to(event_id: str) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, RoomMessageNotice) and reply_target(e.source) == event_id


async def test_encrypted_room_end_to_end(
    synapse: SynapseServer, tmp_path: Path, db_url: str, member_clients: list[E2EEMember]
) -> None:
    world = new_world(synapse, tmp_path)
    alice_member, bob_member = world.add_members(2)
    room = world.room(encrypted=True)
    settings = world.settings(db_url, encryption=True)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])

    alice = E2EEMember(synapse, alice_member.user, tmp_path / "alice-store")
    member_clients.append(alice)
    uploaded = await alice.client.keys_upload()
    assert isinstance(uploaded, KeysUploadResponse), uploaded

    platform = world.platform(settings)
    async with running(settings, database, platform):
        assert platform.client is not None and platform.client.olm is not None
        await alice.sync(0, full_state=True)
        post = await alice.wait(
            lambda e: isinstance(e, RoomMessageNotice) and e.body.startswith("📜")
        )
        assert post.decrypted and "INTERPOL" in post.body

        command = await alice.say(room, "!sign")
        raw = synapse.request(
            "GET",
            f"/_matrix/client/v3/rooms/{room}/event/{command}",
            token=alice_member.user.access_token,
        )
        assert raw["type"] == "m.room.encrypted"  # the server only ever saw ciphertext
        reply = await alice.wait(notice_replying_to(command))
        assert reply.decrypted and "signed" in reply.body and "INTERPOL" in reply.body
        assert reply.source["content"]["m.mentions"] == {}
        assert "<b>" in reply.source["content"]["formatted_body"]
        reply_raw = synapse.request(
            "GET",
            f"/_matrix/client/v3/rooms/{room}/event/{reply.event_id}",
            token=alice_member.user.access_token,
        )
        assert reply_raw["type"] == "m.room.encrypted"

        # The live counter edits the post, encrypted too.
        edit = await alice.wait(
            lambda e: (
                isinstance(e, RoomMessageNotice)
                and e.source["content"].get("m.relates_to", {}).get("event_id") == post.event_id
                and "1 signature" in e.source["content"]["m.new_content"]["body"]
            )
        )
        assert edit.decrypted

        # An event nobody could decrypt: logged and answered with a hint, once per key session.
        bogus = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgAEnB" + "A" * 80,
            "sender_key": "bogusSenderKey0000000000000000000000000000",
            "session_id": "bogusSession0000000000000000000000000000000",
            "device_id": "BOGUSDEV",
        }
        bob_token = bob_member.user.access_token
        first = synapse.send_event(bob_token, room, "m.room.encrypted", bogus)
        second = synapse.send_event(bob_token, room, "m.room.encrypted", bogus)
        hint = await alice.wait(notice_replying_to(first))
        assert "could not decrypt" in hint.body
        marker = await alice.say(room, "!status")
        await alice.wait(notice_replying_to(marker))
        assert not [e for e in alice.events if notice_replying_to(second)(e)]

    # Restarted: same device, same keys; the room is still readable both ways.
    platform = world.platform(settings)
    async with running(settings, database, platform):
        third = synapse.send_event(bob_token, room, "m.room.encrypted", bogus)
        command = await alice.say(room, "!unsign")
        reply = await alice.wait(notice_replying_to(command))
        assert "withdrawn" in reply.body
        assert platform.device_id == world.bot.device_id
        assert not [e for e in alice.events if notice_replying_to(third)(e)]  # hinted once only
    bot_events = [e for e in alice.events if e.sender == world.bot.user_id]
    assert bot_events and not [e for e in bot_events if isinstance(e, MegolmEvent)]
    database.dispose()


async def test_password_login_keeps_its_token_and_device(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    room = world.room()
    settings = world.settings(db_url, device_id="COSIGNBOT", encryption=True)
    database = Database(settings.database.url)
    session_file = tmp_path / "matrix-store" / "session.json"

    def bot_devices() -> set[str]:
        answer = synapse.request("GET", "/_matrix/client/v3/devices", token=world.bot.access_token)
        return {d["device_id"] for d in answer["devices"]}

    first = world.platform(settings, access_token=None, password=world.bot.password)
    async with running(settings, database, first):
        assert first.device_id == "COSIGNBOT"
        reply = await world.wait_reply(room, world.say(world.owner, room, "!letters"))
        assert "No letter" in reply["content"]["body"]
    assert session_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "matrix-store").stat().st_mode & 0o777 == 0o700
    saved = session_file.read_text()
    assert world.bot.password not in saved

    second = world.platform(settings, access_token=None, password=world.bot.password)
    async with running(settings, database, second):
        assert second.device_id == "COSIGNBOT"
        await world.wait_reply(room, world.say(world.owner, room, "!letters"))
    assert session_file.read_text() == saved  # the token was reused, not a new login
    assert bot_devices() == {world.bot.device_id, "COSIGNBOT"}
    database.dispose()
