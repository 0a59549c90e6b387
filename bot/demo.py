"""`cosign demo`: the whole campaign on a throwaway database, in a few seconds."""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import time
from datetime import timedelta
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TextIO

from bot.campaign import Target, post_letter
from bot.config import load_settings
from bot.db import Database
from bot.letterfile import parse_letter
from bot.models._types import utcnow
from bot.platforms.console import ConsolePlatform
from bot.roster import import_roster
from bot.runtime import Bot
from bot.store import letters
from bot.store.members import list_members

#: The repository's examples/, installed as a resource package (see setup.py), so the demo also
#: runs from a wheel, in any directory.
EXAMPLES = files("bot.examples")
SIGNING_WINDOW = timedelta(seconds=4)


def run_demo(out: TextIO | None = None, examples: Traversable = EXAMPLES) -> str:
    """Returns the compiled letter text (also printed)."""
    stream = out or sys.stdout
    with tempfile.TemporaryDirectory(prefix="cosign-demo-") as tmp:
        return asyncio.run(_campaign(Path(tmp), examples, stream))


async def _campaign(tmp: Path, examples: Traversable, out: TextIO) -> str:
    started = time.monotonic()

    def say(text: str) -> None:
        out.write(f"demo {time.monotonic() - started:5.1f}s  {text}\n")
        out.flush()

    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp / 'demo.db'}"},
            "letters": {"output_dir": str(tmp / "out")},
            "scheduler": {"tick_seconds": 0.2, "reminders": []},
            "coordinators": {"console": ["coordinator"], "announce": ["console:#secretariat"]},
        },
    )
    database = Database(settings.database.url)
    database.upgrade()
    with database.session() as session:
        result = import_roster(
            session, data=(examples / "ipac-roster.csv").read_bytes(), actor="demo"
        )
        members = [m.member_id for m in list_members(session) if m.role == "member"]
    say(f"imported the roster: {result.created} people")
    now = utcnow()
    source = parse_letter(
        (examples / "interpol-2021.md").read_text(encoding="utf-8"),
        zone=settings.letters.zone,
        now=now,
    )
    with database.session() as session:
        letter = letters.create_letter(
            session, source=source, deadline=now + SIGNING_WINDOW, actor="demo"
        )
        assert letter is not None
        post_letter(
            session,
            settings=settings,
            letter=letter,
            targets=[Target("console", "#members")],
            actor="demo",
            now=now,
        )
    say(f"created and posted {source.slug}; signing closes in {SIGNING_WINDOW.seconds} s")
    console_log = io.StringIO()
    console = ConsolePlatform(
        user="coordinator", channel="#members", stdout=console_log, interactive=False
    )
    bot = Bot(settings, database, [console], poll_seconds=0.2)
    await bot.start()
    try:
        await bot.drain(platforms=["console"])
        for member_id in members:
            await console.handle_line(f"as {member_id}")
            await console.handle_line("!sign")
        signed = console_log.getvalue().count("You signed")
        say(f"{signed} members signed through the console with !sign")
        await console.handle_line("as coordinator")
        await console.handle_line("!status")
        say("coordinator status:\n" + _indent(console_log.getvalue().splitlines()[-4:]))
        say("waiting for the deadline …")
        compiled = await _wait_for_compilation(database, source.slug, timeout=30)
        await bot.drain(platforms=["console"])
        say(
            f"the scheduler closed the letter and compiled {compiled[1]} signatures; "
            f"files in {settings.letters.output_dir / source.slug} (temporary)"
        )
    finally:
        await bot.stop()
        database.dispose()
    out.write("\n")
    out.write(compiled[0])
    return compiled[0]


async def _wait_for_compilation(database: Database, slug: str, timeout: float) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.session() as session:
            letter = letters.get_letter(session, slug=slug)
            assert letter is not None and letter.id is not None
            compilation = letters.get_compilation(session, letter_pk=letter.id)
            if compilation is not None:
                return compilation.outputs["txt"], compilation.signatory_count
        await asyncio.sleep(0.2)
    raise TimeoutError("the scheduler did not compile the letter in time")


def _indent(lines: list[str]) -> str:
    return "\n".join("           " + line for line in lines)
