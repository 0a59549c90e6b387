"""Starting and stopping the bot process: platforms from settings, signals, shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from typing import Any

from bot import names
from bot.config import Settings
from bot.db import Database
from bot.platforms.base import Platform
from bot.platforms.console import ConsolePlatform
from bot.runtime import Bot

log = logging.getLogger(__name__)


def build_platforms(settings: Settings, *, console_stdin_required: bool) -> list[Platform]:
    platforms: list[Platform] = []
    if settings.console.enabled:
        if console_stdin_required and not sys.stdin.isatty():
            log.warning("console platform skipped: stdin is not a terminal")
        else:
            user = (
                settings.coordinators.console[0] if settings.coordinators.console else "coordinator"
            )
            platforms.append(ConsolePlatform(user=user))
    if settings.slack.enabled:
        from bot.platforms.slack import SlackPlatform

        platforms.append(SlackPlatform(settings))
    if settings.matrix.enabled:
        from bot.platforms.matrix import MatrixPlatform

        platforms.append(MatrixPlatform(settings))
    return platforms


def settle_heap() -> None:
    """Build the long-lived UCA collator now and take everything made so far out of the garbage
    collector's sight. Its ~100,000 objects made every full collection take ~80 ms, a stall for
    whichever request triggered it; gc.freeze() is CPython's answer for long-lived heaps.
    """
    names.collator()
    gc.collect()
    gc.freeze()


async def serve(settings: Settings, database: Database, platforms: list[Platform]) -> None:
    """Run until SIGINT/SIGTERM (or, with an interactive console, until Ctrl-D)."""
    bot = Bot(settings, database, platforms, command_processes=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settle_heap()  # before the command worker forks: it shares the frozen heap
    await bot.start()
    gc.freeze()  # and what the platforms built
    log.info("cosign running: %s", ", ".join(bot.running_platforms) or "scheduler only")
    waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
    for platform in platforms:
        if isinstance(platform, ConsolePlatform):
            waiters.append(asyncio.create_task(platform.serve()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await bot.stop()
        log.info("cosign stopped")


async def serve_console(settings: Settings, database: Database, platform: ConsolePlatform) -> None:
    """`cosign console`: the console platform, its outbox and the scheduler, until end of input."""
    bot = Bot(settings, database, [platform])
    await bot.start()
    try:
        await platform.serve()
    finally:
        await bot.stop()
