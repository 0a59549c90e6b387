"""Proves the Synapse harness against a real homeserver and real matrix-nio clients.

Why: the bot's Matrix tests rely on this harness; these tests also pin down what nio 0.26 needs
for an end-to-end encrypted round trip (see test_encrypted_round_trip_between_nio_clients).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteInfo,
    JoinResponse,
    KeysUploadResponse,
    MegolmEvent,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from synapse_server import (
    MatrixHTTPError,
    RegisteredUser,
    SynapseServer,
    unique_localpart,
)

# Registers the `synapse` / `synapse_default_limits` fixtures even without a conftest. If
# tests/conftest.py imports them too, its definitions win and there is still one server.
pytest_plugins = ["synapse_server"]


@pytest.fixture
async def nio_factory(
    synapse: SynapseServer, tmp_path: Path
) -> AsyncIterator[Callable[[RegisteredUser, bool], AsyncClient]]:
    """nio clients bound to the harness server and closed after the test."""
    clients: list[AsyncClient] = []

    def make(user: RegisteredUser, encrypted: bool = False) -> AsyncClient:
        store = tmp_path / f"store-{user.localpart}"
        store.mkdir()
        config = AsyncClientConfig(
            encryption_enabled=encrypted,
            store_sync_tokens=encrypted,  # only works with encryption on (PLATFORM-NOTES)
            pickle_key="test-pickle-key",
            max_limit_exceeded=0,
            max_timeouts=2,
        )
        client = AsyncClient(
            synapse.base_url,
            user.user_id,
            device_id=user.device_id,
            store_path=str(store),
            config=config,
        )
        # Reuses the device created by the admin register call; loads the olm store if E2EE.
        client.restore_login(user.user_id, user.device_id, user.access_token)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def _sync_until_text(
    client: AsyncClient, room_id: str, body: str, rounds: int = 10
) -> RoomMessageText | MegolmEvent:
    """Sync until the room timeline holds `body` (decrypted) or an undecryptable event."""
    for _ in range(rounds):
        resp = await client.sync(timeout=2000)
        assert isinstance(resp, SyncResponse), resp
        room = resp.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if isinstance(event, RoomMessageText) and event.body == body:
                return event
            if isinstance(event, MegolmEvent):
                return event
    raise AssertionError(f"{body!r} never arrived in {room_id}")


def test_server_basics(synapse: SynapseServer) -> None:
    assert synapse.base_url == f"http://127.0.0.1:{synapse.port}"
    assert synapse.server_name == "localhost"
    assert synapse.is_running
    versions = synapse.request("GET", "/_matrix/client/versions")
    assert versions["versions"]
    admin = synapse.register_user(unique_localpart("admin"), admin=True, displayname="Ad Min")
    assert admin.user_id.startswith("@admin-") and admin.user_id.endswith(":localhost")
    whoami = synapse.request("GET", "/_matrix/client/v3/account/whoami", token=admin.access_token)
    assert whoami["user_id"] == admin.user_id and whoami["device_id"] == admin.device_id
    profile = synapse.request("GET", f"/_matrix/client/v3/profile/{admin.user_id}")
    assert profile["displayname"] == "Ad Min"
    # Admin API is reachable through the client listener and the user really is an admin.
    info = synapse.request(
        "GET", f"/_synapse/admin/v2/users/{admin.user_id}", token=admin.access_token
    )
    assert info["admin"] is True
    second = synapse.login(admin.user_id, admin.password)
    assert second.device_id != admin.device_id


async def test_plain_room_with_nio_client(
    synapse: SynapseServer, nio_factory: Callable[[RegisteredUser, bool], AsyncClient]
) -> None:
    alice = synapse.register_user(unique_localpart("alice"))
    bob = synapse.register_user(unique_localpart("bob"))
    room_id = synapse.create_room(alice.access_token, name="plain", invite=[bob.user_id])

    client = nio_factory(bob, False)
    first = await client.sync(timeout=0)
    assert isinstance(first, SyncResponse), first
    assert isinstance(first.rooms.invite.get(room_id), InviteInfo)
    joined = await client.join(room_id)
    assert isinstance(joined, JoinResponse), joined
    await client.sync(timeout=0)

    event_id = synapse.send_text(alice.access_token, room_id, "hello bob")
    received = await _sync_until_text(client, room_id, "hello bob")
    assert isinstance(received, RoomMessageText)
    assert received.event_id == event_id and received.sender == alice.user_id

    # And the other way: nio sends, the raw helper sees it.
    sent = await client.room_send(
        room_id, "m.room.message", {"msgtype": "m.notice", "body": "hi alice", "m.mentions": {}}
    )
    assert isinstance(sent, RoomSendResponse), sent
    seen = await synapse.wait_for_event_async(
        alice.access_token, room_id, lambda e: e.get("event_id") == sent.event_id
    )
    assert seen["content"]["msgtype"] == "m.notice" and seen["sender"] == bob.user_id
    history = synapse.messages(alice.access_token, room_id)
    assert history[0]["type"] == "m.room.create"  # oldest first
    assert [e["event_id"] for e in history[-2:]] == [event_id, sent.event_id]

    # The shared server has raised limits: a burst of 30 goes through.
    for i in range(30):
        synapse.send_text(alice.access_token, room_id, f"burst {i}")


async def test_encrypted_round_trip_between_nio_clients(
    synapse: SynapseServer, nio_factory: Callable[[RegisteredUser, bool], AsyncClient]
) -> None:
    alice = synapse.register_user(unique_localpart("ealice"))
    bob = synapse.register_user(unique_localpart("ebob"))
    room_id = synapse.create_room(
        alice.access_token, name="secret", invite=[bob.user_id], encrypted=True
    )
    sender = nio_factory(alice, True)
    receiver = nio_factory(bob, True)
    assert sender.olm is not None and receiver.olm is not None

    # 1. Both devices publish identity + one-time keys. The receiver's MUST be on the server
    #    before the sender shares its megolm session, or the message stays a MegolmEvent.
    for client in (receiver, sender):
        assert client.should_upload_keys
        uploaded = await client.keys_upload()
        assert isinstance(uploaded, KeysUploadResponse), uploaded
    # 2. Receiver joins; the sender syncs so nio knows the room, that it is encrypted, who is in.
    assert isinstance(await receiver.join(room_id), JoinResponse)
    assert isinstance(await sender.sync(timeout=0, full_state=True), SyncResponse)
    assert sender.rooms[room_id].encrypted
    # 3. room_send does joined_members + keys_query + keys_claim + share_group_session itself.
    sent = await sender.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": "for your eyes only", "m.mentions": {}},
        ignore_unverified_devices=True,
    )
    assert isinstance(sent, RoomSendResponse), sent
    # The server only ever sees ciphertext.
    raw = await synapse.wait_for_event_async(
        alice.access_token, room_id, lambda e: e.get("event_id") == sent.event_id
    )
    assert raw["type"] == "m.room.encrypted"
    # 4. Receiver syncs: the to-device room key is decrypted first, then the timeline event.
    received = await _sync_until_text(receiver, room_id, "for your eyes only")
    assert isinstance(received, RoomMessageText), f"undecryptable: {received}"
    assert received.decrypted and received.event_id == sent.event_id
    assert received.sender == alice.user_id


def test_default_rate_limits_answer_limit_exceeded(
    synapse_default_limits: SynapseServer,
) -> None:
    server = synapse_default_limits
    # Registration, room creation and joins stay unlimited on this server too.
    users = [server.register_user(unique_localpart("rl")) for _ in range(6)]
    room_id = server.create_room(users[0].access_token, invite=[u.user_id for u in users[1:]])
    for user in users[1:]:
        server.join(user.access_token, room_id)
    sent = 0
    with pytest.raises(MatrixHTTPError) as caught:
        for i in range(30):
            server.send_text(users[0].access_token, room_id, f"spam {i}")
            sent += 1
    err = caught.value
    assert err.status == 429 and err.errcode == "M_LIMIT_EXCEEDED"
    assert err.retry_after_ms is not None and 0 < err.retry_after_ms <= 10_000
    print(f"\nrate limited after {sent} messages, retry_after_ms={err.retry_after_ms}")
    # Default burst is 10 actions; createRoom (and its invites) also draw from rc_message.
    assert 3 <= sent <= 10


async def test_restart_and_kill_keep_users_and_rooms(synapse: SynapseServer) -> None:
    alice = synapse.register_user(unique_localpart("ralice"), password="s3cret-pass")
    room_id = synapse.create_room(alice.access_token, name="durable")
    before = synapse.send_text(alice.access_token, room_id, "before restart")
    port, pid = synapse.port, synapse.pid
    try:
        began = time.monotonic()
        await asyncio.to_thread(synapse.restart)
        print(f"\nrestart took {time.monotonic() - began:.2f} s")
        assert synapse.port == port and synapse.pid != pid
        bodies = [e["content"].get("body") for e in synapse.messages(alice.access_token, room_id)]
        assert "before restart" in bodies  # same token still valid: same database
        assert synapse.login(alice.user_id, "s3cret-pass").user_id == alice.user_id

        after = synapse.send_text(alice.access_token, room_id, "before kill")
        await asyncio.to_thread(synapse.kill)
        assert not synapse.is_running
        with pytest.raises(OSError):
            synapse.request("GET", "/_matrix/client/versions", timeout=2)
        await asyncio.to_thread(synapse.start)
        ids = [e["event_id"] for e in synapse.messages(alice.access_token, room_id)]
        assert before in ids and after in ids
    finally:
        await asyncio.to_thread(synapse.ensure_running)
