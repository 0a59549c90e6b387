"""Sizes from issue 5: a roster of 10,000, a 100 KB letter body, 1,000 signatories on Slack."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from fakeslack import slash_command_body
from helpers import LETTER
from slack_support import SlackHarness, burst_roster, reply_text

from bot.compile import render_letter
from bot.db import Database
from bot.letterfile import parse_letter
from bot.models._types import utcnow
from bot.roster import export_roster, import_roster
from bot.store import letters, members, signatures


def test_roster_of_10000_imports_exports_and_reimports_unchanged(database: Database) -> None:
    rows = ["member_id,title,given_name,family_name,post_nominals,group,slack_id,matrix_id,role"]
    for i in range(10_000):
        rows.append(
            f"m{i:05d},,Given{i},Família{i},MP,Country {i % 40},U{i:06d}X,@m{i}:example.org,member"
        )
    data = "\n".join(rows) + "\n"
    with database.session() as session:
        result = import_roster(session, data=data, actor="test")
    assert result.created == 10_000 and len(result.linked) == 20_000
    with database.session() as session:
        exported = export_roster(session)
        assert len(members.list_members(session)) == 10_000
    with database.session() as session:
        again = import_roster(session, data=exported, actor="test")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 10_000)
    with database.session() as session:
        assert export_roster(session) == exported
        member = members.member_for_account(
            session, platform="matrix", external_id="@9999:example.org".replace("@", "@m")
        )
        assert member is not None and member.member_id == "m09999"


def test_100kb_body_compiles_whole(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    paragraph = "A sentence that the letter repeats to reach one hundred kilobytes. " * 30
    text = LETTER.read_text(encoding="utf-8") + ("\n\n" + paragraph) * 50
    source = parse_letter(text, zone=settings.letters.zone, now=utcnow())
    assert len(source.body.encode()) > 100_000
    with database.session() as session:
        letter = letters.create_letter(
            session, source=source, deadline=utcnow() + timedelta(days=1), actor="t"
        )
        assert letter is not None
        compiled = render_letter(letters.letter_text(letter), [], "txt")
        html = render_letter(letters.letter_text(letter), [], "html")
    assert compiled.count("A sentence that the letter repeats") == 30 * 50
    assert html.count("A sentence that the letter repeats") == 30 * 50


async def test_1000_signatories_on_slack_stay_within_limits(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path, roster=burst_roster(1000)) as h:
        now = utcnow()
        source = parse_letter(
            LETTER.read_text(encoding="utf-8"), zone=h.settings.letters.zone, now=now
        )
        from bot.campaign import Target, close_and_announce, post_letter

        with h.database.session() as session:
            letter = letters.create_letter(
                session, source=source, deadline=now + timedelta(days=1), actor="t"
            )
            assert letter is not None
            post_letter(
                session,
                settings=h.settings,
                letter=letter,
                targets=[Target("slack", "C1")],
                actor="t",
                now=now,
            )
            for member in members.list_members(session):
                signatures.sign(
                    session,
                    letter=letter,
                    member=member,
                    at=now,
                    via_platform="slack",
                    via_external_id="x",
                )
        await h.settle()
        h.fake.add_user("UADMIN", "admin")
        await h.post(
            slash_command_body(
                "/status", "interpol-2021", "UADMIN", response_url=h.fake.response_url("st")
            )
        )
        (reply,) = await h.replies("st")
        assert "sent it to you as a file" in reply_text(reply)
        (status_file,) = [f for f in h.fake.files.values() if "status" in f.filename]
        content = status_file.content.decode()
        assert "1000 signatures" in content and "Member Number999 MP (Group 5)" in content
        with h.database.session() as session:
            letter = letters.get_letter(session, slug="interpol-2021")
            assert letter is not None
            close_and_announce(session, settings=h.settings, letter=letter, actor="t", now=utcnow())
        await h.settle()
        compiled = [f for f in h.fake.files.values() if f.filename == "interpol-2021.txt"]
        assert len(compiled) == 1
        assert compiled[0].content.decode().count("Member Number") == 1000
        message = h.fake.messages_in("C1")[0]
        assert "1000 signatures" in json.dumps(message["blocks"])
        assert all(c.ok for c in h.fake.calls if c.method not in ("response_url",))
