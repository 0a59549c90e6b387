"""Where commands run: a thread, or (in `cosign run`) a worker process.

A command's database and ORM work is CPU-bound Python. In a thread it holds the GIL the event loop
needs to acknowledge Slack requests, and during a burst the two split one core: acks came at half
the rate of a bare Bolt app (bench/slack_sign.py). In a worker process, forked once at start-up
before any thread exists, the work runs on its own core, at the same priority as the process that
acknowledges: a signer waits for the answer, which is the command's commit, not for the ack.

The worker forks from a process whose heap bot.serve.settle_heap has frozen, so it shares the
engine's code and the UCA collator with its parent page for page instead of importing them again.
It opens its own database connections; the parent's pool is emptied before the fork, so no
connection (and no SQLite lock) is ever shared between the two.

Group commit: the worker takes every request already waiting on its pipe (up to MAX_BATCH) and
runs them in one transaction, each in a savepoint (Dispatcher.dispatch_many), then answers them
all. A commit and its transaction's set-up cost about as much as a signature, and under a burst the
requests queue behind the worker anyway; a lone request is run alone (Dispatcher.dispatch) at once.
No request is answered before the commit that holds it.

Requests and replies travel as length-prefixed pickles over two pipes that the event loop reads
and writes itself. concurrent.futures.ProcessPoolExecutor did the same through three threads of
its own in the acknowledging process, each handing the GIL back and forth with the event loop:
about a seventh of that process's busy time under a burst (py-spy).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import multiprocessing
import os
import pickle
import select
import signal
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.process import BaseProcess

from bot.config import Settings
from bot.core import Dispatcher, Invocation, Reply, apology
from bot.db import Database

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h

_FRAME = struct.Struct("!I")


def _die_with(parent: int) -> None:
    """Die with the parent: a `kill -9` of the bot must leave no process holding the database.

    Its transaction rolls back, and nobody is left to send the reply anyway.
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


#: commands the worker takes from its pipe for one transaction (Dispatcher.dispatch_many): more
#: only lengthen the first one's wait for its answer; the commit they share is cheap beside them
MAX_BATCH = 32


class _Requests:
    """The request pipe, buffered by frame: what is already waiting is taken without blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.closed = False
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)

    def batch(self, limit: int) -> list[bytes]:
        """Wait for one request, then take up to `limit - 1` more if they are already waiting.

        Empty when the parent closed the pipe (a request cut short by that is dropped: nobody
        is left to answer it).
        """
        frames: list[bytes] = []
        while not frames:
            frame = self._frame()
            if frame is not None:
                frames.append(frame)
            elif self.closed or not self._fill(block=True):
                return []
        while len(frames) < limit:
            frame = self._frame()
            if frame is not None:
                frames.append(frame)
            elif self.closed or not self._fill(block=False):
                break
        return frames

    def _frame(self) -> bytes | None:
        if len(self.buffer) < _FRAME.size:
            return None
        (size,) = _FRAME.unpack_from(self.buffer)
        end = _FRAME.size + size
        if len(self.buffer) < end:
            return None
        frame = bytes(self.buffer[_FRAME.size : end])
        del self.buffer[:end]
        return frame

    def _fill(self, *, block: bool) -> bool:
        """Read what the pipe holds (waiting for something if `block`); False if nothing came."""
        if not block and not self.poll.poll(0):
            return False
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            self.closed = True  # the parent closed the pipe: stop
            return False
        self.buffer += chunk
        return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _answer(job: int, invocation: Invocation, replies: list[Reply]) -> bytes:
    try:
        answer = pickle.dumps((job, replies), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - unpicklable replies: reported, not fatal
        log.exception("command worker: could not return the replies to %s", invocation.command)
        answer = pickle.dumps((job, f"{exc.__class__.__name__}: {exc}"))
    return _FRAME.pack(len(answer)) + answer


def _worker_main(
    settings: Settings, parent: int, requests: int, replies: int, close: list[int]
) -> None:
    """The forked worker: run the requests waiting on the pipe together (group commit), then
    answer each with its replies, all after their one commit."""
    _die_with(parent)
    for fd in close:  # the parent's pipe ends: EOF must come when the parent closes its copy
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)  # the parent's event loop owns the inherited wakeup socket
    from handlers import REGISTRY

    dispatcher = Dispatcher(settings, Database(settings.database.url), REGISTRY)
    _serve(dispatcher, requests, replies)


def _serve(dispatcher: Dispatcher, requests: int, replies: int) -> None:
    """Until the request pipe closes: take what waits (up to MAX_BATCH), run it in one
    transaction, then write every answer. Nothing is written before that commit (rule 3)."""
    pipe = _Requests(requests)
    while True:
        frames = pipe.batch(MAX_BATCH)
        if not frames:
            return
        jobs: list[tuple[int, Invocation]] = [pickle.loads(frame) for frame in frames]
        results = dispatcher.dispatch_many([invocation for _, invocation in jobs])
        answers = [
            _answer(job, invocation, result)
            for (job, invocation), result in zip(jobs, results, strict=True)
        ]
        _write_all(replies, b"".join(answers))


class WorkerDied(Exception):
    """The command worker process exited while commands were waiting for it."""


class _Worker:
    """One forked worker and the event loop's ends of its two pipes."""

    def __init__(self, process: BaseProcess, requests: asyncio.WriteTransport) -> None:
        self.process = process
        self.requests = requests
        self.pending: dict[int, asyncio.Future[list[Reply] | str]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def read_replies(self, stream: asyncio.StreamReader) -> None:
        try:
            while True:
                (size,) = _FRAME.unpack(await stream.readexactly(_FRAME.size))
                job, result = pickle.loads(await stream.readexactly(size))
                future = self.pending.pop(job, None)
                if future is not None and not future.done():
                    future.set_result(result)
        except asyncio.IncompleteReadError:
            pass  # the worker is gone
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(WorkerDied(f"worker {self.process.pid} exited"))
            self.pending.clear()


def _protocol_for(stream: asyncio.StreamReader) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: asyncio.StreamReaderProtocol(stream)


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
        self._threads: ThreadPoolExecutor | None = None
        self._processes: list[_Worker] = []
        self._jobs = itertools.count()

    async def start(self) -> None:
        """With processes, fork the workers now, before the platforms start any thread."""
        if self._threads is not None or self._processes:
            return
        if not self.processes:
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="command")
            return
        self.database.engine.dispose()  # no pooled connection may cross the fork
        context = multiprocessing.get_context("fork")
        loop = asyncio.get_running_loop()
        parent_ends: list[int] = []  # every worker closes those it inherits
        for _ in range(self.workers):
            request_read, request_write = os.pipe()
            reply_read, reply_write = os.pipe()
            parent_ends += [request_write, reply_read]
            process = context.Process(
                target=_worker_main,
                args=(self.settings, os.getpid(), request_read, reply_write, list(parent_ends)),
                name="cosign-command-worker",
                daemon=True,
            )
            process.start()
            os.close(request_read)
            os.close(reply_write)
            requests, _ = await loop.connect_write_pipe(
                asyncio.BaseProtocol, os.fdopen(request_write, "wb", buffering=0)
            )
            stream = asyncio.StreamReader(limit=2**31)
            await loop.connect_read_pipe(
                _protocol_for(stream), os.fdopen(reply_read, "rb", buffering=0)
            )
            worker = _Worker(process, requests)  # type: ignore[arg-type]
            worker.reader = asyncio.create_task(worker.read_replies(stream), name="command-worker")
            self._processes.append(worker)
        log.info("commands run in %d worker process(es)", len(self._processes))

    async def run(self, invocation: Invocation) -> list[Reply]:
        if not self._processes and self._threads is None:
            await self.start()
        if self._threads is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, self.dispatcher.dispatch, invocation)
        worker = min(self._processes, key=lambda w: len(w.pending))
        job = next(self._jobs)
        future: asyncio.Future[list[Reply] | str] = asyncio.get_running_loop().create_future()
        worker.pending[job] = future
        data = pickle.dumps((job, invocation), pickle.HIGHEST_PROTOCOL)
        try:
            if worker.reader is None or worker.reader.done():
                raise WorkerDied(f"worker {worker.process.pid} exited")
            worker.requests.write(_FRAME.pack(len(data)) + data)
            result = await future
        except WorkerDied as exc:
            # Killed, or out of memory: its transaction rolled back or committed whole; the user
            # gets an error id and can retry. Later commands run in a thread.
            worker.pending.pop(job, None)
            await self._fall_back_to_threads()
            return [apology(invocation, exc)]
        if isinstance(result, str):
            return [apology(invocation, RuntimeError(result))]
        return result

    async def _fall_back_to_threads(self) -> None:
        if self._threads is not None:
            return
        log.error("a command worker process died; running commands in a thread from now on")
        # Threads exist by now (platform clients), so forking a new worker is not safe.
        self.processes = False
        workers, self._processes = self._processes, []
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="command")
        await self._stop_processes(workers)

    async def shutdown(self) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            await asyncio.to_thread(threads.shutdown, wait=True)
        workers, self._processes = self._processes, []
        await self._stop_processes(workers)

    @staticmethod
    async def _stop_processes(workers: list[_Worker]) -> None:
        """Close each request pipe: the worker finishes its queue, sees EOF and exits."""
        for worker in workers:
            worker.requests.close()
        for worker in workers:
            await asyncio.to_thread(worker.process.join, 30)
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 5)
            if worker.reader is not None:
                await worker.reader
