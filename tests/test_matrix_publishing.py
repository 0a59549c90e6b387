"""What the bot posts on Matrix by itself: letter posts, the live counter, long letters, and the
compiled letter at the deadline (uploaded as files in the announce room, a summary in member rooms).
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

from helpers import LETTER, create_example_letter
from matrix_support import Event, eventually, new_world, running
from synapse_server import SynapseServer

from bot import publishing
from bot.campaign import enqueue_reminder
from bot.db import Database
from bot.models import Letter
from bot.models._types import utcnow

MAX_EVENT = 65_536


def _edits_of(events: list[Event], event_id: str) -> list[Event]:
    return [
        e
        for e in events
        if (e["content"].get("m.relates_to") or {}).get("rel_type") == "m.replace"
        and e["content"]["m.relates_to"]["event_id"] == event_id
    ]


async def test_deadline_compiles_and_announces_with_files(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    alice, bob, carol = world.add_members(3)
    room = world.room()
    announce = synapse.create_room(world.owner.access_token, invite=[world.bot.user_id])
    synapse.join(world.bot.access_token, announce)
    settings = world.settings(db_url)
    settings.coordinators.announce = [f"matrix:{announce}"]
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(
        database, settings, post_to=[f"matrix:{room}"], deadline=utcnow() + timedelta(seconds=6)
    )
    async with running(settings, database, world.platform(settings), scheduler=True):
        post = await world.wait_letter_post(room)
        for member in (alice, bob, carol):
            await world.wait_reply(room, world.say(member.user, room, "!sign"))

        # The live counter: edits of the post (m.replace, full new content), ending on 3.
        def counted() -> list[Event]:
            edits = _edits_of(world.bot_events(room), post["event_id"])
            shown = [e["content"]["m.new_content"]["body"] for e in edits]
            return edits if shown and "3 signatures so far" in shown[-1] else []

        edits = await eventually(counted, what="the counter showing 3")
        new_content = edits[-1]["content"]["m.new_content"]
        assert new_content["formatted_body"] and new_content["m.mentions"] == {}
        assert edits[-1]["content"]["m.mentions"] == {}

        summary = await world.wait_bot_event(
            announce, lambda e: e["content"].get("msgtype") == "m.text", timeout=30
        )
        assert "3 signatures" in summary["content"]["body"]
        files = await eventually(
            lambda: (
                [e for e in world.bot_events(announce) if e["content"]["msgtype"] == "m.file"]
                if len(world.bot_events(announce)) >= 4
                else None
            ),
            what="the compiled files",
        )
        closed = await world.wait_bot_event(
            room,
            lambda e: (
                "closed" in e["content"].get("body", "") and "Thank you" in e["content"]["body"]
            ),
        )
        assert "3 signatures" in closed["content"]["body"]
        final = await eventually(
            lambda: [
                e
                for e in _edits_of(world.bot_events(room), post["event_id"])
                if "signing closed" in e["content"]["m.new_content"]["body"]
            ],
            what="the post showing closed",
        )
        assert "3 signatures" in final[-1]["content"]["m.new_content"]["body"]
        assert "!sign" not in final[-1]["content"]["m.new_content"]["body"]

    compiled = publishing.compiled(database, slug="interpol-2021")
    assert compiled is not None and compiled.count == 3
    by_name = {e["content"]["body"]: e for e in files}
    assert set(by_name) == {"interpol-2021.pdf", "interpol-2021.txt", "interpol-2021.html"}
    text = world.download(by_name["interpol-2021.txt"]["content"]["url"]).decode("utf-8")
    pdf = world.download(by_name["interpol-2021.pdf"]["content"]["url"])
    assert by_name["interpol-2021.pdf"]["content"]["info"]["mimetype"] == "application/pdf"
    # the summary witnesses the published PDF and the audit head (DESIGN.md §10)
    assert compiled.pdf_sha256 == hashlib.sha256(pdf).hexdigest()
    assert f"PDF SHA-256 {compiled.pdf_sha256}" in summary["content"]["body"]
    assert f"audit head {compiled.audit_head}" in summary["content"]["body"]
    assert text == compiled.outputs["txt"]
    assert by_name["interpol-2021.txt"]["content"]["info"]["mimetype"].startswith("text/plain")
    database.dispose()


async def test_long_letter_and_long_reply_go_out_as_files(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    world.add_members(1)
    room = world.room()
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    paragraph = "Lorem ipsum dolor sit amet, <consectetur> & adipiscing elit. " * 20
    text = LETTER.read_text(encoding="utf-8") + "\n" + "\n\n".join([paragraph] * 80)
    assert len(text.encode()) > 80_000
    create_example_letter(database, settings, post_to=[f"matrix:{room}"], text=text)
    async with running(settings, database, world.platform(settings)):
        post = await world.wait_letter_post(room)
        assert "attached as" in post["content"]["body"]
        attachment = await world.wait_bot_event(
            room, lambda e: e["content"].get("msgtype") == "m.file"
        )
        assert attachment["content"]["body"] == "interpol-2021.txt"
        downloaded = world.download(attachment["content"]["url"]).decode("utf-8")
        view = publishing.letter_post(
            database, slug="interpol-2021", platform="matrix", channel=room
        )
        assert view is not None and downloaded.rstrip("\n") == view.letter.text

        command = world.say(world.owner, room, "!cosign preview interpol-2021")
        reply = await world.wait_reply(room, command)
        assert "too long for one message" in reply["content"]["body"]
        await eventually(
            lambda: [
                e for e in world.replies_to(room, command) if e["content"]["msgtype"] == "m.file"
            ],
            what="the preview as a file",
        )
    for event in world.bot_events(room):
        assert len(json.dumps(event).encode()) < MAX_EVENT
    database.dispose()


async def test_reminder_goes_out_with_matrix_commands(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    room = world.room()
    settings = world.settings(sqlite_url)
    database = Database(settings.database.url)
    letter = create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    async with running(settings, database, world.platform(settings)):
        await world.wait_letter_post(room)
        with database.session() as session:
            stored = session.get(Letter, letter.id)
            assert stored is not None
            assert enqueue_reminder(session, letter=stored, label="1h", now=utcnow()) == 1
        reminder = await world.wait_bot_event(
            room, lambda e: e["content"].get("body", "").startswith("⏰")
        )
        content = reminder["content"]
        assert "!sign interpol-2021" in content["body"]
        assert "<code>!sign interpol-2021</code>" in content["formatted_body"]
        assert content["msgtype"] == "m.text" and content["m.mentions"] == {}
    database.dispose()


async def test_1000_signatories_stay_within_event_limits(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str
) -> None:
    from bot.campaign import close_and_announce
    from bot.models._types import utcnow
    from bot.roster import import_roster
    from bot.store import letters, members, signatures

    world = new_world(synapse, tmp_path)
    world.add_members(1)
    room = world.room()
    settings = world.settings(sqlite_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    rows = ["member_id,given_name,family_name,post_nominals,group,role"]
    rows += [f"x{i:04d},Member,Number{i:04d},MP,Group {i % 7},member" for i in range(999)]
    with database.session() as session:
        import_roster(session, data="\n".join(rows) + "\n", actor="test")
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None
        for member in members.list_members(session):
            signatures.sign(
                session,
                letter=letter,
                member=member,
                at=utcnow(),
                via_platform="matrix",
                via_external_id=member.member_id,
            )
    async with running(settings, database, world.platform(settings)):
        await world.wait_letter_post(room)
        command = world.say(world.owner, room, "!status interpol-2021")
        await world.wait_reply(room, command)
        await eventually(
            lambda: [
                e for e in world.replies_to(room, command) if e["content"]["msgtype"] == "m.file"
            ],
            what="the coordinator's status as a file",
        )
        with database.session() as session:
            letter = letters.get_letter(session, slug="interpol-2021")
            assert letter is not None
            close_and_announce(session, settings=settings, letter=letter, actor="t", now=utcnow())
        await world.wait_bot_event(room, lambda e: "closed at" in e["content"].get("body", ""))
        await eventually(
            lambda: [
                e
                for e in world.bot_events(room)
                if "1000 signatures" in e["content"].get("body", "")
            ],
            what="the post's counter at 1000",
        )
    for event in world.bot_events(room):
        assert len(json.dumps(event).encode()) < MAX_EVENT
    database.dispose()
