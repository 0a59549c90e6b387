"""Texts that change (DESIGN.md §9, issue 13) on Matrix, against the real Synapse: no HTTP mocks.

What a member sees when a letter's text changes after they signed:

* the letter's post is edited (``m.replace``, ``m.text``, full ``m.new_content``) to the new text
  and a line saying it changed; a text grown past one event (64 KiB as sent, encrypted rooms
  measured as sent) switches the post to the attached layout and the new text arrives as a file,
  once per version (rule 8: never cut silently);
* one direct message per signer in their direct room (``is_direct``, ``m.direct``; encrypted when
  encryption is on) with the word diff (``[-…-]{+…+}`` in the body, ``<del>`` in the HTML), sent
  once across a restart; a diff too big for one event comes as a preview and a file;
* ``!sign`` (in the letter's room, or ``!sign SLUG`` in the direct room) re-confirms;
* a minor change is a notice with the diff in the letter's room, and no direct messages;
* the diff is data (rule 7): ``@room``, a display name and ``<script>`` show literally and ping
  no one (``"m.mentions": {}`` on every event, HTML escaped).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import create_example_letter
from matrix_support import Event, MatrixWorld, Member, eventually, new_world, reply_target, running
from nio import AsyncClient, KeysUploadResponse, RoomEncryptedFile, RoomMessageText
from sqlalchemy import update as sql_update
from sqlmodel import col, select
from synapse_server import RegisteredUser, SynapseServer, unique_localpart
from test_matrix_direct import m_direct, member_state, queue, recorded
from test_matrix_e2ee import (  # noqa: F401  (member_clients: a fixture)
    E2EEMember,
    edit_of,
    is_post,
    member_clients,
    notice_replying_to,
)
from test_versions import CHANGED, OLD_WORDS, ORIGINAL, TYPO, update

from bot import publishing
from bot.db import Database
from bot.direct import DM
from bot.models import OutboxMessage, Post
from bot.models._types import utcnow
from bot.platforms.matrix import MatrixPlatform
from bot.platforms.matrix.content import MAX_EVENT_BYTES
from bot.platforms.matrix.outbox import Publisher
from bot.platforms.matrix.send import Sender
from bot.runtime import Bot
from bot.store import letters, signatures

SLUG = "interpol-2021"
NEW_WORDS = "handing a green light"  # CHANGED has these instead of OLD_WORDS


# --- reading the rooms as a member ---------------------------------------------------------------


def bot_messages(world: MatrixWorld, user: RegisteredUser, room: str) -> list[Event]:
    """The bot's m.room.message events in `room`, oldest first, as `user` (a member) reads it."""
    return [
        e
        for e in world.server.messages(user.access_token, room, limit=300)
        if e.get("sender") == world.bot.user_id and e.get("type") == "m.room.message"
    ]


def edits_of(events: list[Event], post_id: str) -> list[Event]:
    return [
        e
        for e in events
        if (e["content"].get("m.relates_to") or {}).get("rel_type") == "m.replace"
        and e["content"]["m.relates_to"].get("event_id") == post_id
    ]


def files_named(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if is_file(e, name)]


def is_file(event: Event, name: str) -> bool:
    return bool(event["content"].get("msgtype") == "m.file" and event["content"]["body"] == name)


def corrected(event: Event) -> bool:
    """The notice of a minor change (not an edit of the post, whose note says so too)."""
    content = event["content"]
    return "m.new_content" not in content and "a minor change" in content.get("body", "")


def changed_words(event: Event) -> bool:
    """The request to re-confirm CHANGED (or a variant of it)."""
    return "[-giving-]" in event["content"].get("body", "")


async def latest_edit(
    world: MatrixWorld, user: RegisteredUser, room: str, post_id: str, *needles: str
) -> dict[str, Any]:
    """The content of the post's latest edit, once its new body contains every needle."""

    def check() -> dict[str, Any] | None:
        edits = edits_of(bot_messages(world, user, room), post_id)
        if not edits:
            return None
        content: dict[str, Any] = edits[-1]["content"]
        body = content["m.new_content"]["body"]
        return content if all(n in body for n in needles) else None

    found = await eventually(check, timeout=30, what=f"an edit of the post with {needles}")
    assert isinstance(found, dict)
    return found


async def wait_in(
    world: MatrixWorld, user: RegisteredUser, room: str, predicate: Callable[[Event], bool]
) -> Event:
    return await world.server.wait_for_event_async(
        user.access_token,
        room,
        lambda e: e.get("sender") == world.bot.user_id and predicate(e),
        timeout=30,
        history=100,
    )


async def sign_in(world: MatrixWorld, member: Member, room: str, command: str = "!sign") -> Event:
    """`member` types `command` in `room`; the bot's reply to it."""
    sent = world.say(member.user, room, command)
    return await wait_in(world, member.user, room, lambda e: reply_target(e) == sent)


# --- the database --------------------------------------------------------------------------------


def counted(database: Database) -> list[str]:
    """Member ids whose signatures count (on the current version)."""
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None and letter.id is not None
        return sorted(s.member_id for s in signatures.signatories(session, letter_pk=letter.id))


def dm_rows(database: Database) -> list[OutboxMessage]:
    with database.session() as session:
        return list(session.exec(select(OutboxMessage).where(OutboxMessage.kind == DM)).all())


def reconfirm_key(member: Member, version: int = 2) -> str:
    return f"dm:reconfirm:{SLUG}:{version}:{member.member_id}"


async def delivered_dm(database: Database, member: Member, version: int = 2) -> OutboxMessage:
    """The re-confirmation request for `member`, once the bot delivered it."""
    key = reconfirm_key(member, version)

    def check() -> OutboxMessage | None:
        rows = [r for r in dm_rows(database) if r.idempotency_key == key]
        return rows[0] if rows and rows[0].delivered_at is not None else None

    row = await eventually(check, timeout=30, what=f"the direct message {key}")
    assert isinstance(row, OutboxMessage)
    return row


async def direct_room(world: MatrixWorld, database: Database, member: Member) -> str:
    """The member's direct room (made by the bot), joined by the member."""
    room = recorded(database, member.user.user_id)
    assert room is not None
    state = member_state(world, room, member.user.user_id)
    if state["membership"] == "invite":
        assert state["is_direct"] is True  # the invite marks it as a direct chat
        world.server.join(member.user.access_token, room)
    return room


def shown_version(database: Database) -> int | None:
    """The text version the (one) post of the letter is recorded as showing."""
    with database.session() as session:
        (post,) = session.exec(select(Post)).all()
        return post.shown_version


def set_shown_version(database: Database, version: int) -> None:
    with database.session() as session:
        session.execute(sql_update(Post).values(shown_version=version))


def with_body(body: str, source: str = ORIGINAL) -> str:
    """The example letter file with another body (same front matter, same slug)."""
    _, front, _ = source.split("+++", 2)
    return f"+++{front}+++\n\n{body}\n"


def huge_body(word: str, characters: int = 70_000) -> str:
    """About `characters` characters of numbered words, in paragraphs of 100 words."""
    words: list[str] = []
    size = 0
    while size < characters:
        words.append(f"{word}{len(words)}")
        size += len(words[-1]) + 1
    return "\n\n".join(" ".join(words[i : i + 100]) for i in range(0, len(words), 100))


# --- a material change ---------------------------------------------------------------------------


async def test_a_material_change_edits_the_post_and_asks_each_signer_in_their_direct_room(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    """Signers must see what they are now asked to stand behind, and members reading the room
    must see the text that counts: the post is edited, each signer is asked once, in private,
    with the diff, and either room takes `!sign` to re-confirm."""
    world = new_world(synapse, tmp_path)
    alice, bob, bystander = world.add_members(3)
    room = world.room()
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])

    async with running(settings, database, world.platform(settings)):
        post = (await world.wait_letter_post(room))["event_id"]
        for member in (alice, bob):
            assert "You signed" in (await sign_in(world, member, room))["content"]["body"]
        assert counted(database) == sorted([alice.member_id, bob.member_id])

        update(database, settings, CHANGED)

        # The post: edited to the new text, with the line saying it changed.
        content = await latest_edit(world, bystander.user, room, post, NEW_WORDS, "version 2")
        new = content["m.new_content"]
        assert new["msgtype"] == "m.text" and new["m.mentions"] == {}
        assert content["msgtype"] == "m.text" and content["m.mentions"] == {}
        assert "Text changed" in new["body"] and OLD_WORDS not in new["body"]
        assert "so far.\n✏️ Text changed" in new["body"]  # the note on a line of its own
        assert "so far.<br>✏️ Text changed" in new["formatted_body"]
        assert NEW_WORDS in new["formatted_body"] and "Text changed" in new["formatted_body"]
        assert "0 signatures so far" in new["body"]  # given to version 1: they stopped counting
        assert counted(database) == []

        # Each signer: one message in their direct room with the word diff; nobody else.
        for member in (alice, bob):
            row = await delivered_dm(database, member)
            dm_room = await direct_room(world, database, member)
            assert row.result is not None and row.result["room_id"] == dm_room
            (message,) = bot_messages(world, member.user, dm_room)
            dm = message["content"]
            assert dm["msgtype"] == "m.text" and dm["m.mentions"] == {}
            assert "[-giving-]{+handing+} a green light" in dm["body"]
            assert f"!sign {SLUG}" in dm["body"] and "version 2" in dm["body"]
            assert "<del>[-giving-]</del><b>{+handing+}</b> a green light" in dm["formatted_body"]
        assert m_direct(world) == {
            m.user.user_id: [recorded(database, m.user.user_id)] for m in (alice, bob)
        }
        assert recorded(database, bystander.user.user_id) is None
        assert {r.channel for r in dm_rows(database)} == {alice.user.user_id, bob.user.user_id}

        # Re-confirming: `!sign` in the letter's room …
        reply = (await sign_in(world, alice, room))["content"]
        assert reply["msgtype"] == "m.notice" and reply["m.mentions"] == {}
        assert reply["body"].startswith("✅ You re-confirmed your signature"), reply["body"]
        assert counted(database) == [alice.member_id]
        # … or `!sign SLUG` in the direct room.
        bob_room = await direct_room(world, database, bob)
        reply = (await sign_in(world, bob, bob_room, f"!sign {SLUG}"))["content"]
        assert reply["msgtype"] == "m.notice" and "re-confirmed" in reply["body"]
        assert counted(database) == sorted([alice.member_id, bob.member_id])
        content = await latest_edit(world, bystander.user, room, post, "2 signatures so far")
        assert "Text changed" in content["m.new_content"]["body"]
        assert NEW_WORDS in content["m.new_content"]["body"]

        # Signing again is "already signed"; still one message per signer.
        reply = (await sign_in(world, alice, room))["content"]
        assert reply["body"].startswith("You already signed"), reply["body"]
    for member in (alice, bob):
        where = recorded(database, member.user.user_id)
        assert where is not None
        texts = [
            e
            for e in bot_messages(world, member.user, where)
            if e["content"]["msgtype"] == "m.text"
        ]
        assert len(texts) == 1
    database.dispose()


async def test_a_restart_between_the_update_and_the_send_sends_it_once(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str
) -> None:
    """The request is an outbox row written with the update (rule 6): a bot that was down sends
    it when back; one that sent it and died before recording so sends the same event again
    (its transaction id derives from the row's key), which Synapse answers with the first."""
    world = new_world(synapse, tmp_path)
    (alice,) = world.add_members(1)
    room = world.room()
    settings = world.settings(sqlite_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    async with running(settings, database, world.platform(settings)):
        post = (await world.wait_letter_post(room))["event_id"]
        await sign_in(world, alice, room)

    update(database, settings, CHANGED)  # while no bot runs
    async with running(settings, database, world.platform(settings)):
        first = await delivered_dm(database, alice)
        await latest_edit(world, alice.user, room, post, NEW_WORDS, "version 2")
    dm_room = await direct_room(world, database, alice)
    (message,) = bot_messages(world, alice.user, dm_room)
    assert "[-giving-]{+handing+}" in message["content"]["body"]

    # Sent, then killed before it was recorded as delivered: the restarted bot sends it again.
    with database.session() as session:
        session.execute(
            sql_update(OutboxMessage)
            .where(col(OutboxMessage.idempotency_key) == reconfirm_key(alice))
            .values(delivered_at=None, next_attempt_at=utcnow())
        )
    async with running(settings, database, world.platform(settings)):
        again = await delivered_dm(database, alice)
    assert again.delivered_at is not None and again.delivered_at > (first.delivered_at or utcnow())
    assert [e["event_id"] for e in bot_messages(world, alice.user, dm_room)] == [
        message["event_id"]
    ]
    database.dispose()


# --- too large for one event ---------------------------------------------------------------------


async def test_a_text_grown_past_the_event_limit_is_attached_once_per_version(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str
) -> None:
    """The example letter (shown inline) gets a 70,000-character body: the post switches to the
    attached layout and the new text comes as a file; the signer's diff (too big for an event)
    comes as a preview that still says how to re-confirm, plus the whole diff as a file."""
    world = new_world(synapse, tmp_path)
    (alice,) = world.add_members(1)
    room = world.room()
    settings = world.settings(sqlite_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    body = huge_body("clause")
    assert len(body) >= 70_000

    async with running(settings, database, world.platform(settings)):
        first = await world.wait_letter_post(room)
        post = first["event_id"]
        assert (
            "attached as" not in first["content"]["body"] and "INTERPOL" in first["content"]["body"]
        )
        await sign_in(world, alice, room)

        update(database, settings, with_body(body))
        content = await latest_edit(world, alice.user, room, post, "version 2")
        new = content["m.new_content"]
        assert f"attached as {SLUG}-v2.txt" in new["body"] and "clause" not in new["body"]
        assert f"<code>{SLUG}-v2.txt</code>" in new["formatted_body"]
        assert new["msgtype"] == "m.text" and new["m.mentions"] == {}
        view = publishing.letter_view(database, slug=SLUG)
        assert view is not None and view.version == 2 and body in view.text
        attached = await wait_in(world, alice.user, room, lambda e: is_file(e, f"{SLUG}-v2.txt"))
        assert reply_target(attached) == post and attached["content"]["m.mentions"] == {}
        assert world.download(attached["content"]["url"]).decode("utf-8") == view.text + "\n"

        # The diff: a preview (with what to do) and the whole as a file, in the direct room.
        await delivered_dm(database, alice)
        dm_room = await direct_room(world, database, alice)
        preview, diff_file = bot_messages(world, alice.user, dm_room)
        shown = preview["content"]
        assert shown["msgtype"] == "m.text" and shown["m.mentions"] == {}
        assert "version 2" in shown["body"] and "too long for one message" in shown["body"]
        assert f"To re-confirm, type !sign {SLUG} before" in shown["body"], shown["body"]
        assert diff_file["content"]["msgtype"] == "m.file"
        assert diff_file["content"]["m.mentions"] == {}
        diff = world.download(diff_file["content"]["url"]).decode("utf-8")
        assert "[-Dear Ministers," in diff and "-]{+clause0 " in diff
        assert f"{body.split()[-1]}+}}" in diff
        assert f"!sign {SLUG}" in diff

        # A new count is an edit, not a new file; re-confirming in the direct room.
        reply = (await sign_in(world, alice, dm_room, f"!sign {SLUG}"))["content"]
        assert "re-confirmed" in reply["body"]
        await latest_edit(world, alice.user, room, post, "1 signature so far", "version 2")

        # A correction of the long text: its own file, once; the notice with the diff.
        update(database, settings, with_body(body.replace("clause7 ", "clause7, ", 1)), minor=True)
        await latest_edit(world, alice.user, room, post, "version 3", "1 signature so far")
        notice = await wait_in(world, alice.user, room, corrected)
        assert "[-clause7-]{+clause7,+}" in notice["content"]["body"]
        assert notice["content"]["msgtype"] == "m.text" and notice["content"]["m.mentions"] == {}
        v3 = await wait_in(world, alice.user, room, lambda e: is_file(e, f"{SLUG}-v3.txt"))
        assert "clause7, clause8" in world.download(v3["content"]["url"]).decode("utf-8")
        await sign_in(world, alice, room, f"!status {SLUG}")  # a marker: the counter had passes

    # Killed after sending version 3's edit and file, before recording it as shown: the
    # restarted bot edits again, and its file is the same event (same transaction id).
    assert shown_version(database) == 3
    set_shown_version(database, 2)
    async with running(settings, database, world.platform(settings)):
        await eventually(lambda: shown_version(database) == 3, what="the post shown again")
    events = bot_messages(world, alice.user, room)
    assert len(files_named(events, f"{SLUG}-v2.txt")) == 1
    assert len(files_named(events, f"{SLUG}-v3.txt")) == 1
    asked = [
        e["event_id"]
        for e in bot_messages(world, alice.user, dm_room)
        if e["content"]["msgtype"] != "m.notice"  # not the reply to `!sign`
    ]
    assert asked == [preview["event_id"], diff_file["event_id"]]  # the minor one asked nobody
    for event in events + bot_messages(world, alice.user, dm_room):
        assert len(json.dumps(event, ensure_ascii=False).encode("utf-8")) < MAX_EVENT_BYTES
    database.dispose()


# --- encrypted rooms -----------------------------------------------------------------------------


async def test_encrypted_rooms_the_member_decrypts_the_diff_and_the_new_text(
    synapse: SynapseServer,
    tmp_path: Path,
    sqlite_url: str,
    member_clients: list[E2EEMember],  # noqa: F811
) -> None:
    """With encryption on: the post's edit, the direct room and the message with the diff are
    encrypted and decrypt on the member's side; a new text that fits one event in the clear but
    not as sent encrypted (nio sends the JSON ASCII-escaped, then megolm and base64) is attached."""
    world = new_world(synapse, tmp_path)
    (member,) = world.add_members(1)
    room = world.room(encrypted=True)
    settings = world.settings(sqlite_url, encryption=True)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    alice = E2EEMember(synapse, member.user, tmp_path / "alice-store")
    member_clients.append(alice)
    assert isinstance(await alice.client.keys_upload(), KeysUploadResponse)

    async with running(settings, database, world.platform(settings)) as bot:
        await alice.sync(0, full_state=True)
        post = await alice.wait(is_post(SLUG), timeout=30)
        command = await alice.say(room, "!sign")
        await alice.wait(notice_replying_to(command))

        update(database, settings, CHANGED)
        edit = await alice.wait(edit_of(post.event_id, NEW_WORDS), timeout=30)
        new = edit.source["content"]["m.new_content"]
        assert edit.decrypted and "Text changed" in new["body"] and "version 2" in new["body"]
        assert new["m.mentions"] == {} and new["msgtype"] == "m.text"

        await delivered_dm(database, member)
        dm_room = recorded(database, member.user.user_id)
        assert dm_room is not None
        await alice.sync()
        await alice.client.join(dm_room)
        dm = await alice.wait(
            lambda e: isinstance(e, RoomMessageText) and "[-giving-]" in e.body, timeout=30
        )
        assert dm.decrypted and dm.source["content"]["m.mentions"] == {}
        assert "[-giving-]{+handing+} a green light" in dm.body
        assert "<del>[-giving-]</del>" in dm.source["content"]["formatted_body"]
        raw = world.server.request(
            "GET",
            f"/_matrix/client/v3/rooms/{dm_room}/event/{dm.event_id}",
            token=member.user.access_token,
        )
        assert raw["type"] == "m.room.encrypted"  # the homeserver only saw ciphertext

        command = await alice.say(dm_room, f"!sign {SLUG}")
        reply = await alice.wait(notice_replying_to(command))
        assert reply.decrypted and "re-confirmed" in reply.body
        assert counted(database) == [member.member_id]

        # Version 3 in Cyrillic: fits one event in the clear, not once encrypted.
        cyrillic = " ".join(f"Уважаемые министры {i}." for i in range(500))
        update(database, settings, with_body(cyrillic), minor=True)
        view = publishing.letter_view(database, slug=SLUG)
        assert view is not None and view.version == 3
        # The post's content as the bot measures it: in the clear it would be inline.
        assert not plain_publisher(bot, database).letter_content(view, room)[1]
        edit3 = await alice.wait(edit_of(post.event_id, "version 3"), timeout=30)
        new3 = edit3.source["content"]["m.new_content"]
        assert f"attached as {SLUG}-v3.txt" in new3["body"] and "Уважаемые" not in new3["body"]
        attached = await alice.wait(
            lambda e: isinstance(e, RoomEncryptedFile) and e.body == f"{SLUG}-v3.txt", timeout=30
        )
        assert reply_target(attached.source) == post.event_id
        assert await alice.file_text(attached) == view.text + "\n"
    database.dispose()


def plain_publisher(bot: Bot, database: Database) -> Publisher:
    """The bot's publisher measuring as for an unencrypted room: a client that knows no room
    (nothing is sent; letter_content only measures)."""
    platform = bot.platforms["matrix"]
    assert isinstance(platform, MatrixPlatform) and platform.client is not None
    blank = AsyncClient(platform.client.homeserver, platform.client.user_id)
    return Publisher(platform, database, Sender(blank, encryption=False))


# --- a minor change ------------------------------------------------------------------------------


async def test_a_minor_change_is_a_notice_with_the_diff_and_no_direct_messages(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str
) -> None:
    """A typo fix moves signatures without asking: the room is told, in an m.text that notifies
    (not a notice), with the diff; nobody gets a direct message or a direct room."""
    world = new_world(synapse, tmp_path)
    alice, bob = world.add_members(2)
    room = world.room()
    settings = world.settings(sqlite_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    async with running(settings, database, world.platform(settings)):
        post = (await world.wait_letter_post(room))["event_id"]
        await sign_in(world, alice, room)
        await sign_in(world, bob, room)

        update(database, settings, TYPO, minor=True)
        notice = await wait_in(world, bob.user, room, corrected)
        content = notice["content"]
        assert content["msgtype"] == "m.text" and content["m.mentions"] == {}
        assert (
            "[-We-]{+We,+}" in content["body"] and "nobody needs to sign again" in content["body"]
        )
        assert "<del>[-We-]</del><b>{+We,+}</b>" in content["formatted_body"]
        edited = await latest_edit(world, bob.user, room, post, "version 2", "2 signatures so far")
        assert "Text corrected" in edited["m.new_content"]["body"]
        await sign_in(world, alice, room, f"!status {SLUG}")  # the outbox had its passes
    assert counted(database) == sorted([alice.member_id, bob.member_id])
    assert dm_rows(database) == []
    assert recorded(database, alice.user.user_id) is None
    assert recorded(database, bob.user.user_id) is None
    database.dispose()


# --- escaping ------------------------------------------------------------------------------------


def highlights(world: MatrixWorld, user: RegisteredUser) -> list[Event]:
    """The user's highlighted notifications (what pings): a mention, @room, their name."""
    answer = world.server.request(
        "GET",
        "/_matrix/client/v3/notifications",
        token=user.access_token,
        query={"only": "highlight"},
    )
    return list(answer.get("notifications", []))


async def test_a_diff_with_room_mentions_and_html_shows_literally_and_pings_no_one(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str
) -> None:
    """Rule 7: the new words include ``@room``, the signer's display name and ``<script>``.
    Synapse's legacy push rules would highlight a body with ``@room`` (the bot is an admin of the
    direct rooms it makes) or the display name, unless the event carries ``"m.mentions"``."""
    world = new_world(synapse, tmp_path)
    localpart = unique_localpart("quentin")
    quentin = Member(
        localpart, synapse.register_user(localpart, displayname="Quentin"), family_name="Q"
    )
    world.members.append(quentin)
    (other,) = world.add_members(1)
    room = world.room()
    settings = world.settings(sqlite_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    hostile = "<script>alert('x')</script> @room Quentin &amp; <b>bold</b>"
    material = ORIGINAL.replace(OLD_WORDS, f"{NEW_WORDS} {hostile}", 1)
    minor = material.replace("<b>bold</b>", "<i>@room</i> Quentin", 1)

    async with running(settings, database, world.platform(settings)):
        post = (await world.wait_letter_post(room))["event_id"]
        # The direct room exists and Quentin is in it before the diff comes (push rules are
        # evaluated for members only).
        queue(database, quentin.member_id, "hello")
        await eventually(lambda: recorded(database, quentin.user.user_id), what="a direct room")
        dm_room = await direct_room(world, database, quentin)
        await sign_in(world, quentin, room)

        update(database, settings, material)
        await delivered_dm(database, quentin)
        dm = (await wait_in(world, quentin.user, dm_room, changed_words))["content"]
        assert f"[-giving-]{{+handing+}} a green light {{+{hostile} +}}to" in dm["body"], dm["body"]
        shown = dm["formatted_body"]
        assert "&lt;script&gt;alert(" in shown and "&lt;/script&gt; @room Quentin" in shown
        assert "&amp;amp; &lt;b&gt;bold&lt;/b&gt;" in shown
        assert "<script" not in shown and "<b>bold" not in shown
        edited = await latest_edit(world, other.user, room, post, "version 2", "@room Quentin")
        new = edited["m.new_content"]
        assert hostile in new["body"]
        assert "&lt;script&gt;" in new["formatted_body"] and "<script>" not in new["formatted_body"]

        update(database, settings, minor, minor=True)
        notice = (await wait_in(world, other.user, room, corrected))["content"]
        assert "[-<b>bold</b>-]{+<i>@room</i> Quentin+}" in notice["body"]
        assert "&lt;i&gt;@room&lt;/i&gt;" in notice["formatted_body"]
        assert "<i>" not in notice["formatted_body"]
        await latest_edit(world, other.user, room, post, "version 3")
        await sign_in(world, other, room, f"!status {SLUG}")

    events = bot_messages(world, other.user, room) + bot_messages(world, quentin.user, dm_room)
    assert len(events) >= 6
    for event in events:
        content = event["content"]
        assert content["m.mentions"] == {}, content
        assert content.get("m.new_content", {"m.mentions": {}})["m.mentions"] == {}, content
    for user in (quentin.user, other.user, world.owner):
        assert highlights(world, user) == []
    database.dispose()
