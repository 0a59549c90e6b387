"""The console platform: a local, trusted chat on stdin/stdout (DESIGN.md §5, console lines).

``as USER`` switches who speaks, ``in CHANNEL`` switches channel, other lines are chat messages;
those starting with ``!`` (or ``/``) are commands. Interactive on a terminal; otherwise it handles
each line as it arrives (the outbox and scheduler run meanwhile, so a script or another program can
drive it over time), and at end of input waits for the work the lines caused and returns.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

from bot import publishing
from bot.core import Invocation, Reply, parse_text
from bot.direct import DM, DM_FILE
from bot.models import OutboxMessage
from bot.models._types import utcnow
from bot.platforms.base import Delivery, Platform, render_message, render_reply
from bot.scheduler import OUTPUT_FILES
from bot.templating import render
from bot.timeutil import format_utc

if TYPE_CHECKING:
    from bot.runtime import Bot

log = logging.getLogger(__name__)

# Lines read ahead of the one being handled; past this the reader waits, so a large file piped in
# is not held in memory all at once.
READ_AHEAD = 1000


def normalise_channel(raw: str) -> str:
    channel = raw.strip()
    if channel.startswith("console:"):
        channel = channel[len("console:") :]
    return channel if channel.startswith("#") else f"#{channel}"


class ConsolePlatform(Platform):
    name = "console"
    # No live counter: a printed post cannot be edited. When a letter's text changes its
    # console posts are queued again (bot.versions) and printed marked "[edited post]".

    def __init__(
        self,
        *,
        user: str = "coordinator",
        channel: str = "#general",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.user = user
        self.channel = normalise_channel(channel)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        self._bot: Bot | None = None
        self._write_lock = threading.Lock()

    async def start(self, bot: Bot) -> None:
        self._bot = bot

    async def stop(self) -> None:
        self._bot = None

    # --- output ------------------------------------------------------------------------------

    def emit(self, where: str, text: str) -> None:
        with self._write_lock:
            self.stdout.write(f"[{where}] {text}\n")
            self.stdout.flush()

    def show(self, reply: Reply, invocation: Invocation) -> None:
        where = (
            invocation.channel if reply.visibility == "public" else f"private @{invocation.user}"
        )
        self.emit(where, render_reply(reply, "text"))

    # --- input -------------------------------------------------------------------------------

    async def handle_line(self, line: str) -> None:
        """One line of the protocol: 'as USER', 'in CHANNEL', or a chat message."""
        assert self._bot is not None, "console not started"
        text = line.strip()
        if not text:
            return
        word, _, rest = text.partition(" ")
        if word == "as" and rest.strip() and " " not in rest.strip():
            self.user = rest.strip()
            return
        if word == "in" and rest.strip() and " " not in rest.strip():
            self.channel = normalise_channel(rest)
            return
        parsed = parse_text(text)
        if parsed is None:
            return  # an ordinary chat message: nothing for the bot to do
        command, args = parsed
        invocation = Invocation(
            platform=self.name,
            channel=self.channel,
            user=self.user,
            command=command,
            args=args,
            event_id=f"console:{utcnow().timestamp()}",
            display_name=self.user,
        )
        for reply in await self._bot.handle(invocation):
            self.show(reply, invocation)

    async def serve(self) -> None:
        """Read stdin until end of input."""
        assert self._bot is not None, "console not started"
        if self.interactive:
            await self._serve_interactive()
            return
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        room = threading.Semaphore(READ_AHEAD)
        _start_reader(self.stdin, asyncio.get_running_loop(), lines.put_nowait, room)
        while (line := await lines.get()) is not None:
            room.release()
            await self.handle_line(line)
        await self._bot.drain(platforms=[self.name])

    async def _serve_interactive(self) -> None:
        self.emit("cosign", "console ready: 'as USER', 'in #CHANNEL', '!help'; Ctrl-D quits.")
        while True:
            prompt = f"{self.user} in {self.channel}> "
            try:
                line = await _read_line(prompt)
            except EOFError:
                return
            await self.handle_line(line)
            assert self._bot is not None
            await self._bot.drain(platforms=[self.name], timeout=5)

    # --- outbox ------------------------------------------------------------------------------

    async def deliver(self, message: OutboxMessage) -> Delivery:
        assert self._bot is not None
        text = await asyncio.to_thread(self._render_outbox, message)
        if text is not None:
            # A direct message goes to an account, not a channel (DESIGN.md §8).
            where = f"dm @{message.channel}" if message.kind in (DM, DM_FILE) else message.channel
            self.emit(where, text)
        return Delivery.sent(message_id=f"console:{message.id}")

    def _render_outbox(self, message: OutboxMessage) -> str | None:
        assert self._bot is not None
        payload, database = message.payload, self._bot.database
        if message.kind in ("message", DM):
            return render_message(self, payload, "text")
        if message.kind == DM_FILE:
            # The console's "attachment" is the file the running bot wrote (write_outputs).
            attached = payload["file"]
            path = self._bot.settings.letters.output_dir / attached["slug"]
            path /= OUTPUT_FILES[attached["format"]]
            context = {**payload["context"], "pdf_path": str(path)}
            return render_message(self, {**payload, "context": context}, "text")
        if message.kind == "post_letter":
            post = publishing.letter_post(
                database, slug=payload["slug"], platform=self.name, channel=message.channel
            )
            if post is None:
                return None
            letter = post.letter
            publishing.record_post(
                database,
                post_id=post.post_id,
                message_id=f"console:{message.id}",
                count=letter.count,
                state=letter.state,
                version=letter.version,
            )
            return ("[edited post] " if payload.get("edited") else "") + _letter_post(letter)
        if message.kind == "compiled":
            result = publishing.compiled(database, slug=payload["slug"])
            if result is None:
                return None
            return render(
                "replies/compiled.j2",
                "text",
                title=result.title,
                closed_at=format_utc(result.compiled_at),
                count=result.count,
                text=result.outputs["txt"],
                pdf_path=(
                    str(self._bot.settings.letters.output_dir / result.slug / "letter.pdf")
                    if result.pdf_sha256
                    else ""
                ),
                witness=result.witness(),
            ).rstrip("\n")
        return None


async def _read_line(prompt: str) -> str:
    """input() in a daemon thread: on SIGTERM or Ctrl-C the bot stops at once, instead of
    waiting at exit (asyncio.to_thread's threads are joined) until someone presses Enter.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def settle(line: str | None, error: BaseException | None) -> None:
        if answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(line or "")

    def read() -> None:
        line: str | None = None
        error: BaseException | None = None
        try:
            line = input(prompt)
        except BaseException as exc:  # noqa: BLE001 - EOFError, KeyboardInterrupt: to the loop
            error = exc
        try:
            loop.call_soon_threadsafe(settle, line, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    threading.Thread(target=read, name="console-input", daemon=True).start()
    return await answer


class _LoopGone(Exception):
    """The event loop closed while the reader still had lines: nobody will handle them."""


def _start_reader(
    stream: TextIO,
    loop: asyncio.AbstractEventLoop,
    put: Callable[[str | None], None],
    room: threading.Semaphore,
) -> None:
    """Feed the stream's lines, then None at end of input, to put() on the loop, from a daemon
    thread: a read that blocks on an open pipe must neither stall the loop nor keep the process
    alive at exit (asyncio.to_thread's threads are joined at exit; daemon threads are not).
    """

    def send(item: str | None) -> None:
        try:
            loop.call_soon_threadsafe(put, item)
        except RuntimeError as exc:  # the loop is closed
            raise _LoopGone from exc

    def read() -> None:
        try:
            for line in _lines(stream):
                room.acquire()
                send(line)
        except _LoopGone:
            return
        except Exception:
            log.exception("reading the console's input failed; treating it as end of input")
        try:
            send(None)
        except _LoopGone:
            pass

    threading.Thread(target=read, name="console-input", daemon=True).start()


def _lines(stream: TextIO) -> Iterator[str]:
    """The stream's lines as they arrive.

    A real file or pipe is read with os.read on its descriptor rather than through the TextIO:
    a thread left blocked inside sys.stdin's buffered reader holds its lock, and interpreter
    shutdown then aborts ("could not acquire lock for <stdin>"). os.read returns whatever a pipe
    has, so a line is handled as soon as its newline arrives. In-memory streams (tests) are read
    directly; they never block.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        yield from stream
        return
    encoding = getattr(stream, "encoding", None) or "utf-8"
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    pending = ""
    while chunk := os.read(fd, 65536):
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        yield from complete
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _letter_post(letter: publishing.LetterView) -> str:
    return render(
        "replies/letter_post.j2",
        "text",
        title=letter.title,
        slug=letter.slug,
        deadline=letter.deadline_text,
        count=letter.count,
        text=letter.text,
        change_note=letter.change_note,
        prefix="!",
    ).rstrip("\n")
