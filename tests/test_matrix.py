"""The Matrix adapter against a real Synapse: commands, replies and their format, escaping.

Each test registers fresh accounts on the shared homeserver, starts the bot in-process on its own
database, and talks to it through the client-server API like any Matrix client would.
"""

from __future__ import annotations

from pathlib import Path

from helpers import create_example_letter
from matrix_support import eventually, new_world, reply_target, running
from sqlmodel import Session, select
from synapse_server import SynapseServer

from bot.db import Database
from bot.models import Letter, Member, PendingRequest, Signature


def letter_slug(session: Session, pk: int) -> str:
    letter = session.get(Letter, pk)
    assert letter is not None
    return letter.slug


def member_slug(session: Session, pk: int) -> str:
    member = session.get(Member, pk)
    assert member is not None
    return member.member_id


def _signatures(database: Database) -> list[Signature]:
    with database.session() as session:
        return list(session.exec(select(Signature)).all())


async def test_signing_from_several_users_and_reply_format(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    alice, bob, carol = world.add_members(3)
    room = world.room()
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    platform = world.platform(settings)
    async with running(settings, database, platform):
        post = await world.wait_letter_post(room)
        assert "INTERPOL" in post["content"]["body"]
        assert post["content"]["msgtype"] == "m.text"  # posts notify (rule 10)
        assert post["content"]["m.mentions"] == {}

        latencies = []
        for member, text in ((alice, "!sign"), (bob, "!sign interpol-2021"), (carol, "/sign")):
            command = world.say(member.user, room, text)
            reply = await world.wait_reply(room, command)
            sent = world.event(room, command)
            latencies.append(reply["origin_server_ts"] - sent["origin_server_ts"])
            content = reply["content"]
            assert content["msgtype"] == "m.notice"
            assert content["format"] == "org.matrix.custom.html"
            assert content["m.mentions"] == {}
            assert "signed" in content["body"] and "INTERPOL" in content["body"]
            assert "<b>" in content["formatted_body"]
            assert reply_target(reply) == command
        print(f"\ncommand-to-reply (server timestamps): {latencies} ms")

        again = world.say(alice.user, room, "!sign")
        reply = await world.wait_reply(room, again)
        assert "already signed" in reply["content"]["body"]

        status = world.say(bob.user, room, "!status")
        reply = await world.wait_reply(room, status)
        assert "3 signatures" in reply["content"]["body"]

        letters = world.say(bob.user, room, "!letters")
        reply = await world.wait_reply(room, letters)
        assert "interpol-2021" in reply["content"]["body"]

        unsign = world.say(carol.user, room, "!unsign")
        reply = await world.wait_reply(room, unsign)
        assert "withdrawn" in reply["content"]["body"]

    active = [s for s in _signatures(database) if s.withdrawn_at is None]
    assert len(active) == 2
    assert {s.via_platform for s in active} == {"matrix"}
    database.dispose()


async def test_replies_threads_fallbacks_edits_and_notices(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    alice, bob, carol, dave = world.add_members(4)
    room = world.room()
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    second = (Path(__file__).parent.parent / "examples" / "interpol-2021.md").read_text()
    second = second.replace('slug = "interpol-2021"', 'slug = "second-letter"')
    create_example_letter(database, settings, post_to=[f"matrix:{room}"], text=second)

    def letter_posts() -> dict[str, dict[str, object]] | None:
        found = {}
        for event in world.bot_events(room):
            body = event["content"].get("body", "")
            if body.startswith("📜") and "m.new_content" not in event["content"]:
                found["second-letter" if "(second-letter)" in body else "interpol-2021"] = event
        return found if len(found) == 2 else None

    async with running(settings, database, world.platform(settings)):
        by_slug = await eventually(letter_posts, what="two letter posts")

        # Two letters open here: a bare !sign is ambiguous ...
        bare = world.say(alice.user, room, "!sign")
        reply = await world.wait_reply(room, bare)
        assert "Several letters" in reply["content"]["body"]

        # ... but in the thread of a letter's post it is not, and the reply stays in the thread.
        root = by_slug["second-letter"]["event_id"]
        threaded = world.say(
            alice.user,
            room,
            "!sign",
            extra={
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": root},
                }
            },
        )
        reply = await world.wait_reply(room, threaded)
        rel = reply["content"]["m.relates_to"]
        assert rel["rel_type"] == "m.thread" and rel["event_id"] == root
        assert "signed" in reply["content"]["body"]

        # A reply (with its fallback quote) to the other post signs that one.
        other = by_slug["interpol-2021"]["event_id"]
        quoted = world.say(
            bob.user,
            room,
            f"> <{world.bot.user_id}> 📜 Interpol …\n> more quoted text\n\n!sign",
            extra={
                "format": "org.matrix.custom.html",
                "formatted_body": "<mx-reply><blockquote>📜 !unsign</blockquote></mx-reply>!sign",
                "m.relates_to": {"m.in_reply_to": {"event_id": other}},
            },
        )
        reply = await world.wait_reply(room, quoted)
        assert "signed" in reply["content"]["body"]
        assert "m.thread" not in str(reply["content"]["m.relates_to"])

        # An edit is never a command; a notice neither; nor is ordinary chat.
        edit = world.say(
            carol.user,
            room,
            "* !sign",
            extra={
                "m.new_content": {"msgtype": "m.text", "body": "!sign interpol-2021"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": bare},
            },
        )
        notice = world.say(carol.user, room, "!sign interpol-2021", msgtype="m.notice")
        chat = world.say(carol.user, room, "I will sign later")
        marker = world.say(dave.user, room, "!status interpol-2021")
        await world.wait_reply(room, marker)
        for ignored in (edit, notice, chat):
            assert world.replies_to(room, ignored) == []

    with database.session() as session:
        signers = {
            (letter_slug(session, s.letter_pk), member_slug(session, s.member_pk))
            for s in session.exec(select(Signature)).all()
        }
    assert signers == {("second-letter", alice.member_id), ("interpol-2021", bob.member_id)}
    database.dispose()


async def test_hostile_display_name_and_roster_name(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    (evil_member,) = world.add_members(1)
    evil_member.display_name = '<img src=x onerror=alert(1)> @room <b>Boss</b> & "co"'
    room = world.room()
    hostile = '<script>alert(1)</script> @room <a href="https://evil">x</a>'
    stranger = synapse.register_user("stranger-" + world.bot.localpart, displayname=hostile)
    synapse.invite(world.owner.access_token, room, stranger.user_id)
    synapse.join(stranger.access_token, room)
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    async with running(settings, database, world.platform(settings)):
        await world.wait_letter_post(room)

        signed = world.say(evil_member.user, room, "!sign")
        reply = await world.wait_reply(room, signed)
        content = reply["content"]
        assert evil_member.display_name in content["body"]  # plain text shows it literally
        html_body = content["formatted_body"]
        assert "<img" not in html_body and "<b>Boss" not in html_body
        assert "&lt;img src=x onerror=alert(1)&gt;" in html_body
        assert content["m.mentions"] == {}

        unknown = world.say(stranger, room, "!sign")
        reply = await world.wait_reply(room, unknown)
        assert "could not match" in reply["content"]["body"]

        pending = world.say(world.owner, room, "!cosign pending")
        reply = await world.wait_reply(room, pending)
        content = reply["content"]
        assert hostile in content["body"]
        assert "<script>" not in content["formatted_body"]
        assert "&lt;script&gt;" in content["formatted_body"]
        assert "<a " not in content["formatted_body"]
        assert content["m.mentions"] == {}

    with database.session() as session:
        requests = session.exec(select(PendingRequest)).all()
        assert [r.display_name for r in requests] == [hostile]
    database.dispose()


async def test_spoofed_display_name_signs_as_nobody(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    """Identity is the Matrix user id: copying a member's display name or id changes nothing."""
    world = new_world(synapse, tmp_path)
    (member,) = world.add_members(1)
    member.display_name = "Senator Real Member"
    room = world.room()
    spoofer = synapse.register_user("spoof-" + world.bot.localpart, displayname=member.user.user_id)
    synapse.invite(world.owner.access_token, room, spoofer.user_id)
    synapse.join(spoofer.access_token, room)
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    async with running(settings, database, world.platform(settings)):
        await world.wait_letter_post(room)
        attempt = world.say(spoofer, room, "!sign")
        reply = await world.wait_reply(room, attempt)
        assert "could not match" in reply["content"]["body"]
        synapse.request(
            "PUT",
            f"/_matrix/client/v3/profile/{spoofer.user_id}/displayname",
            token=spoofer.access_token,
            body={"displayname": "Senator Real Member"},
        )
        again = world.say(spoofer, room, "!sign")
        reply = await world.wait_reply(room, again)
        assert "could not match" in reply["content"]["body"]
    with database.session() as session:
        assert session.exec(select(Signature)).all() == []
    database.dispose()
