"""The console platform: the line protocol, in-process and as a real scripted process."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

from conftest import ConsoleHarness
from helpers import LETTER, ROSTER, create_example_letter, import_example_roster

from bot.config import Settings
from bot.core import Dispatcher, Invocation
from bot.db import Database
from bot.platforms.console import ConsolePlatform
from bot.runtime import Bot
from handlers import REGISTRY


async def test_line_protocol_as_in_and_reply_format(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings)
    async with console_harness as h:
        posted = await h.send("in #members", "!cosign post interpol-2021")
        assert "[private @coordinator] “Candidacy of Hu Binchen" in posted
        assert "[#members] 📜 Candidacy" in posted  # the outbox delivered the post
        signed = await h.send("as au-abetz", "!sign")
        assert signed.startswith("[private @au-abetz] ✅ You signed “Candidacy")
        assert await h.send("just chatting, not a command") == ""
        await h.send("in console:#staff")
        assert h.console.channel == "#staff"
        elsewhere = await h.send("!sign")
        assert "No letter is open in this channel" in elsewhere
        closed = await h.send("as coordinator", "!cosign close interpol-2021")
        assert "Closed “Candidacy" in closed
        assert "[#secretariat] 📬" in closed and "Senator Eric Abetz (Australia)" in closed
        assert "[#members] Signing of “Candidacy" in closed


def test_scripted_console_processes_every_line_and_exits(tmp_path: Path, sqlite_url: str) -> None:
    env = {
        "COSIGN_DATABASE__URL": sqlite_url,
        "COSIGN_LETTERS__OUTPUT_DIR": str(tmp_path / "out"),
        "PATH": "/usr/bin:/bin",
    }

    def cosign(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", *args],
            cwd=tmp_path,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert cosign("roster", "import", str(ROSTER)).returncode == 0
    assert cosign("letter", "create", str(LETTER), "--deadline", "+1d").returncode == 0
    script = (
        "\n".join(
            [
                "in #members",
                "!cosign post interpol-2021",
                "as au-abetz",
                "!sign",
                "as uk-alton",
                "!sign interpol-2021",
                "!sign",
                "as somebody-new",
                "!sign",
                "as coordinator",
                "!status",
            ]
        )
        + "\n"
    )
    result = cosign("console", stdin=script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("[#members] 📜 Candidacy") for line in lines)
    assert sum("You signed" in line for line in lines) == 2
    assert sum("already signed" in line for line in lines) == 1
    assert any(line.startswith("[private @somebody-new] I could not match") for line in lines)
    assert "2 signatures: Australia 1, United Kingdom 1." in result.stdout
    assert "console:somebody-new" in result.stdout
    assert "Traceback" not in result.stderr


async def test_reminders_and_closing_summary_are_printed(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    from datetime import timedelta

    from bot.models._types import utcnow

    import_example_roster(database)
    deadline = utcnow() + timedelta(hours=30)
    create_example_letter(database, settings, deadline=deadline, post_to=["console:#members"])
    async with console_harness as h:
        await h.send()
        h.bot.scheduler.tick(now=deadline - timedelta(hours=23))
        printed = (await h.send()).splitlines()
        # the channel's reminder, among the members' direct ones (delivery order is free)
        (reminder,) = [line for line in printed if line.startswith("[#members] ⏰ Reminder")]
        assert reminder.startswith("[#members] ⏰ Reminder: “Candidacy")
        assert "sign it with !sign interpol-2021" in reminder
        assert sum(line.startswith("[dm @") for line in printed) == 47  # nobody has signed
        h.bot.scheduler.tick(now=deadline + timedelta(seconds=1))
        closed = await h.send()
        assert "[#members] Signing of “Candidacy" in closed and "0 signatures" in closed


async def test_a_command_that_queues_messages_wakes_the_outbox_and_a_signature_does_not(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings)
    dispatcher = Dispatcher(settings, database, REGISTRY)
    post = Invocation("console", "#members", "coordinator", "cosign", ["post", "interpol-2021"])
    (posted,) = dispatcher.dispatch(post)
    assert posted.wakes_outbox  # the letter post is queued
    (signed,) = dispatcher.dispatch(Invocation("console", "#members", "au-abetz", "sign"))
    assert signed.template == "replies/signed.j2" and not signed.wakes_outbox
    # A running bot that polls rarely still delivers a queued post at once.
    out = io.StringIO()
    console = ConsolePlatform(user="coordinator", channel="#members", stdout=out, interactive=False)
    bot = Bot(settings, database, [console], scheduler=False, poll_seconds=600)
    await bot.start()
    try:
        await asyncio.sleep(0.2)  # the deliverer's first pass is over: now it waits
        await console.handle_line("in #staff")
        await console.handle_line("!cosign post interpol-2021")
        deadline = asyncio.get_running_loop().time() + 5
        while "[#staff] 📜" not in out.getvalue():
            assert asyncio.get_running_loop().time() < deadline, out.getvalue()
            await asyncio.sleep(0.05)
    finally:
        await bot.stop()


def test_sigterm_stops_an_interactive_bot_at_once(tmp_path: Path, sqlite_url: str) -> None:
    """Waiting for input must not keep `cosign run` alive after SIGTERM (or Ctrl-C)."""
    import os
    import pty
    import select
    import signal
    import time

    master, slave = pty.openpty()
    env = {
        "COSIGN_DATABASE__URL": sqlite_url,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=tmp_path,
    )
    try:
        seen, deadline = b"", time.monotonic() + 60
        while b"console ready" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 65536)
        assert b"console ready" in seen, seen
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
        os.close(slave)


class PipedConsole:
    """A real `cosign console` process whose stdin stays open: lines go in one at a time, and
    what it prints is read as it appears.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._mark = 0

    async def say(self, *lines: str) -> None:
        """Write lines (stdin stays open); later expect() calls look only at output after this."""
        assert self.process.stdin is not None
        self._mark = len(self.lines)
        self.process.stdin.write("".join(f"{line}\n" for line in lines).encode())
        await self.process.stdin.drain()

    async def expect(self, text: str, *, timeout: float = 20) -> str:
        """The first line since the last say() that contains text, waiting at most timeout."""
        assert self.process.stdout is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for line in self.lines[self._mark :]:
                if text in line:
                    return line
            left = deadline - asyncio.get_running_loop().time()
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), max(left, 0))
            except TimeoutError:
                raise AssertionError(f"no {text!r} within {timeout}s; saw {self.lines}") from None
            if not raw:
                raise AssertionError(f"stdout ended before {text!r}; saw {self.lines}")
            self.lines.append(raw.decode().rstrip("\n"))


async def test_piped_console_handles_each_line_as_it_arrives(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Input stays open while time passes: each line is answered at once, and the reminder and
    the deadline's closing arrive between lines, from the scheduler, before end of input.
    """
    env = {
        "COSIGN_DATABASE__URL": sqlite_url,
        "COSIGN_LETTERS__OUTPUT_DIR": str(tmp_path / "out"),
        "COSIGN_SCHEDULER__TICK_SECONDS": "0.5",
        "COSIGN_SCHEDULER__REMINDERS": '["7s"]',
        "COSIGN_SCHEDULER__DM_REMINDERS": "false",  # 46 direct messages: test_campaigns.py
        "COSIGN_COORDINATORS__ANNOUNCE": '["console:#secretariat"]',
        "PATH": "/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",
    }
    for args in (
        ("roster", "import", str(ROSTER)),
        ("letter", "create", str(LETTER), "--deadline", "+1d"),
    ):
        setup = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            *args,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, setup_errors = await asyncio.wait_for(setup.communicate(), timeout=120)
        assert setup.returncode == 0, setup_errors.decode()
    with (tmp_path / "stderr.log").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "console",
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    console = PipedConsole(process)
    try:
        await console.say("in #members", "!cosign post interpol-2021")
        await console.expect("[#members] 📜 Candidacy")  # delivered by the outbox, input open
        # The deadline a few seconds ahead, so the scheduler's work falls between our lines.
        await console.say("!cosign extend interpol-2021 +14s", "as au-abetz", "!sign")
        assert (await console.expect("You signed")).startswith("[private @au-abetz] ✅")
        await console.expect("[#members] ⏰ Reminder: “Candidacy")
        await console.say("!status")
        assert "(interpol-2021): open," in await console.expect("(interpol-2021)")
        await console.expect("[#members] Signing of “Candidacy", timeout=30)
        compiled = await console.expect("[#secretariat] 📬")
        assert "Candidacy" in compiled
        await console.say("!status interpol-2021")
        # (the copy of the published PDF by direct message also names the letter)
        status = await console.expect("(interpol-2021): closed,")
        assert status.startswith("[private @au-abetz]"), status
        assert process.stdin is not None
        process.stdin.close()
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    errors = (tmp_path / "stderr.log").read_text(encoding="utf-8")
    assert "Traceback" not in errors, errors
