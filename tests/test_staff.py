"""Staff who sign for their members (DESIGN.md §8) on the console: `sign … for`, proxy modes
direct and confirm, coordinators' confirm and void, status --json, the roster's acts_for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ConsoleHarness, make_settings
from helpers import LETTER, create_example_letter
from typer.testing import CliRunner, Result

from bot.campaign import enqueue_dm_reminders
from bot.cli import app
from bot.config import Settings
from bot.db import Database
from bot.models._types import utcnow
from bot.roster import RosterError, export_roster, import_roster, parse_roster
from bot.store import audit, letters, members, signatures

HEADER = (
    "member_id,title,given_name,family_name,post_nominals,group,display_name,email,"
    "slack_id,matrix_id,role,acts_for\n"
)
ROSTER = HEADER + (
    "au-abetz,Senator,Eric,Abetz,,Australia,,,,,member,\n"
    "au-andrews,,Kevin,Andrews,MP,Australia,,,,,member,\n"
    "uk-alton,Lord,(David),Alton,,United Kingdom,,,,,member,\n"
    "abetz-office,,Jane,Doe,,,,,,,staff,au-abetz\n"
    "chief,,Sam,Chief,,,,,,,staff,au-abetz;au-andrews\n"
)
TITLE = "Candidacy of Hu Binchen"


def setup(database: Database, settings: Settings, *, proxy: str = "") -> None:
    with database.session() as session:
        import_roster(session, data=ROSTER, actor="test")
    text = LETTER.read_text(encoding="utf-8")
    if proxy:
        text = text.replace("+++\n", f'+++\nproxy = "{proxy}"\n', 1)
    create_example_letter(database, settings, post_to=["console:#general"], text=text)


def counted(database: Database) -> list[str]:
    """member_ids whose signature counts (what compiles)."""
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None and letter.id is not None
        return sorted(s.member_id for s in signatures.signatories(session, letter_pk=letter.id))


def dms(output: str, user: str) -> list[str]:
    return re.findall(rf"^\[dm @{re.escape(user)}\] (.*)$", output, re.MULTILINE)


def private(output: str, user: str) -> str:
    found = re.findall(rf"^\[private @{re.escape(user)}\] (.*)$", output, re.MULTILINE)
    assert len(found) == 1, output
    return found[0]


def events(database: Database, action: str) -> list[tuple[str, str | None, dict[str, object]]]:
    with database.session() as session:
        return [
            (e.actor, e.member_id, e.detail)
            for e in audit.list_events(session, letter_slug="interpol-2021")
            if e.action == action
        ]


def cli(settings: Settings, tmp_path: Path, *args: str) -> Result:
    """`cosign ARGS…` on this test's database."""
    config = tmp_path / "bot.toml"
    config.write_text(f'[database]\nurl = "{settings.database.url}"\n', encoding="utf-8")
    return CliRunner().invoke(app, ["--config", str(config), *args])


# --- signing for a member --------------------------------------------------------------------


async def test_staff_of_one_member_signs_without_for_and_the_member_is_told(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    setup(database, settings)
    async with console_harness as h:
        await h.send("as abetz-office")
        out = await h.send("!sign interpol-2021")
        reply = private(out, "abetz-office")
        assert reply.startswith("✅ You signed “") and TITLE in reply
        assert "for Senator Eric Abetz (Australia) as their staff" in reply
        assert counted(database) == ["au-abetz"]  # direct (the default): counted at once
        (told,) = dms(out, "au-abetz")
        assert told.startswith("Jane Doe (staff) signed “") and "for Senator Eric Abetz on" in told
        assert "To withdraw it, type !unsign interpol-2021" in told
        # the member and their staff never sign twice
        await h.send("as au-abetz")
        again = private(await h.send("!sign interpol-2021"), "au-abetz")
        assert "already signed" in again and "signed by their staff, Jane Doe" in again
        assert counted(database) == ["au-abetz"]
    ((actor, member, detail),) = events(database, "signature.added")
    assert actor == "console:abetz-office" and member == "au-abetz"
    assert detail["staff"] == "abetz-office" and detail["principal"] == "au-abetz"
    assert detail["proxy"] == "direct"


async def test_staff_of_several_members_name_one_and_get_the_list_otherwise(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    setup(database, settings)
    async with console_harness as h:
        await h.send("as chief")
        usage = private(await h.send("!sign interpol-2021"), "chief")
        assert usage.startswith("Usage: !sign [SLUG] for MEMBER_ID")
        assert "au-abetz (Senator Eric Abetz (Australia))" in usage
        assert "au-andrews (Kevin Andrews MP (Australia))" in usage
        assert counted(database) == []
        out = await h.send("!sign interpol-2021 for au-andrews")
        assert "for Kevin Andrews MP (Australia) as their staff" in private(out, "chief")
        assert counted(database) == ["au-andrews"]
        refused = private(await h.send("!sign interpol-2021 for uk-alton"), "chief")
        assert refused.startswith("You do not act for 'uk-alton'")
        # withdrawing for a member: theirs is gone, and they are told
        out = await h.send("!unsign for au-andrews")
        assert "The signature of Kevin Andrews MP (Australia)" in private(out, "chief")
        assert counted(database) == []
        (told,) = dms(out, "au-andrews")
        assert told.startswith("Sam Chief (staff) withdrew the signature of Kevin Andrews MP")
        nothing = private(await h.send("!unsign for au-andrews"), "chief")
        assert "has not signed" in nothing


async def test_nobody_else_signs_for_someone(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    setup(database, settings)
    async with console_harness as h:
        await h.send("as uk-alton")
        refused = private(await h.send("!sign interpol-2021 for au-abetz"), "uk-alton")
        assert refused.startswith("You can only sign for yourself")
        await h.send("as coordinator")
        out = await h.send("!sign interpol-2021 for au-abetz")
        assert "You signed" not in out
        await h.send("as abetz-office")
        refused = private(await h.send("!sign interpol-2021 for au-andrews"), "abetz-office")
        assert refused.startswith("You do not act for 'au-andrews'; you act for: au-abetz")
        stray = private(await h.send("!sign for"), "abetz-office")
        assert stray.startswith("Usage: sign [SLUG] [for MEMBER_ID]")
    assert counted(database) == []


# --- proxy mode confirm ----------------------------------------------------------------------


async def test_confirm_mode_awaits_the_member_who_confirms_by_signing(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    setup(database, settings, proxy="confirm")
    async with console_harness as h:
        await h.send("as abetz-office")
        out = await h.send("!sign interpol-2021")
        reply = private(out, "abetz-office")
        assert reply.startswith("Recorded: you signed “") and "awaits their confirmation" in reply
        (asked,) = dms(out, "au-abetz")
        assert "It does not count until Senator Eric Abetz confirms it" in asked
        assert "type !sign interpol-2021 to confirm" in asked
        assert counted(database) == []  # not counted, not compiled
        await h.send("as coordinator")
        status = await h.send("!status interpol-2021")
        assert "0 signatures" in status and "Senator Eric Abetz" in status  # still not signed
        await h.send("as au-abetz")
        mine = private(await h.send("!sign interpol-2021"), "au-abetz")
        assert mine.startswith("✅ Confirmed: you signed “")
        assert "the signature Jane Doe recorded for you on" in mine and "now counts" in mine
        assert counted(database) == ["au-abetz"]
    ((actor, member, detail),) = events(database, "signature.confirmed")
    assert actor == "console:au-abetz" and member == "au-abetz"
    assert detail == {"by": "member", "staff": "abetz-office", "principal": "au-abetz"}


async def test_unconfirmed_proxy_signatures_never_compile(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    confirm = make_settings(settings.database.url, tmp_path, letters={"proxy": "confirm"})
    setup(database, confirm)  # the mode from [letters].proxy
    harness = ConsoleHarness(confirm, database)
    async with harness as h:
        await h.send("as chief", "!sign interpol-2021 for au-andrews")
        await h.send("as uk-alton", "!sign interpol-2021")
        await h.send("as coordinator")
        closed = await h.send("!cosign close interpol-2021")
        assert "1 signature" in closed
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None and letter.id is not None
        compilation = letters.get_compilation(session, letter_pk=letter.id)
        assert compilation is not None and compilation.signatory_count == 1
    assert "Lord (David) Alton (United Kingdom)" in compilation.outputs["txt"]
    assert "Andrews" not in compilation.outputs["txt"].split("Sincerely,")[1]


async def test_coordinator_confirms_and_confirm_in_direct_mode_is_refused(
    console_harness: ConsoleHarness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    setup(database, settings, proxy="confirm")
    async with console_harness as h:
        await h.send("as chief", "!sign interpol-2021 for au-andrews")
        await h.send("as au-andrews")
        refused = private(await h.send("!cosign confirm interpol-2021 au-andrews"), "au-andrews")
        assert refused == "Only coordinators can do that."
        await h.send("as coordinator")
        nothing = private(await h.send("!cosign confirm interpol-2021 au-abetz"), "coordinator")
        assert nothing == "au-abetz has no signature awaiting confirmation on interpol-2021"
        out = await h.send("!cosign confirm interpol-2021 au-andrews")
        assert private(out, "coordinator").startswith(
            "Confirmed: the signature Sam Chief recorded for Kevin Andrews MP (Australia)"
        )
        assert counted(database) == ["au-andrews"]
        (told,) = dms(out, "au-andrews")
        assert told.startswith("A coordinator confirmed the signature Sam Chief (staff)")
    ((actor, member, detail),) = events(database, "signature.confirmed")
    assert actor == "console:coordinator" and member == "au-andrews"
    assert detail == {"by": "coordinator", "staff": "chief", "principal": "au-andrews"}
    # in direct mode there is nothing to confirm
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None
        letter.proxy = "direct"
        session.add(letter)
    result = cli(settings, tmp_path, "letter", "confirm", "interpol-2021", "au-andrews")
    assert result.exit_code == 1
    assert "is in direct proxy mode" in result.output


async def test_status_json_names_who_signed_for_whom_and_who_is_awaited(
    console_harness: ConsoleHarness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    setup(database, settings, proxy="confirm")
    async with console_harness as h:
        await h.send("as chief", "!sign interpol-2021 for au-andrews")
        await h.send("!sign interpol-2021 for au-abetz")
        await h.send("as uk-alton", "!sign interpol-2021")
        await h.send("as coordinator", "!cosign confirm interpol-2021 au-abetz")
    result = cli(settings, tmp_path, "status", "interpol-2021", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["signatures"] == 2
    by = {s["member_id"]: s["signed_by"] for s in data["signatories"]}
    assert by == {"au-abetz": "chief", "uk-alton": None}
    assert data["awaiting_member"] == ["au-andrews"]


# --- void ------------------------------------------------------------------------------------


async def test_void_removes_a_signature_in_error_and_tells_member_and_staff(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    setup(database, settings)
    async with console_harness as h:
        await h.send("as chief", "!sign interpol-2021 for au-abetz")
        await h.send("as coordinator")
        usage = private(await h.send("!cosign void interpol-2021 au-abetz"), "coordinator")
        assert usage == "Usage: cosign void SLUG MEMBER_ID REASON…"
        out = await h.send("!cosign void interpol-2021 au-abetz wrong office signed")
        reply = private(out, "coordinator")
        assert reply.startswith("Voided: the signature of Senator Eric Abetz (Australia)")
        assert "(reason: wrong office signed)" in reply
        assert counted(database) == []
        (member_dm,) = dms(out, "au-abetz")
        (staff_dm,) = dms(out, "chief")
        for text in (member_dm, staff_dm):
            assert text.startswith("A coordinator removed the signature of Senator Eric Abetz")
            assert "recorded in error (wrong office signed)" in text
        refused = private(await h.send("!cosign void interpol-2021 au-abetz again"), "coordinator")
        assert refused == "au-abetz has not signed interpol-2021: there is no signature to void"
        # not a withdrawal: reminders for those who have neither signed nor withdrawn reach them
        with database.session() as session:
            letter = letters.get_letter(session, slug="interpol-2021")
            assert letter is not None
            enqueue_dm_reminders(session, letter=letter, label="1h", now=utcnow())
        reminded = await h.send()
        assert len(dms(reminded, "au-abetz")) == 1 and "interpol-2021" in reminded
        # and they can still sign
        await h.send("as au-abetz")
        assert private(await h.send("!sign interpol-2021"), "au-abetz").startswith("✅ You signed")
    ((actor, member, detail),) = events(database, "signature.voided")
    assert actor == "console:coordinator" and member == "au-abetz"
    assert detail["reason"] == "wrong office signed" and detail["staff"] == "chief"
    assert events(database, "signature.withdrawn") == []


def test_cli_void_needs_a_signature_and_a_reason(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    setup(database, settings)
    base = ["letter", "void", "interpol-2021", "uk-alton"]
    result = cli(settings, tmp_path, *base, "--reason", "duplicate")
    assert result.exit_code == 1 and "uk-alton has not signed interpol-2021" in result.output
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        member = members.get_member(session, member_id="uk-alton")
        assert letter is not None and member is not None
        signatures.sign(
            session,
            letter=letter,
            member=member,
            at=utcnow(),
            via_platform="console",
            via_external_id="uk-alton",
        )
    assert cli(settings, tmp_path, *base).exit_code == 2  # --reason is required
    result = cli(settings, tmp_path, *base, "--reason", "signed the wrong letter")
    assert result.exit_code == 0, result.output
    assert counted(database) == []
    ((actor, member_id, detail),) = events(database, "signature.voided")
    assert actor == "cli" and detail["reason"] == "signed the wrong letter"


# --- roster ----------------------------------------------------------------------------------


def test_roster_refuses_bad_staff_rows_with_their_line_numbers() -> None:
    bad = HEADER + (
        "au-abetz,Senator,Eric,Abetz,,Australia,,,,,member,\n"  # 2
        "office,,Jane,Doe,,,,,,,staff,au-abetz;nobody\n"  # 3: unknown member_id
        "lonely,,Lone,Staff,,,,,,,staff,\n"  # 4: acts for nobody
        "au-andrews,,Kevin,Andrews,MP,Australia,,,,,member,au-abetz\n"  # 5: not staff
        ",,,,,,,,,,staff,au-abetz\n"  # 6: no member_id, no name
        "boss,,Big,Boss,,,,,,,coordinator,\n"  # 7
        "office2,,Jo,Bloggs,,,,,,,staff,boss\n"  # 8: a coordinator is not a member
    )
    with pytest.raises(RosterError) as refused:
        parse_roster(bad)
    problems = refused.value.problems
    assert "line 3: acts_for names unknown member_id 'nobody'" in problems
    assert any(p.startswith("line 4: staff need acts_for") for p in problems)
    assert any(p.startswith("line 5: acts_for is only for staff") for p in problems)
    assert any(p.startswith("line 6: staff need a name") for p in problems)
    assert any(p.startswith("line 8: acts_for names 'boss', a coordinator") for p in problems)
    assert not any(p.startswith(("line 2", "line 7")) for p in problems)


def test_roster_acts_for_may_name_members_already_imported(database: Database) -> None:
    with database.session() as session:
        import_roster(session, data=ROSTER, actor="test")
        result = import_roster(
            session, data=HEADER + "new-office,,Ann,Aide,,,,,,,staff,uk-alton\n", actor="test"
        )
    assert result.created == 1


def test_roster_export_round_trips_staff(database: Database) -> None:
    with database.session() as session:
        import_roster(session, data=ROSTER, actor="test")
        exported = export_roster(session)
    assert exported.splitlines()[0].endswith(",role,acts_for")
    assert "chief,,Sam,Chief,,,,,,,staff,au-abetz;au-andrews" in exported
    with database.session() as session:
        again = import_roster(session, data=exported, actor="test")
        assert (again.created, again.updated, again.unchanged) == (0, 0, 5)
        assert export_roster(session) == exported
    moved = exported.replace("staff,au-abetz;au-andrews", "staff,uk-alton")
    with database.session() as session:
        changed = import_roster(session, data=moved, actor="test")
        assert changed.updated == 1
        assert "chief,,Sam,Chief,,,,,,,staff,uk-alton" in export_roster(session)
