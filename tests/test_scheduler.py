"""The scheduler: close once at the deadline (and on start after downtime), reminders once each,
files written, announcements through the outbox; and the outbox surviving a crash."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import ConsoleHarness, make_settings
from helpers import EXPECTED, create_example_letter, import_example_roster, sign_everyone
from sqlmodel import select

from bot.config import Settings
from bot.db import Database
from bot.models import OutboxMessage, Reminder
from bot.models._types import utcnow
from bot.platforms.base import Delivery, Platform
from bot.runtime import Bot
from bot.store import letters, outbox


def _outbox(database: Database) -> list[OutboxMessage]:
    with database.session() as session:
        return list(session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all())


def test_due_letter_closes_once_writes_files_and_announces(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    deadline = utcnow() + timedelta(hours=2)
    create_example_letter(database, settings, deadline=deadline, post_to=["console:#members"])
    sign_everyone(database)
    bot = Bot(settings, database, [])
    assert bot.scheduler.tick(now=deadline - timedelta(seconds=1)) is True  # the 1h reminder
    assert bot.scheduler.tick(now=deadline + timedelta(seconds=1)) is True
    assert bot.scheduler.tick(now=deadline + timedelta(seconds=2)) is False  # exactly once
    out = settings.letters.output_dir / "interpol-2021"
    assert (out / "letter.txt").read_text(encoding="utf-8") == EXPECTED.read_text(encoding="utf-8")
    assert (out / "letter.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "Bütikofer" in (out / "letter.md").read_text(encoding="utf-8")
    assert len((out / "signatories.csv").read_text(encoding="utf-8").splitlines()) == 48
    kinds = [(m.kind, m.platform, m.channel) for m in _outbox(database)]
    assert ("compiled", "console", "#secretariat") in kinds
    assert ("message", "console", "#members") in kinds  # closing summary
    assert kinds.count(("compiled", "console", "#secretariat")) == 1


def test_catch_up_after_downtime_closes_on_first_tick(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    deadline = utcnow() + timedelta(hours=1)
    create_example_letter(database, settings, deadline=deadline, post_to=["console:#members"])
    with database.session() as session:  # the bot was down: the deadline passed meanwhile
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None
        letter.deadline = utcnow() - timedelta(minutes=5)
        session.add(letter)

    async def start_bot() -> None:
        bot = Bot(settings, database, [])
        await bot.start()
        for _ in range(50):
            with database.session() as session:
                row = letters.get_letter(session, slug="interpol-2021")
                if row is not None and row.state == "closed":
                    break
            await asyncio.sleep(0.05)
        await bot.stop()

    asyncio.run(start_bot())
    with database.session() as session:
        row = letters.get_letter(session, slug="interpol-2021")
        assert row is not None and row.state == "closed"


def test_reminders_sent_once_each_and_overtaken_ones_skipped(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    now = utcnow()
    deadline = now + timedelta(hours=30)
    create_example_letter(
        database, settings, deadline=deadline, post_to=["console:#members", "console:#staff"]
    )
    bot = Bot(settings, database, [])
    bot.scheduler.tick(now=deadline - timedelta(hours=25))
    assert [m for m in _outbox(database) if m.idempotency_key.startswith("reminder")] == []
    bot.scheduler.tick(now=deadline - timedelta(hours=23))
    bot.scheduler.tick(now=deadline - timedelta(hours=22))
    reminders = [m for m in _outbox(database) if m.idempotency_key.startswith("reminder")]
    assert len(reminders) == 2  # 24h, once, to both channels
    assert "left (closes" in reminders[0].payload["context"]["time_left"]
    bot.scheduler.tick(now=deadline - timedelta(minutes=30))
    bot.scheduler.tick(now=deadline - timedelta(minutes=20))
    reminders = [m for m in _outbox(database) if m.idempotency_key.startswith("reminder")]
    assert len(reminders) == 4


def test_reminders_already_past_when_posted_are_skipped(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    now = utcnow()
    create_example_letter(
        database, settings, deadline=now + timedelta(minutes=30), post_to=["console:#members"]
    )
    Bot(settings, database, []).scheduler.tick(now=now + timedelta(minutes=1))
    assert [m for m in _outbox(database) if m.idempotency_key.startswith("reminder")] == []
    with database.session() as session:
        statuses = sorted(r.status for r in session.exec(select(Reminder)).all())
    assert statuses == ["skipped", "skipped"]


def test_extension_reschedules_reminders(database: Database, settings: Settings) -> None:
    from bot.campaign import extend_letter

    import_example_roster(database)
    now = utcnow()
    create_example_letter(
        database, settings, deadline=now + timedelta(minutes=30), post_to=["console:#members"]
    )
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None
        extend_letter(
            session,
            settings=settings,
            letter=letter,
            deadline=now + timedelta(hours=3),
            actor="t",
            now=now,
        )
    bot = Bot(settings, database, [])
    bot.scheduler.tick(now=now + timedelta(hours=2, minutes=5))
    reminders = [m for m in _outbox(database) if m.idempotency_key.startswith("reminder")]
    assert len(reminders) == 1 and ":1h:" in reminders[0].idempotency_key


class FlakyPlatform(Platform):
    """A platform that fails the first N sends, then records them."""

    name = "console"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[int] = []

    async def start(self, bot: Bot) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def deliver(self, message: OutboxMessage) -> Delivery:
        if self.failures:
            self.failures -= 1
            return Delivery.failed("ratelimited", retry_after=0.05)
        assert message.id is not None
        self.sent.append(message.id)
        return Delivery.sent()


def test_outbox_retries_rate_limits_and_loses_nothing(
    database: Database, settings: Settings
) -> None:
    with database.session() as session:
        for i in range(3):
            outbox.enqueue(
                session,
                key=f"m{i}",
                platform="console",
                channel="#a",
                kind="message",
                payload={"template": "replies/error.j2", "context": {"message": "x"}},
            )
    platform = FlakyPlatform(failures=2)

    async def run() -> None:
        bot = Bot(settings, database, [platform], scheduler=False, poll_seconds=0.05)
        await bot.start()
        assert await bot.drain(platforms=["console"], timeout=10)
        await bot.stop()

    asyncio.run(run())
    assert sorted(platform.sent) == [1, 2, 3]
    assert all(m.delivered_at is not None for m in _outbox(database))


def test_crash_between_enqueue_and_delivery_still_delivers_after_restart(
    db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path)
    database = Database(db_url)
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    with database.session() as session:  # a bot claimed the post, then died before sending
        (message,) = outbox.due(session, platforms=["console"], now=utcnow())
        assert message.id is not None
    with database.session() as session:
        assert outbox.claim(
            session,
            message_id=message.id,
            now=utcnow() - timedelta(minutes=5),
            lease=timedelta(minutes=2),
        )
    database.dispose()

    async def restarted() -> str:
        db = Database(db_url)
        harness = ConsoleHarness(settings, db)
        async with harness:
            printed = await harness.send()
        db.dispose()
        return printed

    printed = asyncio.run(restarted())
    assert printed.count("[#members] 📜") == 1
    assert "Dear Ministers" in printed


@pytest.mark.parametrize("platforms", [["console"]])
def test_messages_for_platforms_not_running_wait_in_the_outbox(
    database: Database, settings: Settings, platforms: list[str]
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["slack:C1", "console:#members"])

    async def run() -> None:
        harness = ConsoleHarness(settings, database)
        async with harness:
            await harness.send()

    asyncio.run(run())
    pending = [m for m in _outbox(database) if m.delivered_at is None]
    assert [(m.platform, m.channel) for m in pending] == [("slack", "C1")]
