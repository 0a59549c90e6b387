"""The scheduler: close once at the deadline (and on start after downtime), reminders once each,
files written, announcements through the outbox; and the outbox surviving a crash."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import ConsoleHarness, make_settings
from helpers import EXPECTED, create_example_letter, import_example_roster, sign_everyone
from sqlmodel import select

from bot import delivery as delivery_module
from bot.config import Settings
from bot.db import Database
from bot.delivery import MAX_BACKOFF, PERMANENT_ATTEMPTS
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
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    import_example_roster(database)
    deadline = utcnow() + timedelta(hours=1)
    create_example_letter(database, settings, deadline=deadline, post_to=["console:#members"])
    with database.session() as session:  # the bot was down: the deadline passed meanwhile
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None
        letter.deadline = utcnow() - timedelta(minutes=5)
        session.add(letter)

    # A tick an hour long: within this test only the first tick, at start, can run.
    hourly = make_settings(settings.database.url, tmp_path, scheduler={"tick_seconds": 3600})
    closed_after: list[bool] = []

    async def start_bot() -> None:
        bot = Bot(hourly, database, [])
        tick = bot.scheduler.tick

        def counted_tick(now: datetime | None = None) -> bool:
            changed = tick(now)
            with database.session() as session:
                row = letters.get_letter(session, slug="interpol-2021")
                closed_after.append(row is not None and row.state == "closed")
            return changed

        bot.scheduler.tick = counted_tick  # type: ignore[method-assign]
        await bot.start()
        for _ in range(200):
            if closed_after:
                break
            await asyncio.sleep(0.05)
        await bot.stop()

    asyncio.run(start_bot())
    assert closed_after == [True]  # one tick ran, at start, and it closed the letter
    assert (hourly.letters.output_dir / "interpol-2021" / "letter.txt").exists()


def _reminders(database: Database) -> list[tuple[str, str]]:
    """(offset label, channel) of each queued reminder."""
    return [
        (m.idempotency_key.split(":")[2], m.channel)
        for m in _outbox(database)
        if m.idempotency_key.startswith("reminder:")
    ]


def _reminder_rows(database: Database) -> dict[str, str]:
    with database.session() as session:
        return {r.offset_label: r.status for r in session.exec(select(Reminder)).all()}


def test_reminders_sent_once_each(database: Database, settings: Settings) -> None:
    import_example_roster(database)
    now = utcnow()
    deadline = now + timedelta(hours=30)
    create_example_letter(
        database, settings, deadline=deadline, post_to=["console:#members", "console:#staff"]
    )
    bot = Bot(settings, database, [])
    bot.scheduler.tick(now=deadline - timedelta(hours=25))
    assert _reminders(database) == []
    bot.scheduler.tick(now=deadline - timedelta(hours=23))
    bot.scheduler.tick(now=deadline - timedelta(hours=22))
    assert sorted(_reminders(database)) == [("24h", "#members"), ("24h", "#staff")]
    first = [m for m in _outbox(database) if m.idempotency_key.startswith("reminder:")][0]
    assert "left (closes" in first.payload["context"]["time_left"]
    bot.scheduler.tick(now=deadline - timedelta(minutes=30))
    bot.scheduler.tick(now=deadline - timedelta(minutes=20))
    assert sorted(_reminders(database)) == [
        ("1h", "#members"),
        ("1h", "#staff"),
        ("24h", "#members"),
        ("24h", "#staff"),
    ]
    assert _reminder_rows(database) == {"24h": "sent", "1h": "sent"}


def test_bot_down_across_several_offsets_sends_only_the_latest_reminder(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    now = utcnow()
    deadline = now + timedelta(hours=30)
    create_example_letter(
        database, settings, deadline=deadline, post_to=["console:#members", "console:#staff"]
    )
    bot = Bot(settings, database, [])
    # The bot was down from before the 24h reminder until after the 1h one was due.
    assert bot.scheduler.tick(now=deadline - timedelta(minutes=30)) is True
    assert sorted(_reminders(database)) == [("1h", "#members"), ("1h", "#staff")]
    assert _reminder_rows(database) == {"24h": "skipped", "1h": "sent"}
    assert bot.scheduler.tick(now=deadline - timedelta(minutes=20)) is False  # and not later
    assert len(_reminders(database)) == 2


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


class FailingPlatform(Platform):
    """A platform whose every send fails the same way; it counts the attempts."""

    name = "console"

    def __init__(self, failure: Delivery) -> None:
        self.failure = failure
        self.attempts = 0

    async def start(self, bot: Bot) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def deliver(self, message: OutboxMessage) -> Delivery:
        self.attempts += 1
        return self.failure


def _failing_bot(
    database: Database, settings: Settings, failure: Delivery, monkeypatch: pytest.MonkeyPatch
) -> tuple[Bot, FailingPlatform, list[datetime]]:
    """One queued message, a bot whose platform fails it, and the deliverer's clock to move."""
    with database.session() as session:
        outbox.enqueue(
            session,
            key="m",
            platform="console",
            channel="#gone",
            kind="message",
            payload={"template": "replies/error.j2", "context": {"message": "x"}},
        )
    clock = [utcnow()]
    monkeypatch.setattr(delivery_module, "utcnow", lambda: clock[0])
    platform = FailingPlatform(failure)
    bot = Bot(settings, database, [platform], scheduler=False)
    bot.running_platforms.add("console")  # deliver without starting the platform
    return bot, platform, clock


def test_a_permanent_failure_is_given_up_after_exactly_the_attempt_limit(
    database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert PERMANENT_ATTEMPTS == 8  # the number the README gives
    failure = Delivery.failed("channel_not_found", permanent=True)
    bot, platform, clock = _failing_bot(database, settings, failure, monkeypatch)
    pending_after: list[int] = []

    async def passes() -> None:
        for _ in range(PERMANENT_ATTEMPTS + 3):
            await bot.deliverer.deliver_due()
            with database.session() as session:
                pending_after.append(outbox.pending_count(session))
            clock[0] += timedelta(days=1)  # past any back-off

    asyncio.run(passes())
    assert platform.attempts == PERMANENT_ATTEMPTS
    assert pending_after == [1] * (PERMANENT_ATTEMPTS - 1) + [0] * 4
    (message,) = _outbox(database)
    assert message.failed_at is not None and message.delivered_at is None
    assert message.attempts == PERMANENT_ATTEMPTS and message.last_error == "channel_not_found"


def test_a_transient_failure_keeps_retrying_with_back_off(
    database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, platform, clock = _failing_bot(
        database, settings, Delivery.failed("timed out"), monkeypatch
    )
    gaps: list[float] = []

    async def passes() -> None:
        for attempt in range(1, 2 * PERMANENT_ATTEMPTS + 5):
            assert await bot.deliverer.deliver_due() == 1
            (message,) = _outbox(database)
            assert message.failed_at is None and message.attempts == attempt
            gaps.append((message.next_attempt_at - clock[0]).total_seconds())
            clock[0] = message.next_attempt_at - timedelta(seconds=1)
            assert await bot.deliverer.deliver_due() == 0  # not before the back-off is over
            clock[0] = message.next_attempt_at

    asyncio.run(passes())
    assert platform.attempts == 2 * PERMANENT_ATTEMPTS + 4  # far past the permanent limit
    assert gaps[:9] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
    assert set(gaps[9:]) == {MAX_BACKOFF.total_seconds()}  # doubling, capped at 15 minutes
    with database.session() as session:
        assert outbox.pending_count(session) == 1


def test_the_bot_stops_when_the_outbox_is_woken_as_it_stops(
    database: Database, settings: Settings
) -> None:
    """A notify (a command or tick queued a message) right as the bot stops must not keep the
    outbox loop alive: `cosign run` would never exit on SIGTERM."""

    async def run() -> None:
        bot = Bot(settings, database, [], scheduler=False, poll_seconds=3600)
        await bot.start()
        await asyncio.sleep(0.1)  # the deliverer is waiting for a wake-up
        bot.deliverer.notify()
        stopping = asyncio.create_task(bot.stop())
        done, _ = await asyncio.wait({stopping}, timeout=10)
        assert done, "Bot.stop() did not return: the outbox loop outlived its cancellation"

    asyncio.run(run())


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


def test_messages_for_platforms_not_running_wait_in_the_outbox(
    database: Database, settings: Settings
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
