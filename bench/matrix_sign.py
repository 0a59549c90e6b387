"""Matrix `!sign` latency of `cosign run` against a bare nio echo bot (DESIGN.md §7).

Target: median command-to-reply latency of cosign ≤ 1.5 × a bare matrix-nio echo bot measured in
the same run, with cosign configured as in production.

Starts a throwaway Synapse (tests/synapse_server.py) on loopback and two rooms with the same
members. In one, a bare nio bot (sync_forever + a callback that replies with an m.notice, running
in this process) answers `!ping`. In the other, the real `python -m bot run` answers `!sign` and
`!unsign` (real signatures: command worker, transaction, audit event, durable reply): set up with
the CLI as an operator would (`roster import`, `letter create`, `letter post --to matrix:ROOM`),
configured only through COSIGN_* variables and MATRIX_ACCESS_TOKEN / MATRIX_PICKLE_KEY, so
everything else is the default: Matrix encryption on, the live counter at its default interval
editing the letter's post as signatures come in, the scheduler on, commands in the forked command
worker, the console skipped (stdin is not a terminal, as under a service manager).

Before measuring, the bench waits for the letter's post in the room (the bot is up and syncing)
and sends `--warmup` unmeasured commands to each side. Then commands alternate between the rooms,
one at a time, so both see the same load; members sign, and once all have signed they withdraw
(the reply is checked: "You signed" / "withdrawn"). Latency is the reply's `origin_server_ts`
minus the command's (one clock: the homeserver's).

    .venv/bin/python bench/matrix_sign.py [--samples 40] [--members 20] [--warmup 3]

Prints both medians and the ratio; exits 1 when the ratio misses the target, a reply is wrong, or
the bot fails; 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _common import child_pids, clear_proxies, percentile, verdict  # noqa: E402
from nio import AsyncClient, AsyncClientConfig, MatrixRoom, RoomMessageText  # noqa: E402
from synapse_server import RegisteredUser, SynapseServer, unique_localpart  # noqa: E402

TARGET_RATIO = 1.5
SLUG = "interpol-2021"
LETTER_FILE = ROOT / "examples/interpol-2021.md"
ROSTER_HEADER = (
    "member_id,title,given_name,family_name,post_nominals,group,display_name,email,slack_id,"
    "matrix_id,role\n"
)


def reply_target(event: dict[str, Any]) -> str | None:
    rel = event.get("content", {}).get("m.relates_to") or {}
    target = (rel.get("m.in_reply_to") or {}).get("event_id")
    return target if isinstance(target, str) else None


async def measure(
    server: SynapseServer, token: str, room: str, sender: str, body: str
) -> tuple[int, str]:
    """(ms from the command to its reply, homeserver clock; the reply's body)."""
    event_id = await asyncio.to_thread(server.send_text, sender, room, body)
    reply = await server.wait_for_event_async(
        token, room, lambda e: reply_target(e) == event_id, timeout=30, history=20
    )
    command = await asyncio.to_thread(
        server.request, "GET", f"/_matrix/client/v3/rooms/{room}/event/{event_id}", token=token
    )
    latency = int(reply["origin_server_ts"]) - int(command["origin_server_ts"])
    return latency, str(reply.get("content", {}).get("body", ""))


class EchoBot:
    """The baseline: a bare matrix-nio bot answering `!ping` with an m.notice reply."""

    def __init__(self, server: SynapseServer, user: RegisteredUser) -> None:
        self.user = user
        self.client = AsyncClient(
            server.base_url,
            user.user_id,
            device_id=user.device_id,
            config=AsyncClientConfig(encryption_enabled=False),
        )
        self.client.restore_login(user.user_id, user.device_id, user.access_token)
        self.client.add_event_callback(self.on_message, RoomMessageText)  # type: ignore[arg-type]
        self.task: asyncio.Task[None] | None = None

    async def on_message(self, room: MatrixRoom, event: RoomMessageText) -> None:
        if event.sender != self.user.user_id and event.body.startswith("!ping"):
            await self.client.room_send(
                room.room_id,
                "m.room.message",
                {
                    "msgtype": "m.notice",
                    "body": "pong",
                    "m.mentions": {},
                    "m.relates_to": {"m.in_reply_to": {"event_id": event.event_id}},
                },
            )

    async def start(self) -> None:
        await self.client.sync(timeout=0)
        self.task = asyncio.create_task(self.client.sync_forever(timeout=30_000))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.client.close()


def cli(env: dict[str, str], cwd: Path, *args: str) -> None:
    """`python -m bot ARGS`, as an operator runs it; RuntimeError when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cosign {' '.join(args)} exited {done.returncode}:\n{done.stderr}")


class CosignRun:
    """The real `python -m bot run` in a subprocess, logging to a file."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd
        self.log = cwd / "bot.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        with self.log.open("wb") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot", "-v", "run"],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
            )
        deadline = time.monotonic() + timeout
        while "cosign running" not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("`cosign run` did not start:\n" + self.log_text()[-3000:])
            time.sleep(0.2)

    def workers(self) -> int:
        """How many child processes (the command worker) the bot has now."""
        return len(child_pids(self.process.pid)) if self.process is not None else 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM, as a service manager stops it; its exit code."""
        if self.process is None:
            return None
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


async def run(args: argparse.Namespace, work: Path) -> tuple[list[int], list[int], list[str], str]:
    """(echo ms, cosign ms, problems, cosign's log)."""
    server = SynapseServer(work / "synapse")
    await asyncio.to_thread(server.start)
    bot: CosignRun | None = None
    echo: EchoBot | None = None
    problems: list[str] = []
    try:
        owner = server.register_user(unique_localpart("owner"))
        echo_user = server.register_user(unique_localpart("echo"))
        cosign = server.register_user(unique_localpart("cosign"))
        members = [server.register_user(unique_localpart("m")) for _ in range(args.members + 1)]
        warm, members = members[0], members[1:]
        invite = [m.user_id for m in (warm, *members)]
        echo_room = server.create_room(owner.access_token, invite=[*invite, echo_user.user_id])
        sign_room = server.create_room(owner.access_token, invite=[*invite, cosign.user_id])
        for room, bot_user in ((echo_room, echo_user), (sign_room, cosign)):
            server.join(bot_user.access_token, room)
            for m in (warm, *members):
                server.join(m.access_token, room)

        echo = EchoBot(server, echo_user)
        await echo.start()

        # cosign as an operator sets it up: a roster, the letter created and posted to the room.
        rows = "".join(
            f"m{i},,Given,Family{i},MP,Group,,,,{m.user_id},member\n"
            for i, m in enumerate((warm, *members))
        )
        (work / "roster.csv").write_text(ROSTER_HEADER + rows, encoding="utf-8")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
            "NO_PROXY": "127.0.0.1,localhost",
            "COSIGN_DATABASE__URL": f"sqlite:///{work / 'cosign.db'}",
            "COSIGN_LETTERS__OUTPUT_DIR": str(work / "out"),
            "COSIGN_MATRIX__ENABLED": "true",
            "COSIGN_MATRIX__HOMESERVER": server.base_url,
            "COSIGN_MATRIX__USER_ID": cosign.user_id,
            "COSIGN_MATRIX__DEVICE_ID": cosign.device_id,
            "COSIGN_MATRIX__STORE_PATH": str(work / "matrix-store"),
            "MATRIX_ACCESS_TOKEN": cosign.access_token,
            "MATRIX_PICKLE_KEY": "bench-pickle-key",
        }
        for command in (
            ("roster", "import", str(work / "roster.csv")),
            ("letter", "create", str(LETTER_FILE), "--deadline", "+3d"),
            ("letter", "post", SLUG, "--to", f"matrix:{sign_room}"),
        ):
            await asyncio.to_thread(cli, env, work, *command)

        bot = CosignRun(env, work)
        await asyncio.to_thread(bot.start)
        await server.wait_for_event_async(
            owner.access_token,
            sign_room,
            lambda e: e.get("sender") == cosign.user_id and e.get("type") == "m.room.message",
            timeout=60,
        )  # the letter's post: the bot is up and syncing

        for i in range(args.warmup):  # not measured
            await measure(server, owner.access_token, echo_room, warm.access_token, f"!ping w{i}")
            verb = "!sign" if i % 2 == 0 else "!unsign"
            await measure(server, owner.access_token, sign_room, warm.access_token, verb)

        echo_ms: list[int] = []
        sign_ms: list[int] = []
        for i in range(args.samples):
            member = members[i % len(members)]
            latency, _ = await measure(
                server, owner.access_token, echo_room, member.access_token, f"!ping {i}"
            )
            echo_ms.append(latency)
            signing = (i // len(members)) % 2 == 0
            latency, body = await measure(
                server,
                owner.access_token,
                sign_room,
                member.access_token,
                "!sign" if signing else "!unsign",
            )
            sign_ms.append(latency)
            expected = "You signed" if signing else "is withdrawn"
            if expected not in body:
                problems.append(f"sample {i}: expected {expected!r}, got {body[:120]!r}")
        workers = bot.workers()
        if workers < 1:
            problems.append("`cosign run` had no command worker process")
        events = await asyncio.to_thread(server.messages, owner.access_token, sign_room, 1000)
        edits = sum(
            1
            for e in events
            if e.get("sender") == cosign.user_id
            and (e.get("content", {}).get("m.relates_to") or {}).get("rel_type") == "m.replace"
        )
        print(
            f"during the run: {workers} command worker process(es); {edits} live-counter "
            "edit(s) of the letter's post"
        )
        return echo_ms, sign_ms, problems, bot.log_text()
    finally:
        if bot is not None:
            code = await asyncio.to_thread(bot.stop)
            if code not in (0, None):
                problems.append(f"`cosign run` exited {code} on SIGTERM")
        if echo is not None:
            await echo.stop()
        await asyncio.to_thread(server.stop)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=40, help="commands per side (40)")
    parser.add_argument("--members", type=int, default=20, help="members who sign (20)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured commands per side (3)")
    args = parser.parse_args()
    if args.samples < 1 or args.members < 1 or args.warmup < 0:
        parser.error("--samples and --members must be ≥ 1, --warmup ≥ 0")
    clear_proxies()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="cosign-bench-matrix-") as tmp:
        echo_ms, sign_ms, problems, log = asyncio.run(run(args, Path(tmp)))
    platforms = [
        line.split(": ", 1)[-1]
        for line in log.splitlines()
        if "platform" in line and (" started" in line or " skipped" in line)
    ]
    print(f"cosign run: {'; '.join(platforms) or 'no platform log lines'}")
    for line in log.splitlines():
        if " ERROR " in line or "Traceback" in line:
            problems.append(f"cosign log: {line[:200]}")
    print(f"{len(sign_ms)} commands per side, alternating; latency = reply ts - command ts")
    for name, values in (("echo bot", echo_ms), ("cosign", sign_ms)):
        print(
            f"{name:10} median {statistics.median(values):.0f} ms  "
            f"(p90 {percentile(values, 90):.0f} ms, max {max(values)} ms)"
        )
    ratio = statistics.median(sign_ms) / max(1.0, statistics.median(echo_ms))
    print(f"ratio      {ratio:.2f} (target ≤ {TARGET_RATIO})")
    for problem in problems[:20]:
        print(f"  - {problem}")
    ok = ratio <= TARGET_RATIO and not problems
    print(
        f"{verdict(ok)}  Matrix !sign median latency ≤ {TARGET_RATIO} × bare nio echo bot "
        f"({ratio:.2f}, {len(problems)} problem(s))"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
