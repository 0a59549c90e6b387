"""Campaigns as offices run them (DESIGN.md §8, issue 12 points 3–7), on the console: leads
printed first, what members see (visibility), the embargo, reminders by direct message and the
notice when a deadline moves."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import ConsoleHarness, make_settings
from helpers import EXPECTED, LETTER, ROSTER, create_example_letter, import_example_roster
from sqlmodel import select
from typer.testing import CliRunner

from bot.campaign import close_and_announce
from bot.cli import app
from bot.config import Settings
from bot.db import Database
from bot.letterfile import LetterFileError, parse_letter
from bot.models import AuditEvent, Letter, OutboxMessage
from bot.models._types import utcnow
from bot.platforms.slack.blocks import counter_line
from bot.publishing import letter_view
from bot.runtime import Bot
from bot.store import letters, members, signatures
from bot.timeutil import format_utc, iso_utc

SLUG = "interpol-2021"
ALTON = "Lord (David) Alton (United Kingdom)"
ABETZ = "Senator Eric Abetz (Australia)"
RUBIO = "Senator Marco Rubio (United States)"


def letter_with(**keys: object) -> str:
    """The example letter with extra front-matter keys (TOML values written by json.dumps)."""
    lines = LETTER.read_text(encoding="utf-8").split("\n")
    extra = [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return "\n".join([lines[0], *extra, *lines[1:]])


def sign(database: Database, *member_ids: str, withdraw: bool = False) -> None:
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None
        for member_id in member_ids:
            member = members.get_member(session, member_id=member_id)
            assert member is not None
            if withdraw:
                signatures.withdraw(session, letter=letter, member=member, at=utcnow())
            else:
                signatures.sign(
                    session,
                    letter=letter,
                    member=member,
                    at=utcnow(),
                    via_platform="console",
                    via_external_id=member_id,
                )


def sign_all_but(database: Database, *left_out: str) -> None:
    with database.session() as session:
        everyone = [m.member_id for m in members.list_members(session) if m.role == "member"]
    sign(database, *[m for m in everyone if m not in left_out])


def close(database: Database, settings: Settings) -> None:
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None
        assert close_and_announce(
            session, settings=settings, letter=letter, actor="test", now=utcnow()
        )


def compiled_outputs(database: Database) -> tuple[dict[str, str], dict[str, bytes]]:
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None and letter.id is not None
        compilation = letters.get_compilation(session, letter_pk=letter.id)
        assert compilation is not None and compilation.id is not None
        files = letters.compiled_files(session, compilation_pk=compilation.id)
        return dict(compilation.outputs), files


def lines_of(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


async def tick(h: ConsoleHarness, now: datetime) -> str:
    """One scheduler pass at `now`, then what the console printed because of it."""
    await asyncio.to_thread(h.bot.scheduler.tick, now)
    return await h.send()


# --- leads -------------------------------------------------------------------------------------


def test_signed_leads_come_first_in_every_format(database: Database, settings: Settings) -> None:
    import_example_roster(database)
    text = letter_with(leads=["uk-alton", "au-abetz", "us-rubio"])
    create_example_letter(database, settings, text=text, post_to=["console:#members"])
    sign_all_but(database, "us-rubio")  # a lead who did not sign
    close(database, settings)
    outputs, files = compiled_outputs(database)

    # txt: the golden with the two signed leads moved to a block of their own, first.
    golden = EXPECTED.read_text(encoding="utf-8")
    head, _, block = golden.partition("MEMBERS OF THE INTER-PARLIAMENTARY ALLIANCE ON CHINA\n")
    groups = [
        [line for line in group.split("\n") if line not in (ALTON, ABETZ, RUBIO)]
        for group in block.strip("\n").split("\n\n")
    ]
    rest = "\n\n".join("\n".join(group) for group in groups if group)
    expected = (
        f"{head}MEMBERS OF THE INTER-PARLIAMENTARY ALLIANCE ON CHINA\n\n"
        f"{ALTON}\n{ABETZ}\n\n{rest}\n"
    )
    assert outputs["txt"] == expected
    for fmt in ("txt", "md", "html", "csv", "json"):
        assert outputs[fmt].count("Alton") == 1, fmt  # leads are not repeated in their group
        assert "Rubio" not in outputs[fmt], fmt  # an unsigned lead is not printed

    assert f"{ALTON}\\\n{ABETZ}\n\n" in outputs["md"]
    first_list = outputs["html"].split('<ul class="signatories group">')[1].split("</ul>")[0]
    assert re.findall(r"<li>(.*?)</li>", first_list) == [ALTON, ABETZ]

    document = json.loads(outputs["json"])
    assert [s["member_id"] for s in document["leads"]] == ["uk-alton", "au-abetz"]
    assert document["leads"][0]["group"] == "United Kingdom"
    assert document["signatures"] == 46
    in_groups = [s["member_id"] for g in document["groups"] for s in g["signatories"]]
    assert "uk-alton" not in in_groups and len(in_groups) == 44

    rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    assert [(r["member_id"], r["group"]) for r in rows[:3]] == [
        ("uk-alton", "United Kingdom"),
        ("au-abetz", "Australia"),
        ("au-andrews", "Australia"),
    ]
    assert len(rows) == 46

    from docx import Document
    from pypdf import PdfReader

    pdf_text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(files["pdf"])).pages)
    assert pdf_text.index("Alton") < pdf_text.index("Abetz") < pdf_text.index("Kevin Andrews")
    assert "Rubio" not in pdf_text
    paragraphs = [p.text for p in Document(io.BytesIO(files["docx"])).paragraphs]
    start = paragraphs.index(ALTON)
    assert paragraphs[start : start + 3] == [ALTON, ABETZ, "Kevin Andrews MP (Australia)"]


def test_without_leads_the_text_is_the_golden(database: Database, settings: Settings) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, text=letter_with(leads=[]), post_to=[])
    sign_all_but(database)
    close(database, settings)
    outputs, _ = compiled_outputs(database)
    assert outputs["txt"] == EXPECTED.read_text(encoding="utf-8")
    assert json.loads(outputs["json"])["leads"] == []


async def test_an_unsigned_lead_is_named_to_coordinators(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    text = letter_with(leads=["uk-alton", "us-rubio"])
    create_example_letter(database, settings, text=text, post_to=["console:#members"])
    async with console_harness as h:
        await h.send("in #members", "as uk-alton", "!sign", "as au-abetz", "!sign")
        member = await h.send("!status")
        assert "Leads" not in member and "Rubio" not in member
        coordinator = await h.send("as coordinator", f"!status {SLUG}")
        assert f"Leads who have not signed, so not printed (1): {RUBIO}" in coordinator
        closed = await h.send(f"!cosign close {SLUG}")
        note = lines_of(closed, "[#secretariat]")
        assert any(f"did not sign and is not printed: {RUBIO}" in line for line in note), closed
        assert not any("Rubio" in line for line in lines_of(closed, "[#members]"))


class Cli:
    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.env = {
            "COSIGN_DATABASE__URL": db_url,
            "COSIGN_LETTERS__OUTPUT_DIR": str(tmp_path / "out"),
            "COSIGN_COORDINATORS__ANNOUNCE": '["console:#secretariat"]',
        }
        self.config = tmp_path / "bot.toml"
        self.config.write_text("", encoding="utf-8")
        self.tmp = tmp_path

    def __call__(self, *args: str, code: int = 0):  # type: ignore[no-untyped-def]
        result = CliRunner().invoke(app, ["--config", str(self.config), *args], env=self.env)
        assert result.exit_code == code, (args, result.output, result.stderr)
        assert "Traceback" not in result.output + result.stderr
        return result

    def letter_file(self, text: str) -> str:
        path = self.tmp / "letter.md"
        path.write_text(text, encoding="utf-8")
        return str(path)


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    return Cli(db_url, tmp_path)


def test_a_lead_not_on_the_roster_is_refused(cli: Cli) -> None:
    cli("roster", "import", str(ROSTER))
    bad = cli.letter_file(letter_with(leads=["uk-alton", "xx-nobody"]))
    refused = cli("letter", "create", bad, "--deadline", "+3d", code=1)
    assert refused.stderr.strip() == "cosign: front matter: leads: 'xx-nobody' is not on the roster"
    assert "(none)" in cli("letter", "list").stdout  # nothing half-made
    coordinator = cli.letter_file(letter_with(leads=["coordinator"]))
    assert (
        "'coordinator' cannot sign"
        in cli("letter", "create", coordinator, "--deadline", "+3d", code=1).stderr
    )

    good = cli.letter_file(letter_with(leads=["uk-alton"]))
    cli("letter", "create", good, "--deadline", "+3d")
    refused = cli("letter", "update", cli.letter_file(letter_with(leads=["xx-nobody"])), code=1)
    assert "'xx-nobody' is not on the roster" in refused.stderr


# --- visibility -------------------------------------------------------------------------------


@pytest.mark.parametrize("visibility", ["public", "counts", "private"])
async def test_what_members_see_follows_the_visibility(
    visibility: str, database: Database, settings: Settings, tmp_path: Path
) -> None:
    configured = make_settings(settings.database.url, tmp_path, letters={"visibility": visibility})
    import_example_roster(database)
    create_example_letter(database, configured, post_to=["console:#members"])
    async with ConsoleHarness(configured, database) as h:
        post = await h.send()
        assert "[#members] 📜" in post
        await h.send("in #members", "as uk-alton", "!sign")
        member = await h.send("as au-abetz", "!status")
        assert "You have not signed yet" in member and "closes" in member  # always: own + deadline
        coordinator = await h.send("as coordinator", "!status")
        assert "1 signature: United Kingdom 1." in coordinator and ALTON in coordinator
        with database.session() as session:
            letter = letters.get_letter(session, slug=SLUG)
            assert letter is not None
            deadline = letter.deadline
        reminder = await tick(h, deadline - timedelta(minutes=30))
        view = letter_view(database, slug=SLUG)
        assert view is not None
        counter = counter_line(view)

    post_line = lines_of(post, "[#members] 📜")[0]
    reminder_line = lines_of(reminder, "[#members] ⏰")[0]
    if visibility == "public":
        assert "1 signature: United Kingdom 1." in member and ALTON in member
    elif visibility == "counts":
        assert "1 signature: United Kingdom 1." in member and "Alton" not in member
    else:
        assert "signature" not in member and "United Kingdom" not in member
        assert "Alton" not in member
    if visibility == "private":  # the live counter and the reminder show no number
        assert "signature" not in post_line and "so far" not in post_line
        assert counter == f"Open for signing until {format_utc(deadline)}"
        assert "so far" not in reminder_line and "Sign it with" in reminder_line
    else:
        assert "0 signatures so far" in post_line
        assert counter.endswith("· 1 signature so far")
        assert "1 signature so far" in reminder_line


async def test_front_matter_visibility_overrides_the_configuration(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    assert settings.letters.visibility == "public"
    import_example_roster(database)
    text = letter_with(visibility="private")
    create_example_letter(database, settings, text=text, post_to=["console:#members"])
    async with console_harness as h:
        await h.send("in #members", "as uk-alton", "!sign")
        own = await h.send("!status")
        assert "You signed on" in own and "signature" not in own
        assert "1 signature" in await h.send("as coordinator", "!status")


def test_public_signatories_false_still_means_counts(tmp_path: Path) -> None:
    old = make_settings("sqlite://", tmp_path, letters={"public_signatories": False})
    assert old.letters.visibility == "counts"
    assert make_settings("sqlite://", tmp_path).letters.visibility == "public"


# --- embargo ----------------------------------------------------------------------------------


def embargoed_letter(database: Database, settings: Settings) -> tuple[datetime, datetime]:
    deadline = utcnow() + timedelta(hours=2)
    embargo = deadline + timedelta(days=1)
    import_example_roster(database)
    text = letter_with(embargo=iso_utc(embargo))
    create_example_letter(
        database, settings, deadline=deadline, text=text, post_to=["console:#members"]
    )
    return deadline, embargo


async def test_embargo_closes_at_the_deadline_and_publishes_names_at_the_embargo(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    deadline, embargo = embargoed_letter(database, settings)
    async with console_harness as h:
        await h.send("in #members", "as uk-alton", "!sign", "as au-abetz", "!sign")
        closed = await tick(h, deadline + timedelta(seconds=1))
        members_saw = "\n".join(lines_of(closed, "[#members]"))
        assert "Signing of “Candidacy" in members_saw
        assert f"will be published on {format_utc(embargo)}" in members_saw
        assert "Alton" not in members_saw and "Abetz" not in members_saw
        coordinators = closed.split("[#secretariat] 📬", 1)[1]
        assert ALTON in coordinators  # the compiled letter goes to coordinators at close
        assert "under embargo" in closed and f"cosign publish {SLUG}" in closed
        status = await h.send("as au-abetz", f"!status {SLUG}")
        assert f"will be published on {format_utc(embargo)}" in status

        assert "📣" not in await tick(h, embargo - timedelta(minutes=1))
        published = await tick(h, embargo + timedelta(seconds=1))
        assert "[#members] 📣 “Candidacy" in published
        assert f"{ABETZ}\n\n{ALTON}" in published  # the signatory block, grouped
        assert await tick(h, embargo + timedelta(seconds=5)) == ""  # once

    restarted = Bot(settings, database, [])  # another process, after a restart: nothing again
    assert restarted.scheduler.tick(now=embargo + timedelta(minutes=1)) is False
    with database.session() as session:
        rows = session.exec(
            select(OutboxMessage).where(OutboxMessage.idempotency_key.startswith("published:"))  # type: ignore[attr-defined]
        ).all()
        assert len(rows) == 1
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "letter.published"))
        assert len(events.all()) == 1


async def test_a_coordinator_publishes_before_the_embargo_once(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    deadline, embargo = embargoed_letter(database, settings)
    async with console_harness as h:
        await h.send("in #members", "as uk-alton", "!sign")
        early = await h.send("as coordinator", f"!cosign publish {SLUG}")
        assert "is still open: it is published when it closes" in early
        await tick(h, deadline + timedelta(seconds=1))
        published = await h.send(f"!cosign publish {SLUG}")
        assert "📣 Published “Candidacy" in published
        assert "[#members] 📣 “Candidacy" in published and ALTON in published
        again = await h.send(f"!cosign publish {SLUG}")
        assert "already published" in again and "[#members]" not in again
        assert "📣" not in await tick(h, embargo + timedelta(seconds=1))  # not a second time
        refused = await h.send("as au-abetz", f"!cosign publish {SLUG}")
        assert "Only coordinators" in refused


def test_letter_publish_on_the_command_line(cli: Cli, database: Database) -> None:
    cli("roster", "import", str(ROSTER))
    embargo = iso_utc(utcnow() + timedelta(days=10))
    cli("letter", "create", cli.letter_file(letter_with(embargo=embargo)), "--deadline", "+3d")
    cli("letter", "post", SLUG, "--to", "console:#members", "--to", "console:#staff")
    sign(database, "uk-alton")
    refused = cli("letter", "publish", SLUG, code=1)
    assert "still open" in refused.stderr
    cli("letter", "close", SLUG)
    assert "published" in cli("letter", "publish", SLUG).stdout
    assert "already published" in cli("letter", "publish", SLUG, code=1).stderr
    with database.session() as session:
        rows = session.exec(
            select(OutboxMessage).where(OutboxMessage.idempotency_key.startswith("published:"))  # type: ignore[attr-defined]
        ).all()
    assert sorted(row.channel for row in rows) == ["#members", "#staff"]
    assert ALTON in rows[0].payload["context"]["signatories"]


def test_an_embargo_before_the_deadline_is_refused(cli: Cli, settings: Settings) -> None:
    now = utcnow()
    with pytest.raises(LetterFileError, match="embargo .* is before the deadline"):
        parse_letter(
            letter_with(embargo="2021-11-14T12:00:00Z"), zone=settings.letters.zone, now=now
        )
    cli("roster", "import", str(ROSTER))
    embargo = now + timedelta(days=2)
    path = cli.letter_file(letter_with(embargo=iso_utc(embargo)))
    refused = cli("letter", "create", path, "--deadline", "+3d", code=1)
    assert "is before the deadline" in refused.stderr
    assert "(none)" in cli("letter", "list").stdout
    cli("letter", "create", path, "--deadline", "+1d")
    refused = cli("letter", "extend", SLUG, "--deadline", "+4d", code=1)
    assert "after the embargo" in refused.stderr


def test_without_an_embargo_the_letter_is_published_at_close(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    close(database, settings)
    with database.session() as session:
        letter = session.exec(select(Letter)).one()
        assert letter.published_at == letter.closed_at is not None


# --- reminders by direct message --------------------------------------------------------------


async def test_reminders_by_direct_message_reach_each_non_signer_once_per_offset(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    deadline = utcnow() + timedelta(days=2)
    create_example_letter(database, settings, deadline=deadline, post_to=["console:#members"])
    async with console_harness as h:
        await h.send("in #members", "as au-abetz", "!sign", "as uk-alton", "!sign", "!unsign")
        off = await h.send("as be-cogolati", "!remind off")
        assert "Reminders by direct message are now off for Samuel Cogolati MP (Belgium)" in off

        first = await tick(h, deadline - timedelta(hours=24))
        dms = lines_of(first, "[dm @")
        assert len(dms) == 47 - 3, first  # not the signer, the withdrawn, nor who said off
        for absent in ("au-abetz", "uk-alton", "be-cogolati", "coordinator"):
            assert not any(line.startswith(f"[dm @{absent}]") for line in dms)
        assert "[dm @ca-cotler] ⏰ Reminder: you have not signed “Candidacy" in first
        assert "!remind off" in dms[0]
        assert len(lines_of(first, "[#members] ⏰")) == 1  # the channel reminder as before
        assert lines_of(await tick(h, deadline - timedelta(hours=23)), "[dm @") == []

        await h.send("as be-cogolati", "!remind on")
        await h.send("as ca-cotler", "!sign")
        second = lines_of(await tick(h, deadline - timedelta(minutes=59)), "[dm @")
        assert len(second) == 47 - 3
        assert any(line.startswith("[dm @be-cogolati]") for line in second)
        assert not any(line.startswith("[dm @ca-cotler]") for line in second)

    with database.session() as session:
        actions = [
            e.action
            for e in session.exec(select(AuditEvent).where(AuditEvent.member_id == "be-cogolati"))
        ]
        member = members.get_member(session, member_id="be-cogolati")
    assert [a for a in actions if "reminders" in a] == [
        "member.reminders_off",
        "member.reminders_on",
    ]
    assert member is not None and member.reminders_off is False


async def test_dm_reminders_can_be_turned_off_in_the_configuration(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    quiet = make_settings(settings.database.url, tmp_path, scheduler={"dm_reminders": False})
    import_example_roster(database)
    deadline = utcnow() + timedelta(days=2)
    create_example_letter(database, quiet, deadline=deadline, post_to=["console:#members"])
    async with ConsoleHarness(quiet, database) as h:
        await h.send()
        out = await tick(h, deadline - timedelta(hours=24))
        assert lines_of(out, "[dm @") == [] and lines_of(out, "[#members] ⏰")


async def test_remind_needs_on_or_off_and_a_roster_member(
    console_harness: ConsoleHarness, database: Database
) -> None:
    import_example_roster(database)
    async with console_harness as h:
        assert "Usage: remind off|on" in await h.send("as au-abetz", "!remind")
        assert "not linked to a roster member" in await h.send("as stranger", "!remind off")
        assert "already on" in await h.send("as au-abetz", "!remind on")


# --- deadline moved ---------------------------------------------------------------------------


async def test_extending_posts_a_notice_in_every_channel_the_letter_is_in(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members", "console:#staff"])
    async with console_harness as h:
        await h.send()
        out = await h.send("as coordinator", f"!cosign extend {SLUG} 2099-01-01T12:00:00Z")
        for channel in ("#members", "#staff"):
            notice = lines_of(out, f"[{channel}] 🗓️")
            assert len(notice) == 1, out
            assert "signing now closes 2099-01-01 12:00 UTC" in notice[0]
        assert "[#secretariat]" not in out  # only where the letter was posted
