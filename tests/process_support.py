"""Running `python -m bot run` as a real process, the way a service manager would."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
from fakeslack import DEFAULT_SECRET, FakeSlack, sign_request, slash_command_body
from slack_support import inline_answer, reply_text
from sqlmodel import select

from bot.db import Database
from bot.models import OutboxMessage, Signature

ROOT = Path(__file__).resolve().parent.parent


def bot_env(**overrides: str) -> dict[str, str]:
    """A clean environment: no proxies, console off (stdin is not a terminal anyway)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
        "COSIGN_CONSOLE__ENABLED": "false",
    }
    env.update(overrides)
    return env


def slack_bot_env(
    db_url: str, port: int, fake: FakeSlack, out: Path, **overrides: str
) -> dict[str, str]:
    """bot_env for `cosign run` serving Slack over HTTP on port, against the fake Web API."""
    return bot_env(
        COSIGN_DATABASE__URL=db_url,
        COSIGN_LETTERS__OUTPUT_DIR=str(out),
        COSIGN_SLACK__ENABLED="true",
        COSIGN_SLACK__MODE="http",
        COSIGN_SLACK__PORT=str(port),
        COSIGN_SLACK__API_URL=fake.api_url,
        SLACK_BOT_TOKEN=fake.token,
        SLACK_SIGNING_SECRET=DEFAULT_SECRET,
        **overrides,
    )


async def spawn_bot(env: dict[str, str], cwd: Path, log: Path) -> asyncio.subprocess.Process:
    handle = log.open("ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "-v",
        "run",
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=handle,
        stderr=handle,
    )
    handle.close()
    return process


async def stop_bot(process: asyncio.subprocess.Process, *, kill: bool = False) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), timeout=30)


async def wait_healthy(http: aiohttp.ClientSession, port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the bot did not come up")


class SlashBurst:
    """Signed `/sign` requests, a bounded number in flight; none are sent once `killed` is set."""

    def __init__(self, http: aiohttp.ClientSession, url: str, fake: FakeSlack, in_flight: int):
        self.http, self.url, self.fake = http, url, fake
        self.gate = asyncio.Semaphore(in_flight)
        self.killed = asyncio.Event()
        self.inline: dict[str, list[str]] = {}  # answers carried by the acknowledgement
        self.acked: set[str] = set()  # requests that got an HTTP 200

    async def sign(self, user: str, attempt: str) -> None:
        body = slash_command_body(
            "/sign", "", user, response_url=self.fake.response_url(f"{user}-{attempt}")
        )
        async with self.gate:
            if self.killed.is_set():
                return
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                **sign_request(DEFAULT_SECRET, body),
            }
            key = f"{user}-{attempt}"
            try:
                async with self.http.post(self.url, data=body, headers=headers) as response:
                    text = await response.text()
                    if response.status == 200:
                        self.acked.add(key)
                    answer = inline_answer(response.status, text)
                    if answer is not None:
                        self.inline.setdefault(key, []).append(reply_text(answer))
            except aiohttp.ClientError:
                pass  # the bot died under this request: never acknowledged


def undelivered(database: Database) -> int:
    with database.session() as session:
        rows = session.exec(select(OutboxMessage)).all()
        return sum(m.delivered_at is None for m in rows)


def slack_replies(fake: FakeSlack, burst: SlashBurst | None = None) -> dict[str, list[str]]:
    """Answers received per `/sign` request, keyed "<user>-<attempt>" (see SlashBurst.sign): in
    the acknowledgement (when the burst is given), then at the request's response_url."""
    inline = burst.inline if burst is not None else {}
    seen: dict[str, list[str]] = {key: list(texts) for key, texts in inline.items()}
    for call in fake.calls_to("response_url"):
        seen.setdefault(call.path.rsplit("/", 1)[-1], []).append(reply_text(call.args))
    return seen


def signed_ids(database: Database, platform: str) -> set[str]:
    """Platform user ids with an active signature: what is committed right now (after a kill,
    what the killed bot had committed)."""
    with database.session() as session:
        rows = session.exec(select(Signature).where(Signature.via_platform == platform)).all()
        return {r.via_external_id for r in rows if r.withdrawn_at is None}
