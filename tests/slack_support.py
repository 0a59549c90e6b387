"""A running cosign bot (HTTP mode) wired to the fake Slack Web API, and a signed-request client."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from conftest import make_settings
from fakeslack import DEFAULT_SECRET, FakeSlack, sign_request

from bot.db import Database
from bot.platforms.slack import SlackPlatform
from bot.platforms.slack.manifest import manifest
from bot.roster import import_roster
from bot.runtime import Bot

ROSTER = (
    "member_id,title,given_name,family_name,post_nominals,group,slack_id,email,role\n"
    "au-abetz,Senator,Eric,Abetz,,Australia,UABETZ,,member\n"
    "uk-alton,Lord,(David),Alton,,United Kingdom,UALTON,,member\n"
    "evil,,<!channel> <@UABETZ>,<script>@room,,<!here> Land,UEVIL,,member\n"
    "mailme,,Mail,Matched,MP,Ireland,,mail@example.org,member\n"
    "coord,,Co,Ordinator,,,UCOORD,,coordinator\n"
)


def burst_roster(n: int) -> str:
    """A roster of n members with Slack ids UB0000…, for bursts."""
    rows = [f"m{i:03d},Member,Number{i:03d},MP,Group {i % 7},UB{i:04d},,member" for i in range(n)]
    header = "member_id,given_name,family_name,post_nominals,group,slack_id,email,role\n"
    return header + "\n".join(rows) + "\n"


class SlackHarness:
    def __init__(
        self,
        db_url: str,
        tmp_path: Path,
        *,
        roster: str = ROSTER,
        scheduler: bool = False,
        **slack: Any,
    ) -> None:
        self.fake = FakeSlack()
        self.db_url = db_url
        self.tmp_path = tmp_path
        self.roster = roster
        self.scheduler = scheduler
        self.slack_options = slack
        self.http: aiohttp.ClientSession | None = None
        self.inline: dict[str, list[dict[str, Any]]] = {}  # answers carried by acknowledgements

    async def __aenter__(self) -> SlackHarness:
        await self.fake.start()
        options = {
            "enabled": True,
            "mode": "http",
            "host": "127.0.0.1",
            "port": 0,
            "api_url": self.fake.api_url,
            **self.slack_options,
        }
        self.settings = make_settings(
            self.db_url,
            self.tmp_path,
            slack=options,
            coordinators={"slack": ["UADMIN"], "announce": ["slack:CANNOUNCE"]},
        )
        # The app as a workspace admin installs it: exactly the scopes and App Home settings the
        # printed manifest declares, so a scope the code needs and the manifest lacks fails here.
        self.fake.install(manifest(self.settings.slack))
        self.database = Database(self.settings.database.url)
        with self.database.session() as session:
            import_roster(session, data=self.roster, actor="test")
        self.platform = SlackPlatform(
            self.settings, bot_token=self.fake.token, signing_secret=DEFAULT_SECRET
        )
        self.bot = Bot(
            self.settings,
            self.database,
            [self.platform],
            scheduler=self.scheduler,
            poll_seconds=0.05,
        )
        await self.bot.start()
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()
        await self.bot.stop()
        await self.fake.stop()
        self.database.dispose()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.platform.port}{self.settings.slack.path}"

    async def post(
        self,
        body: bytes,
        *,
        content_type: str = "application/x-www-form-urlencoded",
        headers: dict[str, str] | None = None,
        secret: str = DEFAULT_SECRET,
        timestamp: int | None = None,
    ) -> tuple[int, str, float]:
        """POST as Slack does; returns (status, body, seconds until the ack)."""
        assert self.http is not None
        signed = sign_request(secret, body, timestamp)
        all_headers = {"Content-Type": content_type, **signed, **(headers or {})}
        started = time.monotonic()
        async with self.http.post(self.url, data=body, headers=all_headers) as response:
            text = await response.text()
            self._keep_inline(body, response.status, text)
            return response.status, text, time.monotonic() - started

    def _keep_inline(self, body: bytes, status: int, text: str) -> None:
        """A slash command answered in its acknowledgement: Slack shows that body as the reply."""
        answer = inline_answer(status, text)
        if answer is None:
            return
        fields = dict(parse_qsl(body.decode("utf-8", "replace")))
        token = fields.get("response_url", "").rsplit("/", 1)[-1]
        if token:
            self.inline.setdefault(token, []).append(answer)

    async def replies(
        self, token: str, count: int = 1, timeout: float = 10
    ) -> list[dict[str, Any]]:
        """What the bot answered one request with: in its acknowledgement, then at its
        response_url (parsed), in that order."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = [c for c in self.fake.calls_to("response_url") if c.path.endswith(token)]
            answers = [*self.inline.get(token, []), *(c.args for c in calls)]
            if len(answers) >= count:
                return answers
            await asyncio.sleep(0.02)
        raise AssertionError(
            f"expected {count} replies at {token}, got "
            f"{[c.args for c in self.fake.calls_to('response_url')]}"
        )

    async def settle(self) -> None:
        """Let the outbox and the live counter finish their work."""
        await self.bot.drain(platforms=["slack"], timeout=20)
        await self.platform_counter_pass()

    async def platform_counter_pass(self) -> None:
        from bot.counters import CounterSync

        await CounterSync(self.bot, self.platform).sync_once()


def inline_answer(status: int, text: str) -> dict[str, Any] | None:
    """The message an acknowledgement carries (Slack's immediate response), or None."""
    if status != 200 or not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return {"text": text}
    if isinstance(data, dict) and (data.get("text") or data.get("blocks")):
        return data
    return None


def reply_text(args: dict[str, Any]) -> str:
    """All text a user would see in a respond() payload (fallback + blocks)."""
    parts = [str(args.get("text", ""))]
    blocks = args.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    for block in blocks or []:
        text = block.get("text") or {}
        parts.append(str(text.get("text", "")))
    return "\n".join(parts)
