"""Live counters: keep every letter post showing the true count and state.

Reconciliation, not events: each pass compares what a post shows with the database and edits the
ones that differ. That coalesces a burst into one edit per post per interval, always ends on the
true final count, survives restarts (the database is the truth), and removes the buttons at close.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from bot.publishing import mark_post_shown, stale_posts

if TYPE_CHECKING:
    from bot.platforms.base import Platform
    from bot.runtime import Bot

log = logging.getLogger(__name__)

# One pass at a time per platform in this process: two overlapping passes both saw a post stale
# and both edited it (a permanently failing one twice). Other processes may still overlap; an
# edit to the true count is harmless twice.
_pass_locks: WeakKeyDictionary[Platform, asyncio.Lock] = WeakKeyDictionary()


class CounterSync:
    def __init__(self, bot: Bot, platform: Platform) -> None:
        self.bot = bot
        self.platform = platform

    async def run(self) -> None:
        """Reconcile every `counter_interval` seconds until cancelled; errors are logged."""
        while True:
            delay = self.platform.counter_interval
            try:
                delay = max(delay, await self.sync_once())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s counter pass failed; carrying on", self.platform.name)
            await asyncio.sleep(delay)

    async def sync_once(self) -> float:
        """One pass; returns how long to wait before the next (longer after a rate limit)."""
        lock = _pass_locks.setdefault(self.platform, asyncio.Lock())
        async with lock:
            return await self._sync_once()

    async def _sync_once(self) -> float:
        database = self.bot.database
        posts = await asyncio.to_thread(stale_posts, database, platform=self.platform.name)
        wait = 0.0
        for post in posts:
            delivery = await self.platform.update_post(post)
            if delivery.ok or delivery.permanent:
                if not delivery.ok:
                    log.warning(
                        "%s post %s in %s cannot be edited (%s); leaving it",
                        self.platform.name,
                        post.message_id,
                        post.channel,
                        delivery.error,
                    )
                await asyncio.to_thread(
                    mark_post_shown,
                    database,
                    post_id=post.post_id,
                    count=post.letter.count,
                    state=post.letter.state,
                    version=post.letter.version,
                )
            elif delivery.retry_after is not None:
                wait = max(wait, delivery.retry_after)
                break
            else:
                log.warning(
                    "%s counter update failed (%s); will retry", self.platform.name, delivery.error
                )
        return wait
