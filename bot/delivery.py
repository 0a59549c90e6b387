"""The outbox delivery loop: sends what the database says is due, with retries and back-off."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.models import OutboxMessage
from bot.models._types import utcnow
from bot.platforms.base import Delivery
from bot.store import outbox

if TYPE_CHECKING:
    from bot.runtime import Bot

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
# Passes after a notify are at least this far apart: a burst of commands that queue messages
# shares one database pass (on SQLite a write-locking transaction) instead of one each.
MIN_PASS_GAP_SECONDS = 0.05
MAX_BACKOFF = timedelta(minutes=15)
# The one rule for giving up: a message is marked failed when an error that retrying cannot mend
# (the channel does not exist, an unknown kind) ends its attempt number PERMANENT_ATTEMPTS or a
# later one (every attempt counts). Any other failure is retried with back-off, without limit:
# nothing is dropped because a platform was down or rate-limited for a while.
PERMANENT_ATTEMPTS = 8


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=2 ** min(attempts, 16)), MAX_BACKOFF)


class OutboxDeliverer:
    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.wakeup = asyncio.Event()

    def notify(self) -> None:
        self.wakeup.set()

    async def run(self) -> None:
        """Deliver until cancelled; an error in one pass is logged and the loop carries on."""
        while True:
            try:
                sent = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox pass failed; retrying")
                sent = 0
            if sent:
                continue
            self.wakeup.clear()
            try:
                # Not wait_for: on Python 3.11 it swallows a cancel that arrives as the event is
                # set (a notify during Bot.stop), and this loop then outlives the bot's stop.
                async with asyncio.timeout(self.bot.poll_seconds):
                    await self.wakeup.wait()
            except TimeoutError:
                continue
            await asyncio.sleep(MIN_PASS_GAP_SECONDS)  # notifications meanwhile share one pass

    async def deliver_due(self) -> int:
        """One pass: claim and send every due message for the platforms running here."""
        platforms = [p for p in self.bot.platforms if p in self.bot.running_platforms]
        if not platforms:
            return 0
        messages = await asyncio.to_thread(self._claim_due, platforms)
        for message in messages:
            await self._send(message)
        return len(messages)

    def _claim_due(self, platforms: list[str]) -> list[OutboxMessage]:
        now = utcnow()
        claimed: list[OutboxMessage] = []
        with self.bot.database.session() as session:
            candidates = outbox.due(session, platforms=platforms, now=now)
        for candidate in candidates:
            assert candidate.id is not None
            with self.bot.database.session() as session:
                if outbox.claim(session, message_id=candidate.id, now=now, lease=LEASE):
                    claimed.append(candidate)
        return claimed

    async def _send(self, message: OutboxMessage) -> None:
        platform = self.bot.platforms[message.platform]
        try:
            delivery = await platform.deliver(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug must not lose the message
            log.exception("delivering outbox message %s failed", message.id)
            delivery = Delivery.failed(f"{exc.__class__.__name__}: {exc}")
        await asyncio.to_thread(self._record, message, delivery)

    def _record(self, message: OutboxMessage, delivery: Delivery) -> None:
        assert message.id is not None
        now = utcnow()
        with self.bot.database.session() as session:
            if delivery.ok:
                outbox.mark_delivered(
                    session, message_id=message.id, at=now, result=delivery.result
                )
                return
            attempts = message.attempts + 1
            if delivery.retry_after is not None:
                next_at = now + timedelta(seconds=delivery.retry_after)
            else:
                next_at = now + backoff(attempts)
            give_up = delivery.permanent and attempts >= PERMANENT_ATTEMPTS
            outbox.mark_retry(
                session,
                message_id=message.id,
                error=delivery.error,
                next_attempt_at=next_at,
                give_up=give_up,
            )
        level = logging.ERROR if give_up else logging.WARNING
        log.log(
            level,
            "outbox message %s to %s:%s not sent (%s); %s",
            message.id,
            message.platform,
            message.channel,
            delivery.error,
            "giving up" if give_up else f"next attempt at {next_at:%H:%M:%S}",
        )
