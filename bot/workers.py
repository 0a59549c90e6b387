"""Where commands run: a thread, or (in `cosign run`) a worker process.

A command's database and ORM work is CPU-bound Python. In a thread it holds the GIL the event loop
needs to acknowledge Slack requests, and during a burst the two split one core: acks came at half
the rate of a bare Bolt app (bench/slack_sign.py). In a worker process, forked once at start-up
before any thread exists, the work runs on its own core, at a lower CPU priority than the process
that acknowledges: under a burst the acks come first (Slack's 3 s limit is hard) and the replies
follow as the worker gets through the queue.

The worker forks from a process whose heap bot.serve.settle_heap has frozen, so it shares the
engine's code and the UCA collator with its parent page for page instead of importing them again.
It opens its own database connections; the parent's pool is emptied before the fork, so no
connection (and no SQLite lock) is ever shared between the two.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from bot.config import Settings
from bot.core import Dispatcher, Invocation, Reply, apology
from bot.db import Database

log = logging.getLogger(__name__)

WORKER_NICENESS = 5  # CFS weight ~1/3 of the acknowledging process when both want the CPU
PR_SET_PDEATHSIG = 1  # linux/prctl.h

_worker_dispatcher: Dispatcher | None = None


def _die_with(parent: int) -> None:
    """A worker outlives a killed parent otherwise: it waits on a queue whose write end it holds.

    Dying is right: its transaction rolls back, and nobody is left to send the reply anyway.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):  # not Linux: watch the parent instead
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _init_worker(settings: Settings, parent: int) -> None:
    """In the forked worker: its own engine; signals are the parent's business."""
    global _worker_dispatcher
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)  # the parent's event loop owns the inherited wakeup socket
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # not permitted here: run at the parent's priority
        pass
    from handlers import REGISTRY

    _worker_dispatcher = Dispatcher(settings, Database(settings.database.url), REGISTRY)


def _dispatch_in_worker(invocation: Invocation) -> list[Reply]:
    assert _worker_dispatcher is not None, "worker not initialised"
    return _worker_dispatcher.dispatch(invocation)


def _ready() -> int:
    return os.getpid()


class CommandRunner:
    """Runs Dispatcher.dispatch off the event loop; the replies exist only after the commit."""

    def __init__(
        self, settings: Settings, database: Database, dispatcher: Dispatcher, *, processes: bool
    ) -> None:
        self.settings = settings
        self.database = database
        self.dispatcher = dispatcher
        self.processes = processes and "fork" in multiprocessing.get_all_start_methods()
        # One on SQLite: writes serialise anyway, and more workers only queue on the write lock
        # (and threads take the GIL from the event loop). PostgreSQL overlaps round trips.
        sqlite = database.engine.dialect.name == "sqlite"
        self.workers = 1 if sqlite else (2 if self.processes else 4)
        self._pool: Executor | None = None

    def start(self) -> None:
        """Create the pool now; with processes, fork before the platforms start any thread."""
        if self._pool is not None:
            return
        if not self.processes:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="command")
            return
        self.database.engine.dispose()  # no pooled connection may cross the fork
        pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(self.settings, os.getpid()),
        )
        # The first task forks every worker (the fork context never forks later), now, while this
        # process has no other thread.
        pool.submit(_ready).result()
        self._pool = pool
        log.info("commands run in %d worker process(es)", self.workers)

    async def run(self, invocation: Invocation) -> list[Reply]:
        if self._pool is None:
            self.start()
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        if isinstance(self._pool, ThreadPoolExecutor):
            return await loop.run_in_executor(self._pool, self.dispatcher.dispatch, invocation)
        try:
            return await loop.run_in_executor(self._pool, _dispatch_in_worker, invocation)
        except BrokenProcessPool as exc:
            # A worker died (killed, or out of memory). Its transaction rolled back or committed
            # whole; the user gets an error id and can retry. Later commands get a new worker.
            self._replace_broken_pool()
            return [apology(invocation, exc)]

    def _replace_broken_pool(self) -> None:
        broken, self._pool = self._pool, None
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)
        log.error("a command worker process died; starting a new one")
        # Threads may exist by now (platform clients), so a new fork is not safe: run commands
        # in a thread from here on, as the tests and `cosign console` do.
        self.processes = False
        self.start()

    def shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)
