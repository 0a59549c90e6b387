"""The running bot: one asyncio loop for the enabled platforms, the outbox and the scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from bot.config import Settings
from bot.core import Dispatcher, Invocation, Reply
from bot.counters import CounterSync
from bot.db import Database
from bot.delivery import OutboxDeliverer
from bot.platforms.base import Platform
from bot.scheduler import Scheduler
from bot.store import outbox
from bot.workers import CommandRunner
from handlers import REGISTRY

log = logging.getLogger(__name__)


class Bot:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        platforms: Iterable[Platform] = (),
        *,
        scheduler: bool = True,
        poll_seconds: float = 2.0,
        command_processes: bool = False,
    ) -> None:
        self.settings = settings
        self.database = database
        self.dispatcher = Dispatcher(settings, database, REGISTRY)
        self.platforms: dict[str, Platform] = {p.name: p for p in platforms}
        self.running_platforms: set[str] = set()
        self.deliverer = OutboxDeliverer(self)
        self.scheduler = Scheduler(self)
        self.with_scheduler = scheduler
        self.poll_seconds = poll_seconds
        self._tasks: list[asyncio.Task[None]] = []
        # A thread by default (tests, `cosign console`); `cosign run` asks for a worker process.
        self.commands = CommandRunner(
            settings, database, self.dispatcher, processes=command_processes
        )

    async def handle(self, invocation: Invocation) -> list[Reply]:
        """Run a command off the event loop; the replies exist only after its commit."""
        replies = await self.commands.run(invocation)
        if any(reply.wakes_outbox for reply in replies):
            self.deliverer.notify()
        return replies

    async def start(self) -> None:
        await self.commands.start()  # first: a worker forks before any platform thread exists
        for name, platform in self.platforms.items():
            await platform.start(self)
            self.running_platforms.add(name)
            log.info("platform %s started", name)
        self._tasks.append(asyncio.create_task(self.deliverer.run(), name="outbox"))
        for platform in self.platforms.values():
            if platform.live_counter:
                sync = CounterSync(self, platform)
                self._tasks.append(asyncio.create_task(sync.run(), name=f"{platform.name}-counter"))
        if self.with_scheduler:
            self._tasks.append(asyncio.create_task(self.scheduler.run(), name="scheduler"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        for name in list(self.running_platforms):
            try:
                await self.platforms[name].stop()
            except Exception:
                log.exception("stopping %s failed", name)
            self.running_platforms.discard(name)
        await self.commands.shutdown()

    async def drain(self, *, platforms: Iterable[str], timeout: float = 30.0) -> bool:
        """Wait until nothing is due in the outbox for these platforms (scripted console)."""
        names = list(platforms)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.deliverer.deliver_due()
            remaining = await asyncio.to_thread(self._pending, names)
            if remaining == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    def _pending(self, names: list[str]) -> int:
        with self.database.session() as session:
            return outbox.pending_count(session, platforms=names)
