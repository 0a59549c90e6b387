"""Two outbox deliverers on one database (two replicas): a row is claimed only when its turn
comes, its lease is renewed while a rate-limit wait holds its send, and a sender that lost its
claim neither sends it again nor records an outcome over the new holder's (issue 10, item 4)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError

import bot.delivery as delivery
from bot.config import Settings
from bot.db import Database
from bot.models import OutboxMessage
from bot.platforms.base import Delivery, Platform
from bot.runtime import Bot
from bot.store import outbox

LEASE = timedelta(seconds=0.9)  # renewed every 0.3 s
WAIT = 2.5  # a rate-limit wait well beyond the lease


class GatedPlatform(Platform):
    """A platform whose sends wait at a gate first, as a send waits out a rate limit."""

    name = "fake"

    def __init__(self, sent: list[tuple[str, int]], label: str, outcome: Delivery) -> None:
        self.sent = sent  # shared by both replicas: (which replica, row id) per message sent
        self.label = label
        self.outcome = outcome
        self.gate = asyncio.Event()
        self.waiting: list[int] = []  # rows whose send is waiting at the gate

    async def start(self, bot: Bot) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def deliver(self, message: OutboxMessage) -> Delivery:
        assert message.id is not None
        self.waiting.append(message.id)
        await self.gate.wait()
        if self.outcome.ok:
            self.sent.append((self.label, message.id))
        return self.outcome


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "LEASE", LEASE)


@asynccontextmanager
async def replica(
    settings: Settings, sent: list[tuple[str, int]], label: str, outcome: Delivery
) -> AsyncIterator[tuple[Bot, GatedPlatform]]:
    """A bot with its own engine on the shared database, its deliverer on a short lease."""
    database = Database(settings.database.url)
    platform = GatedPlatform(sent, label, outcome)
    bot = Bot(settings, database, [platform], scheduler=False)
    bot.running_platforms.add(platform.name)
    try:
        yield bot, platform
    finally:
        database.dispose()


def enqueue(database: Database, count: int) -> list[int]:
    ids = []
    with database.session() as session:
        for i in range(count):
            message = outbox.enqueue(
                session, key=f"k{i}", platform="fake", channel="C1", kind="message", payload={}
            )
            assert message is not None and message.id is not None
            ids.append(message.id)
    return ids


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def row(database: Database, message_id: int) -> OutboxMessage:
    with database.session() as session:
        message = session.get(OutboxMessage, message_id)
        assert message is not None
        return message


async def test_a_lease_renewed_through_a_long_rate_limit_wait_is_not_taken_over(
    settings: Settings, database: Database
) -> None:
    (message_id,) = enqueue(database, 1)
    sent: list[tuple[str, int]] = []
    async with (
        replica(settings, sent, "first", Delivery.sent(ts="1")) as (first, slow),
        replica(settings, sent, "second", Delivery.sent(ts="2")) as (second, fast),
    ):
        fast.gate.set()
        sending = asyncio.create_task(first.deliverer.deliver_due())
        await until(lambda: slow.waiting == [message_id])
        await asyncio.sleep(WAIT)  # the first lease would have lapsed twice over by now
        assert await second.deliverer.deliver_due() == 0
        slow.gate.set()
        assert await sending == 1
        assert await second.deliverer.deliver_due() == 0
    assert sent == [("first", message_id)]
    assert fast.waiting == []
    stored = row(database, message_id)
    assert stored.delivered_at is not None and stored.result == {"ts": "1"}
    assert stored.attempts == 1 and stored.claim_token is None


async def test_rows_behind_a_rate_limited_send_stay_free_for_the_other_replica(
    settings: Settings, database: Database
) -> None:
    """One pass no longer claims a batch up front: while the first replica waits on one row,
    the second sends the others."""
    ids = enqueue(database, 3)
    sent: list[tuple[str, int]] = []
    async with (
        replica(settings, sent, "first", Delivery.sent()) as (first, slow),
        replica(settings, sent, "second", Delivery.sent()) as (second, fast),
    ):
        fast.gate.set()
        sending = asyncio.create_task(first.deliverer.deliver_due())
        await until(lambda: slow.waiting == ids[:1])
        assert await second.deliverer.deliver_due() == 2
        slow.gate.set()
        assert await sending == 1
    assert sorted(sent) == [("first", ids[0]), ("second", ids[1]), ("second", ids[2])]
    assert all(row(database, i).delivered_at is not None for i in ids)


def _database_unreachable(message_id: int, token: str) -> bool:
    raise OperationalError("UPDATE outboxmessage", {}, Exception("connection refused"))


async def test_a_sender_that_lost_its_claim_does_not_send_it_again(
    settings: Settings, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first replica cannot renew (its database connection is down) while a rate limit
    holds its send; the lease lapses and the second replica sends the row. When the first can
    reach the database again it finds its claim gone and drops its send: one message overall."""
    (message_id,) = enqueue(database, 1)
    sent: list[tuple[str, int]] = []
    async with (
        replica(settings, sent, "first", Delivery.sent(ts="1")) as (first, slow),
        replica(settings, sent, "second", Delivery.sent(ts="2")) as (second, fast),
    ):
        fast.gate.set()
        monkeypatch.setattr(first.deliverer, "_renew", _database_unreachable, raising=False)
        sending = asyncio.create_task(first.deliverer.deliver_due())
        await until(lambda: slow.waiting == [message_id])
        await asyncio.sleep(LEASE.total_seconds() + 0.3)
        assert await second.deliverer.deliver_due() == 1  # the lapsed lease is taken over
        assert sent == [("second", message_id)]
        monkeypatch.delattr(first.deliverer, "_renew")  # the first reaches the database again
        await asyncio.wait({sending}, timeout=LEASE.total_seconds() * 3)
        dropped_while_waiting = sending.done()
        slow.gate.set()  # the rate limit ends: a sender still holding on would send now
        await sending
    assert sent == [("second", message_id)]
    assert dropped_while_waiting
    stored = row(database, message_id)
    assert stored.delivered_at is not None and stored.result == {"ts": "2"}
    assert stored.attempts == 2 and stored.claim_token is None


async def test_a_stale_holder_cannot_overwrite_the_new_holders_outcome(
    settings: Settings,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first replica's send ends (its rate-limit retries ran out) after the second replica
    took the lapsed row over and sent it: the first's outcome is refused and logged."""
    (message_id,) = enqueue(database, 1)
    sent: list[tuple[str, int]] = []
    limited = Delivery.failed("ratelimited", retry_after=30)
    async with (
        replica(settings, sent, "first", limited) as (first, slow),
        replica(settings, sent, "second", Delivery.sent(ts="2")) as (second, fast),
    ):
        fast.gate.set()
        monkeypatch.setattr(first.deliverer, "_renew", _database_unreachable, raising=False)
        sending = asyncio.create_task(first.deliverer.deliver_due())
        await until(lambda: slow.waiting == [message_id])
        await asyncio.sleep(LEASE.total_seconds() + 0.3)
        assert await second.deliverer.deliver_due() == 1
        with caplog.at_level(logging.WARNING, logger="bot.store.outbox"):
            slow.gate.set()
            assert await sending == 1
    assert sent == [("second", message_id)]
    assert any(
        "not marked for retry" in r.getMessage() and "no longer held" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    stored = row(database, message_id)
    assert stored.delivered_at is not None and stored.result == {"ts": "2"}
    assert stored.last_error is None and stored.failed_at is None
