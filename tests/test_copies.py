"""Copies of the published letter (DESIGN.md §10, issue 14 point 6): with
`[letters].send_copies = true` each compiled signatory gets the published PDF by direct message,
once, when the letter is published (at close, or when its embargo ends).

The scheduler queues them (bot.copies), outside the close transaction, in batches; a LetterCopies
row says a letter is settled. Console: `[dm @MEMBER] …` with the path of the PDF the bot wrote.
Slack: conversations.open for the DM's D… id, then files_upload_v2 into it (the fake refuses a U…
id at files.completeUploadExternal, as Slack does).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from conftest import ConsoleHarness, make_settings
from helpers import create_example_letter, import_example_roster
from slack_support import SlackHarness
from sqlmodel import Session, col, select
from test_campaigns import SLUG, close, letter_with, lines_of, sign, tick

from bot import copies, publishing
from bot.config import Settings
from bot.db import Database, alembic_config
from bot.direct import DM_FILE
from bot.models import AuditEvent, LetterCopies, OutboxMessage
from bot.models._types import utcnow
from bot.platforms.slack.copies import deliver_file_dm
from bot.platforms.slack.outbound import SlackOutbound
from bot.runtime import Bot
from bot.store import outbox
from bot.timeutil import iso_utc

SIGNERS = ("uk-alton", "au-abetz", "us-rubio", "ca-cotler")
LATER = {"title": "Another letter", "slug": "another", "deadline": "soon", "time_left": "1 day"}
COPY = re.compile(
    r"^\[dm @(?P<who>[^\]]+)\] 📄 “Candidacy.*Your copy, the published PDF: (?P<path>\S+)$"
)


def copies_printed(text: str) -> dict[str, list[str]]:
    """Who got a copy on the console, and the path each was given (one per copy received)."""
    got: dict[str, list[str]] = {}
    for line in lines_of(text, "[dm @"):
        match = COPY.match(line)
        if match:
            got.setdefault(match["who"], []).append(match["path"])
    return got


def copy_rows(database: Database) -> list[OutboxMessage]:
    with database.session() as session:
        return list(session.exec(select(OutboxMessage).where(OutboxMessage.kind == DM_FILE)))


def settled(database: Database) -> list[LetterCopies]:
    with database.session() as session:
        return list(session.exec(select(LetterCopies)))


def audit_actions(database: Database, prefix: str) -> list[AuditEvent]:
    with database.session() as session:
        return list(
            session.exec(
                select(AuditEvent).where(col(AuditEvent.action).startswith(prefix))
            )
        )


def signed_letter(database: Database, settings: Settings, text: str | None = None) -> datetime:
    """The example letter posted to #members, signed by SIGNERS, and one more who withdrew."""
    deadline = utcnow() + timedelta(hours=2)
    import_example_roster(database)
    create_example_letter(
        database, settings, deadline=deadline, text=text, post_to=["console:#members"]
    )
    sign(database, *SIGNERS, "be-cogolati")
    sign(database, "be-cogolati", withdraw=True)  # withdrew: not printed, so no copy
    return deadline


# --- console ------------------------------------------------------------------------------------


async def test_each_signatory_gets_the_published_pdf_once(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    deadline = signed_letter(database, settings)
    pdf_file = settings.letters.output_dir / SLUG / "letter.pdf"
    async with console_harness as h:
        out = await tick(h, deadline + timedelta(seconds=1))  # closes: no embargo, published
        got = copies_printed(out)
        assert sorted(got) == sorted(SIGNERS)  # every signatory, nobody else
        assert all(paths == [str(pdf_file)] for paths in got.values()), got
        assert pdf_file.read_bytes() == publishing.compiled_pdf(database, slug=SLUG)
        line = next(x for x in lines_of(out, "[dm @uk-alton]"))
        assert "was published on" in line and "with 4 signatures" in line
        assert "Lord (David) Alton (United Kingdom) among them" in line
        assert copies_printed(await tick(h, deadline + timedelta(minutes=1))) == {}  # once

    restarted = Bot(settings, database, [])  # another process: nothing queued again
    restarted.scheduler.tick(now=deadline + timedelta(minutes=2))
    assert len(copy_rows(database)) == len(SIGNERS)
    (row,) = settled(database)
    assert (row.status, row.count) == ("queued", len(SIGNERS))
    (event,) = audit_actions(database, "letter.copies")
    assert event.action == "letter.copies_queued" and event.detail["copies"] == len(SIGNERS)


async def test_under_embargo_copies_go_out_when_the_letter_is_published(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    embargo = utcnow() + timedelta(days=2)
    deadline = signed_letter(database, settings, text=letter_with(embargo=iso_utc(embargo)))
    async with console_harness as h:
        closed = await tick(h, deadline + timedelta(seconds=1))
        assert "[#secretariat] 📬" in closed  # compiled and sent to coordinators …
        assert copies_printed(closed) == {}  # … but not published: no copies
        assert copies_printed(await tick(h, deadline + timedelta(hours=1))) == {}
        published = await h.send("as coordinator", f"!cosign publish {SLUG}")
        assert "📣 Published" in published
        out = published + await tick(h, deadline + timedelta(hours=2))
        assert sorted(copies_printed(out)) == sorted(SIGNERS)
        assert copies_printed(await tick(h, embargo + timedelta(seconds=1))) == {}  # not again
    assert len(copy_rows(database)) == len(SIGNERS)


async def test_send_copies_false_sends_none_and_turning_it_on_later_neither(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    off = make_settings(settings.database.url, tmp_path, letters={"send_copies": False})
    deadline = signed_letter(database, off)
    async with ConsoleHarness(off, database) as h:
        out = await tick(h, deadline + timedelta(seconds=1))
        assert "[#secretariat] 📬" in out and copies_printed(out) == {}
    assert copy_rows(database) == []
    (row,) = settled(database)
    assert (row.status, row.count) == ("off", 0)
    # The letter was published while copies were off: switching them on does not send them now.
    async with ConsoleHarness(settings, database) as h:
        assert copies_printed(await tick(h, deadline + timedelta(minutes=5))) == {}
    assert copy_rows(database) == []


async def test_copies_never_hold_up_what_is_queued_after_them(
    database: Database, settings: Settings
) -> None:
    """Copies go out when nothing else is due: a notice queued after thousands of them (here 4)
    is in the deliverer's very next batch, even when that batch has room for one message; and
    everything is delivered. (Which is printed first is not asserted: the deliverer sends to
    different channels concurrently, so print order across channels is a race.)"""
    signed_letter(database, settings)
    close(database, settings)
    copies.queue_copies(database, settings=settings, now=utcnow())
    with database.session() as session:
        outbox.enqueue(
            session,
            key="later-notice",
            platform="console",
            channel="#members",
            kind="message",
            payload={"template": "replies/deadline_moved.j2", "context": LATER},
        )
    with database.session() as session:
        waiting = [m.kind for m in outbox.due(session, platforms=["console"], now=utcnow())]
        assert waiting.count(DM_FILE) == len(SIGNERS) and waiting[-len(SIGNERS) :] == [
            DM_FILE
        ] * len(SIGNERS), waiting  # every other kind first, the notice included
        (first,) = outbox.due(session, platforms=["console"], now=utcnow(), limit=1)
        assert first.kind != DM_FILE, first
    async with ConsoleHarness(settings, database) as h:
        out = await h.send()
    printed = [line for line in out.splitlines() if "#members] 🗓" in line or COPY.match(line)]
    assert len(printed) == 1 + len(SIGNERS) and sum("🗓" in line for line in printed) == 1, out


def test_a_pass_cut_short_is_finished_by_the_next_one_each_copy_once(
    database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 2: the pass dies after its first batch (a crash, say); the next pass, or the
    other replica, queues the rest and nothing twice, and only then settles the letter."""
    signed_letter(database, settings)
    close(database, settings)
    monkeypatch.setattr(copies, "BATCH", 2)
    real = copies._queue_batch
    calls: list[int] = []

    def dies_after_one(session: Session, plan: copies.Plan, batch: list[tuple[str, str]]) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(session, plan, batch)

    monkeypatch.setattr(copies, "_queue_batch", dies_after_one)
    now = utcnow()
    copies.queue_copies(database, settings=settings, now=now)  # logs the failure, carries on
    assert len(copy_rows(database)) == 2 and settled(database) == []
    monkeypatch.setattr(copies, "_queue_batch", real)
    assert copies.queue_copies(database, settings=settings, now=now) == 2
    assert copies.queue_copies(database, settings=settings, now=now) == 0
    rows = copy_rows(database)
    assert sorted(r.payload["member_id"] for r in rows) == sorted(SIGNERS)
    assert [(s.status, s.count) for s in settled(database)] == [("queued", 4)]


def test_letters_published_before_the_upgrade_get_no_copies(
    tmp_path: Path, settings: Settings
) -> None:
    """Migration 0013 settles letters already published: upgrading sends no old copies."""
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(alembic_config(database.engine), "0012")
    old = make_settings(database.url, tmp_path)
    signed_letter(database, old)
    close(database, old)
    database.upgrade()
    (row,) = settled(database)
    assert (row.status, row.count) == ("before_copies", 0)
    assert copies.queue_copies(database, settings=old, now=utcnow()) == 0
    assert copy_rows(database) == []
    database.dispose()


# --- Slack --------------------------------------------------------------------------------------


async def test_slack_signatory_gets_the_pdf_in_their_dm(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_user("UABETZ", "abetz", "Eric Abetz")
        h.fake.add_user("UALTON", "alton", "David Alton")
        h.fake.add_user("UEVIL", "evil")
        create_example_letter(h.database, h.settings, post_to=["slack:C1"])
        sign(h.database, "au-abetz", "uk-alton")
        close(h.database, h.settings)
        await h.settle()
        h.fake.clear_calls()
        h.fake.rate_limit("files.getUploadURLExternal", 1, retry_after=1)

        await asyncio.to_thread(h.bot.scheduler.tick, utcnow())
        await h.settle()
        pdf = publishing.compiled_pdf(h.database, slug=SLUG)
        assert pdf is not None and pdf.startswith(b"%PDF")
        for user, name in (("UABETZ", "Senator Eric Abetz"), ("UALTON", "Lord (David) Alton")):
            im = h.fake.ims[user]
            assert im.startswith("D")
            (shown,) = h.fake.dms_readable_by(user)  # one message in their DM: the file
            (shared,) = shown["files"]
            upload = h.fake.files[shared["id"]]
            assert upload.content == pdf and upload.filename == f"{SLUG}.pdf"
            assert upload.channels == [im] and shared["ims"] == [im]
            assert "was published on" in shown["text"] and f"{name} (" in shown["text"]
            assert "with 2 signatures" in shown["text"]
        assert h.fake.dms_readable_by("UEVIL") == []  # did not sign: no copy
        completes = h.fake.calls_to("files.completeUploadExternal")
        assert sorted(c.args["channel_id"] for c in completes) == sorted(h.fake.ims.values())
        # The 429 was waited out (Retry-After: 1 s), not answered by a second upload.
        first, *others = h.fake.calls_to("files.getUploadURLExternal")
        assert first.rate_limited and len(others) == 2  # one retried, the other member's
        assert max(c.at for c in others) - first.at >= 0.9
        assert all(r.delivered_at is not None for r in copy_rows(h.database))


async def test_slack_member_who_cannot_be_messaged_is_a_permanent_failure(
    db_url: str, tmp_path: Path
) -> None:
    """conversations.open's documented user_not_found / user_disabled: retrying cannot help."""
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_user("UALTON", "alton", deleted=True)
        create_example_letter(h.database, h.settings, post_to=["slack:C1"])
        sign(h.database, "au-abetz", "uk-alton")  # UABETZ: not a user of this workspace
        close(h.database, h.settings)
        copies.queue_copies(h.database, settings=h.settings, now=utcnow())
        platform = h.platform
        assert isinstance(platform, SlackOutbound) and platform.client is not None
        errors = {}
        for row in copy_rows(h.database):
            delivery = await deliver_file_dm(platform.client, h.database, platform, row)
            assert not delivery.ok and delivery.permanent
            errors[row.channel] = delivery.error.split(":")[0]
        assert errors == {"UABETZ": "user_not_found", "UALTON": "user_disabled"}
        assert h.fake.calls_to("files.completeUploadExternal") == []

