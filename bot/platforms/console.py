"""The console platform: a local, trusted chat on stdin/stdout (DESIGN.md §5, console lines).

``as USER`` switches who speaks, ``in CHANNEL`` switches channel, other lines are chat messages;
those starting with ``!`` (or ``/``) are commands. Interactive on a terminal; when stdin is a pipe
it processes every line, waits for the work they caused, and returns at end of input.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from sqlmodel import Session

from bot.compile import render_letter
from bot.core import Invocation, Reply, parse_text
from bot.models import Letter, OutboxMessage
from bot.models._types import utcnow
from bot.platforms.base import Delivery, Platform, render_reply
from bot.store import letters, signatures
from bot.templating import render
from bot.timeutil import format_utc

if TYPE_CHECKING:
    from bot.runtime import Bot


def normalise_channel(raw: str) -> str:
    channel = raw.strip()
    if channel.startswith("console:"):
        channel = channel[len("console:") :]
    return channel if channel.startswith("#") else f"#{channel}"


class ConsolePlatform(Platform):
    name = "console"

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
        lines = await asyncio.to_thread(self.stdin.readlines)
        for line in lines:
            await self.handle_line(line)
        await self._bot.drain(platforms=[self.name])

    async def _serve_interactive(self) -> None:
        self.emit("cosign", "console ready: 'as USER', 'in #CHANNEL', '!help'; Ctrl-D quits.")
        while True:
            prompt = f"{self.user} in {self.channel}> "
            try:
                line = await asyncio.to_thread(input, prompt)
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
            self.emit(message.channel, text)
        return Delivery.sent(message_id=f"console:{message.id}")

    def _render_outbox(self, message: OutboxMessage) -> str | None:
        assert self._bot is not None
        payload = message.payload
        if message.kind == "message":
            return render(payload["template"], "text", **payload["context"]).strip("\n")
        with self._bot.database.session() as session:
            letter = letters.get_letter(session, slug=payload["slug"])
            if letter is None:
                return None
            if message.kind == "post_letter":
                return self._letter_post(session, letter, message)
            if message.kind == "compiled":
                assert letter.id is not None
                compilation = letters.get_compilation(session, letter_pk=letter.id)
                if compilation is None:
                    return None
                return render(
                    "replies/compiled.j2",
                    "text",
                    title=letter.title,
                    closed_at=format_utc(compilation.compiled_at),
                    count=compilation.signatory_count,
                    text=compilation.outputs["txt"],
                ).rstrip("\n")
        return None  # post_closed: a console post has nothing to edit

    def _letter_post(self, session: Session, letter: Letter, message: OutboxMessage) -> str:
        assert letter.id is not None
        post = letters.upsert_post(
            session, letter_pk=letter.id, platform=self.name, channel=message.channel
        )
        post.message_id = f"console:{message.id}"
        post.posted_at = utcnow()
        session.add(post)
        count = signatures.count_active(session, letter_pk=letter.id)
        body = render_letter(letters.letter_text(letter), [], "txt").rstrip("\n")
        return render(
            "replies/letter_post.j2",
            "text",
            title=letter.title,
            slug=letter.slug,
            deadline=format_utc(letter.deadline),
            count=count,
            text=body,
            prefix="!",
        ).rstrip("\n")
