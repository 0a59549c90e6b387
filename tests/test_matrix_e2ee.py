"""An encrypted room end to end: a member's nio client (with its own keys) and the bot.

The member's `!sign` reaches the homeserver as ciphertext, the bot decrypts it, signs, and its reply
(and the letter post, and the counter's edits) go out encrypted and decrypt on the member's side.
An event the bot cannot decrypt is answered with a hint, once, after waiting for its key; a command
whose key comes late is handled when it comes, once, across a restart too. After a restart the bot
is the same device with the same keys, so it still reads the room. Letters in Cyrillic, Greek and
CJK (which nio sends ASCII-escaped, then encrypted and base64-encoded) arrive whole.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import LETTER, create_example_letter
from matrix_support import eventually, new_world, reply_target, running
from nio import (
    AsyncClient,
    AsyncClientConfig,
    DownloadResponse,
    KeysUploadResponse,
    MegolmEvent,
    RoomEncryptedFile,
    RoomMessageNotice,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from nio.crypto.attachments import decrypt_attachment
from synapse_server import RegisteredUser, SynapseServer

from bot import publishing
from bot.db import Database
from bot.platforms.matrix.content import MAX_EVENT_BYTES
from bot.store import matrix_sync


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

    async def say_key_later(
        self, server: SynapseServer, room_id: str, body: str
    ) -> tuple[str, list[dict[str, Any]]]:
        """Send a command encrypted with a new megolm session whose room key (to-device, Olm
        encrypted, made by nio as it always does) is handed back instead of sent: the caller
        delivers it later (``send_keys``), as a homeserver with slow to-device delivery would."""
        client, olm = self.client, self.client.olm
        assert olm is not None
        await self.sync(0)
        await client.joined_members(room_id)  # nio encrypts only with the members synced
        missing = client.get_missing_sessions(room_id)
        if missing:
            await client.keys_claim(missing)
        olm.create_outbound_group_session(room_id)  # a fresh session: its key is unknown to all
        room = client.rooms[room_id]
        keys = [
            payload
            for _, payload in olm.share_group_session_parallel(
                room_id, list(room.users), ignore_unverified_devices=True
            )
        ]
        olm.outbound_group_sessions[room_id].shared = True
        _, content = client.encrypt(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body, "m.mentions": {}}
        )
        event_id = server.send_event(str(client.access_token), room_id, "m.room.encrypted", content)
        return event_id, keys

    def send_keys(self, server: SynapseServer, keys: list[dict[str, Any]]) -> None:
        for payload in keys:
            txn = f"late{time.time_ns()}"
            path = f"/_matrix/client/v3/sendToDevice/m.room.encrypted/{txn}"
            server.request("PUT", path, token=str(self.client.access_token), body=payload)

    async def file_text(self, event: RoomEncryptedFile) -> str:
        """An encrypted attachment, downloaded and decrypted."""
        downloaded = await self.client.download(mxc=event.url)
        assert isinstance(downloaded, DownloadResponse), downloaded
        plain = decrypt_attachment(
            downloaded.body,
            event.source["content"]["file"]["key"]["k"],
            event.hashes["sha256"],
            event.iv,
        )
        return plain.decode("utf-8")


@pytest.fixture
async def member_clients() -> AsyncIterator[list[E2EEMember]]:
    made: list[E2EEMember] = []
    yield made
    for member in made:
        await member.client.close()


def notice_replying_to(event_id: str) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, RoomMessageNotice) and reply_target(e.source) == event_id


def edit_of(event_id: str, text: str) -> Callable[[Any], bool]:
    """A decrypted edit (an m.text, like the post) of ``event_id`` whose new body has ``text``."""
    return lambda e: (
        isinstance(e, RoomMessageText)
        and e.source["content"].get("m.relates_to", {}).get("event_id") == event_id
        and text in e.source["content"].get("m.new_content", {}).get("body", "")
    )


def is_post(slug: str) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, RoomMessageText)
        and e.body.startswith("📜")
        and f"({slug})" in e.body
        and "m.new_content" not in e.source["content"]
    )


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
        assert platform.loop is not None
        platform.loop.key_wait = 1.0  # bogus events (below) never get a key
        await alice.sync(0, full_state=True)
        post = await alice.wait(is_post("interpol-2021"))
        assert post.decrypted and "INTERPOL" in post.body
        assert post.source["content"]["msgtype"] == "m.text"  # posts notify; notices never do

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
        assert reply.source["content"]["msgtype"] == "m.notice"
        assert "<b>" in reply.source["content"]["formatted_body"]
        reply_raw = synapse.request(
            "GET",
            f"/_matrix/client/v3/rooms/{room}/event/{reply.event_id}",
            token=alice_member.user.access_token,
        )
        assert reply_raw["type"] == "m.room.encrypted"

        # The live counter edits the post, encrypted too.
        edit = await alice.wait(edit_of(post.event_id, "1 signature"))
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
        assert platform.loop is not None
        platform.loop.key_wait = 1.0
        third = synapse.send_event(bob_token, room, "m.room.encrypted", bogus)
        command = await alice.say(room, "!unsign")
        reply = await alice.wait(notice_replying_to(command))
        assert "withdrawn" in reply.body
        assert platform.device_id == world.bot.device_id
        assert not [e for e in alice.events if notice_replying_to(third)(e)]  # hinted once only
    bot_events = [e for e in alice.events if e.sender == world.bot.user_id]
    assert bot_events and not [e for e in bot_events if isinstance(e, MegolmEvent)]
    database.dispose()


async def test_fresh_key_sessions_get_one_hint_per_sender(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    """A sender who makes up a new megolm session for every message gets one hint per room in
    the window, not one per session; another sender gets their own; a restart forgets nothing
    (issue 10, item 6)."""
    world = new_world(synapse, tmp_path)
    bob, carol = world.add_members(2)
    room = world.room(encrypted=True)
    settings = world.settings(db_url, encryption=True)
    database = Database(settings.database.url)
    world.import_roster(database)
    sent = 0

    def undecryptable(member: Any) -> str:
        nonlocal sent
        sent += 1
        content = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgAEnB" + "A" * 80,
            "sender_key": "bogusSenderKey0000000000000000000000000000",
            "session_id": f"freshSession{sent:04d}{time.time_ns()}",  # a new session each time
            "device_id": "BOGUSDEV",
        }
        return synapse.send_event(member.user.access_token, room, "m.room.encrypted", content)

    def hints(event_ids: list[str]) -> list[dict[str, Any]]:
        """The bot's events (encrypted, their relation in clear) replying to these events."""
        return [
            e
            for e in synapse.messages(world.owner.access_token, room, limit=300)
            if e.get("sender") == world.bot.user_id and reply_target(e) in event_ids
        ]

    def journaled(event_ids: list[str]) -> bool:
        with database.session() as session:
            return all(matrix_sync.was_handled(session, event_id=e) for e in event_ids)

    platform = world.platform(settings)
    async with running(settings, database, platform):
        assert platform.loop is not None
        platform.loop.key_wait = 0.5
        bobs = [undecryptable(bob) for _ in range(6)]
        carols = [undecryptable(carol)]
        await eventually(lambda: journaled(bobs + carols), timeout=30, what="every event seen")
        await eventually(lambda: hints(carols), what="carol's hint")
        await eventually(lambda: hints(bobs), what="bob's hint")
        await asyncio.sleep(1.0)  # more hints would show up by now
        assert len(hints(bobs)) == 1 and len(hints(carols)) == 1

    platform = world.platform(settings)
    async with running(settings, database, platform):
        assert platform.loop is not None
        platform.loop.key_wait = 0.5
        later = [undecryptable(bob)]
        await eventually(lambda: journaled(later), timeout=30, what="the later event seen")
        await asyncio.sleep(1.0)
    assert hints(later) == []  # still within bob's window, across the restart
    assert len(hints(bobs)) == 1
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


def letter_source(slug: str, title: str, body: str) -> str:
    """The example letter's front matter with another slug, title and body."""
    front = LETTER.read_text(encoding="utf-8").split("+++")[1]
    front = front.replace('slug = "interpol-2021"', f'slug = "{slug}"')
    front = "\n".join(
        f'title = "{title}"' if line.startswith("title = ") else line for line in front.split("\n")
    )
    return f"+++{front}+++\n{body}\n"


def paragraphs(sentence: str, characters: int) -> str:
    """About ``characters`` characters of ``sentence``, in paragraphs."""
    per_paragraph = max(1, 600 // len(sentence))
    count = characters // len(sentence) + 1
    lines = [sentence * per_paragraph for _ in range(count // per_paragraph + 1)]
    return "\n\n".join(lines)[:characters].rstrip()


#: slug -> (title, body). Cyrillic and CJK (with characters outside the BMP, 12 bytes escaped)
#: too long for one encrypted event; Greek close to the limit (about 50 KB as sent) but in it.
NON_LATIN = {
    "cyr": (
        "Письмо министрам",
        paragraphs("Уважаемые министры, мы пишем вам, чтобы выразить нашу позицию. ", 6000),
    ),
    "gre": (
        "Επιστολή προς τους υπουργούς",
        paragraphs("Αξιότιμοι υπουργοί, σας γράφουμε για να δηλώσουμε τη θέση μας. ", 2900),
    ),
    "cjk": ("致各位部长的信", paragraphs("尊敬的部长们：我们写信表明我们的立场。𠀋𠀍𠀎 ", 5000)),
}


async def test_non_latin_letters_in_an_encrypted_room(
    synapse: SynapseServer, tmp_path: Path, db_url: str, member_clients: list[E2EEMember]
) -> None:
    """Measured as sent (ASCII-escaped, encrypted, base64): each letter arrives whole, as one
    event or as a summary plus the text as a file, and the counter's edits go out."""
    world = new_world(synapse, tmp_path)
    (alice_member,) = world.add_members(1)
    room = world.room(encrypted=True)
    settings = world.settings(db_url, encryption=True)
    database = Database(settings.database.url)
    world.import_roster(database)
    for slug, (title, body) in NON_LATIN.items():
        create_example_letter(
            database, settings, post_to=[f"matrix:{room}"], text=letter_source(slug, title, body)
        )
    alice = E2EEMember(synapse, alice_member.user, tmp_path / "alice-store")
    member_clients.append(alice)
    assert isinstance(await alice.client.keys_upload(), KeysUploadResponse)

    platform = world.platform(settings)
    async with running(settings, database, platform):
        await alice.sync(0, full_state=True)
        attached: dict[str, bool] = {}
        posts: dict[str, Any] = {}
        texts: dict[str, str] = {}
        for slug in NON_LATIN:
            view = publishing.letter_post(database, slug=slug, platform="matrix", channel=room)
            assert view is not None
            texts[slug] = view.letter.text
            post = posts[slug] = await alice.wait(is_post(slug), timeout=30)
            attached[slug] = "attached as" in post.body
            if attached[slug]:
                file_event = await alice.wait(
                    lambda e, post=post: (
                        isinstance(e, RoomEncryptedFile) and reply_target(e.source) == post.event_id
                    )
                )
                assert (await alice.file_text(file_event)).rstrip("\n") == view.letter.text
            else:
                assert view.letter.text in post.body  # nothing cut
        assert attached == {"cyr": True, "gre": False, "cjk": True}
        raw = synapse.request(
            "GET",
            f"/_matrix/client/v3/rooms/{room}/event/{posts['gre'].event_id}",
            token=alice_member.user.access_token,
        )
        assert raw["type"] == "m.room.encrypted" and 40_000 < len(json.dumps(raw)) < MAX_EVENT_BYTES

        # The counter edits every post (an edit carries the letter again when it is inline).
        for slug in NON_LATIN:
            command = await alice.say(room, f"!sign {slug}")
            reply = await alice.wait(notice_replying_to(command))
            assert "signed" in reply.body
            edit = await alice.wait(edit_of(posts[slug].event_id, "1 signature"), timeout=30)
            new_body = edit.source["content"]["m.new_content"]["body"]
            assert ("attached as" in new_body) == attached[slug]
            if not attached[slug]:
                assert texts[slug] in new_body

        # A reply carrying a long Cyrillic text: its beginning, and the whole as a file.
        command = world.say(world.owner, room, "!cosign preview cyr")
        reply = await alice.wait(notice_replying_to(command), timeout=30)
        assert "too long for one message" in reply.body
        reply_file = await alice.wait(
            lambda e: isinstance(e, RoomEncryptedFile) and reply_target(e.source) == command
        )
        assert NON_LATIN["cyr"][1].split("\n\n")[-1] in await alice.file_text(reply_file)
    database.dispose()


async def test_a_command_whose_key_comes_late_is_handled_once(
    synapse: SynapseServer, tmp_path: Path, db_url: str, member_clients: list[E2EEMember]
) -> None:
    """The key of an encrypted command arrives after the command: the bot waits for it (no
    hint), handles the command once the key is there, and not again after a restart; a command
    still waiting when the bot stops is handled after the restart."""
    world = new_world(synapse, tmp_path)
    (alice_member,) = world.add_members(1)
    room = world.room(encrypted=True)
    settings = world.settings(db_url, encryption=True)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    alice = E2EEMember(synapse, alice_member.user, tmp_path / "alice-store")
    member_clients.append(alice)
    assert isinstance(await alice.client.keys_upload(), KeysUploadResponse)

    async def replies(event_id: str) -> set[str]:
        """The bot's (decrypted) replies to ``event_id`` that alice has seen so far."""
        await alice.sync(0)
        return {e.event_id for e in alice.events if notice_replying_to(event_id)(e)}

    platform = world.platform(settings)
    async with running(settings, database, platform):
        assert platform.loop is not None
        platform.loop.key_wait = 60.0
        await alice.sync(0, full_state=True)
        await alice.wait(is_post("interpol-2021"))

        late, keys = await alice.say_key_later(synapse, room, "!sign")
        await asyncio.sleep(3)  # the bot has synced the command, and cannot decrypt it
        assert not await replies(late)  # no hint: the wait is not over
        assert late in platform.loop._awaiting
        alice.send_keys(synapse, keys)
        reply = await alice.wait(notice_replying_to(late))
        assert "signed" in reply.body and "could not decrypt" not in reply.body

        # Still waiting when the bot stops: the key comes while it is down.
        pending, keys = await alice.say_key_later(synapse, room, "!unsign")
        deadline = time.monotonic() + 15
        while pending not in platform.loop._awaiting:
            assert time.monotonic() < deadline, "the bot never saw the command"
            await asyncio.sleep(0.1)
    alice.send_keys(synapse, keys)

    platform = world.platform(settings)
    async with running(settings, database, platform):
        reply = await alice.wait(notice_replying_to(pending))
        assert "withdrawn" in reply.body
        marker = await alice.say(room, "!status")
        await alice.wait(notice_replying_to(marker))
        await asyncio.sleep(1)
        assert len(await replies(late)) == 1  # handled once, not again after the restart
        assert len(await replies(pending)) == 1

        # A pill whose link is not matrix.to (another client's permalink prefix): the user id is
        # taken from m.mentions.
        someone = "@someone:" + alice_member.user.user_id.split(":", 1)[1]
        pill = f'<a href="https://example.org/#/{someone}">Someone</a>'
        link = world.say(
            world.owner,
            room,
            f"!cosign link Someone {alice_member.member_id}",
            extra={
                "format": "org.matrix.custom.html",
                "formatted_body": f"!cosign link {pill} {alice_member.member_id}",
                "m.mentions": {"user_ids": [someone]},
            },
        )
        linked = await alice.wait(notice_replying_to(link))
        assert linked.body.startswith(f"Linked {someone} to")
    database.dispose()
