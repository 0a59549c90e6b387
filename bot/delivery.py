"""The outbox delivery loop: sends what the database says is due, with retries and back-off."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.models import OutboxMessage
from bot.models._types import utcnow
from bot.platforms.base import Delivery, Platform
from bot.store import outbox

if TYPE_CHECKING:
    from bot.runtime import Bot

log = logging.getLogger(__name__)

# A claim's lease, renewed every third of it while the row is being sent: a sender that died
# gives its row back within this time, a live one keeps it however long a rate limit holds it.
LEASE = timedelta(minutes=2)
# Rows sent in one pass (each claimed only when its turn comes), and candidates looked at per claim.
BATCH = 50
CANDIDATES = 5
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
        self.lease = LEASE
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
        """One pass: claim each due message just before sending it, up to BATCH of them.

        A row is claimed only when its turn comes, and its lease is renewed while it is sent:
        a rate-limit wait on one row never lets the rows behind it, or itself, lapse to
        another replica that would send them again (Slack has no idempotency key).
        """
        platforms = [p for p in self.bot.platforms if p in self.bot.running_platforms]
        if not platforms:
            return 0
        sent = 0
        while sent < BATCH:
            claimed = await asyncio.to_thread(self._claim_next, platforms)
            if claimed is None:
                break
            await self._send(*claimed)
            sent += 1
        return sent

    def _claim_next(self, platforms: list[str]) -> tuple[OutboxMessage, str] | None:
        """The next due message, claimed (one transaction), with its claim token."""
        now = utcnow()
        with self.bot.database.session() as session:
            for candidate in outbox.due(session, platforms=platforms, now=now, limit=CANDIDATES):
                assert candidate.id is not None
                token = outbox.claim(session, message_id=candidate.id, now=now, lease=self.lease)
                if token is not None:
                    message = session.get(OutboxMessage, candidate.id, populate_existing=True)
                    assert message is not None
                    return message, token
        return None

    async def _send(self, message: OutboxMessage, token: str) -> None:
        platform = self.bot.platforms[message.platform]
        sending = asyncio.create_task(self._attempt(platform, message))
        keeping = asyncio.create_task(self._keep_claim(message, token))
        try:
            await asyncio.wait({sending, keeping}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this pass is cancelled (Bot.stop): neither outlives it
            keeping.cancel()
            if not sending.done() and keeping.done() and not keeping.cancelled():
                # The claim was lost (another sender holds the row now): stop before this send
                # becomes a second copy of the new holder's. Its outcome is the one recorded.
                log.warning(
                    "outbox message %s: claim lost while sending; the new holder sends it",
                    message.id,
                )
            sending.cancel()
            await asyncio.gather(sending, keeping, return_exceptions=True)
        if sending.cancelled():
            return
        await asyncio.to_thread(self._record, message, token, sending.result())

    async def _attempt(self, platform: Platform, message: OutboxMessage) -> Delivery:
        try:
            return await platform.deliver(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug must not lose the message
            log.exception("delivering outbox message %s failed", message.id)
            return Delivery.failed(f"{exc.__class__.__name__}: {exc}")

    async def _keep_claim(self, message: OutboxMessage, token: str) -> None:
        """Renew the lease every third of it while the send runs; return once it is lost."""
        assert message.id is not None
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                held = await asyncio.to_thread(self._renew, message.id, token)
            except Exception:  # the database hiccuped: the next beat tries again
                log.exception("renewing the lease of outbox message %s failed", message.id)
                continue
            if not held:
                return

    def _renew(self, message_id: int, token: str) -> bool:
        with self.bot.database.session() as session:
            return outbox.renew(
                session, message_id=message_id, token=token, now=utcnow(), lease=self.lease
            )

    def _record(self, message: OutboxMessage, token: str, delivery: Delivery) -> None:
        """The outcome, under the claim held; refused (and logged by the store) if it was lost."""
        assert message.id is not None
        now = utcnow()
        with self.bot.database.session() as session:
            if delivery.ok:
                outbox.mark_delivered(
                    session, message_id=message.id, token=token, at=now, result=delivery.result
                )
                return
            attempts = message.attempts  # counted by the claim
            if delivery.retry_after is not None:
                next_at = now + timedelta(seconds=delivery.retry_after)
            else:
                next_at = now + backoff(attempts)
            give_up = delivery.permanent and attempts >= PERMANENT_ATTEMPTS
            marked = outbox.mark_retry(
                session,
                message_id=message.id,
                token=token,
                error=delivery.error,
                next_attempt_at=next_at,
                give_up=give_up,
            )
        if marked is None:
            return
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
