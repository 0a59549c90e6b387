"""Helpers for the Matrix adapter tests: a bot account, member accounts, a roster, the running bot.

Everything runs against the real Synapse of ``tests/synapse_server.py``; no HTTP is mocked. Each
test registers fresh accounts (unique localparts), so tests sharing the session server never see
each other's rooms or events.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import make_settings
from synapse_server import RegisteredUser, SynapseServer, unique_localpart

from bot.config import Settings
from bot.db import Database
from bot.platforms.matrix import MatrixPlatform
from bot.roster import COLUMNS, import_roster
from bot.runtime import Bot

PICKLE_KEY = "test-pickle-key"
ROSTER_HEADER = list(COLUMNS)  # the import format, as bot.roster defines it

Event = dict[str, Any]


@dataclass
class Member:
    member_id: str
    user: RegisteredUser
    family_name: str
    group: str = "Australia"
    display_name: str = ""
    role: str = "member"


@dataclass
class MatrixWorld:
    """One test's accounts and room on the shared homeserver."""

    server: SynapseServer
    tmp_path: Path
    bot: RegisteredUser
    owner: RegisteredUser  # creates rooms; a coordinator
    members: list[Member] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)

    def settings(self, db_url: str, **matrix: Any) -> Settings:
        values: dict[str, Any] = {
            "enabled": True,
            "homeserver": self.server.base_url,
            "user_id": self.bot.user_id,
            "device_id": self.bot.device_id,
            "store_path": str(self.tmp_path / "matrix-store"),
            "encryption": False,
            "allowed_inviters": [self.owner.user_id],
        }
        values.update(matrix)
        return make_settings(
            db_url,
            self.tmp_path,
            matrix=values,
            coordinators={"matrix": [self.owner.user_id], "announce": []},
        )

    def platform(self, settings: Settings, **kwargs: Any) -> MatrixPlatform:
        options: dict[str, Any] = {
            "access_token": self.bot.access_token,
            "pickle_key": PICKLE_KEY,
            "counter_interval": 0.5,
            "reconnect_max": 1.0,
        }
        options.update(kwargs)
        return MatrixPlatform(settings, **options)

    def password_platform(
        self, settings: Settings, password: str | None = None, **kwargs: Any
    ) -> MatrixPlatform:
        """The bot logging in with its password (which also lets it set up cross-signing)."""
        return self.platform(
            settings, access_token=None, password=password or self.bot.password, **kwargs
        )

    def keys_of(self, user_id: str) -> Event:
        """``/keys/query`` for ``user_id`` as another user (the owner) sees it."""
        return self.server.request(
            "POST",
            "/_matrix/client/v3/keys/query",
            token=self.owner.access_token,
            body={"device_keys": {user_id: []}},
        )

    def add_members(self, count: int, prefix: str = "m") -> list[Member]:
        added = []
        for _ in range(count):
            localpart = unique_localpart(prefix)
            user = self.server.register_user(localpart)
            member = Member(localpart, user, family_name=f"Family{len(self.members)}")
            self.members.append(member)
            added.append(member)
        return added

    def roster_csv(self, extra: Iterable[Member] = ()) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(ROSTER_HEADER)
        for m in [*self.members, *extra]:
            writer.writerow(
                [
                    m.member_id,
                    "",
                    "Given",
                    m.family_name,
                    "MP",
                    m.group,
                    m.display_name,
                    "",
                    "",
                    m.user.user_id,
                    m.role,
                ]
            )
        return out.getvalue()

    def import_roster(self, database: Database) -> None:
        with database.session() as session:
            import_roster(session, data=self.roster_csv(), actor="test")

    def room(self, *, encrypted: bool = False, join_bot: bool = True) -> str:
        """A room owned by `owner`, with every member (and the bot) joined."""
        invite = [m.user.user_id for m in self.members]
        if join_bot:
            invite.append(self.bot.user_id)
        room_id = self.server.create_room(
            self.owner.access_token, name="members", invite=invite, encrypted=encrypted
        )
        for m in self.members:
            self.server.join(m.user.access_token, room_id)
        if join_bot:
            self.server.join(self.bot.access_token, room_id)
        self.rooms.append(room_id)
        return room_id

    # --- talking -------------------------------------------------------------------------

    def say(
        self,
        user: RegisteredUser,
        room_id: str,
        body: str,
        *,
        msgtype: str = "m.text",
        extra: dict[str, Any] | None = None,
    ) -> str:
        return self.server.send_text(user.access_token, room_id, body, msgtype, extra)

    def bot_events(self, room_id: str, limit: int = 200) -> list[Event]:
        return [
            e
            for e in self.server.messages(self.owner.access_token, room_id, limit=limit)
            if e.get("sender") == self.bot.user_id and e.get("type") == "m.room.message"
        ]

    def event(self, room_id: str, event_id: str) -> Event:
        path = f"/_matrix/client/v3/rooms/{room_id}/event/{event_id}"
        return self.server.request("GET", path, token=self.owner.access_token)

    def replies_to(self, room_id: str, event_id: str, limit: int = 200) -> list[Event]:
        return [e for e in self.bot_events(room_id, limit) if reply_target(e) == event_id]

    async def wait_reply(self, room_id: str, event_id: str, timeout: float = 15.0) -> Event:
        return await self.server.wait_for_event_async(
            self.owner.access_token,
            room_id,
            lambda e: e.get("sender") == self.bot.user_id and reply_target(e) == event_id,
            timeout=timeout,
            history=100,
        )

    async def wait_bot_event(
        self, room_id: str, predicate: Callable[[Event], bool], timeout: float = 15.0
    ) -> Event:
        return await self.server.wait_for_event_async(
            self.owner.access_token,
            room_id,
            lambda e: e.get("sender") == self.bot.user_id and predicate(e),
            timeout=timeout,
            history=100,
        )

    async def wait_letter_post(self, room_id: str, timeout: float = 15.0) -> Event:
        return await self.wait_bot_event(
            room_id,
            lambda e: (
                e.get("content", {}).get("body", "").startswith("📜")
                and "m.new_content" not in e.get("content", {})
            ),
            timeout,
        )

    def download(self, mxc: str) -> bytes:
        server_name, media_id = mxc[len("mxc://") :].split("/", 1)
        url = f"{self.server.base_url}/_matrix/client/v1/media/download/{server_name}/{media_id}"
        request = urllib.request.Request(url)
        request.add_header("Authorization", f"Bearer {self.owner.access_token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            return bytes(response.read())


def reply_target(event: Event) -> str | None:
    rel = event.get("content", {}).get("m.relates_to") or {}
    target = (rel.get("m.in_reply_to") or {}).get("event_id")
    return target if isinstance(target, str) else None


def new_world(server: SynapseServer, tmp_path: Path) -> MatrixWorld:
    bot = server.register_user(unique_localpart("cosign"), displayname="cosign")
    owner = server.register_user(unique_localpart("coord"), displayname="Coordinator")
    return MatrixWorld(server, tmp_path, bot, owner)


@asynccontextmanager
async def running(
    settings: Settings, database: Database, platform: MatrixPlatform, *, scheduler: bool = False
) -> AsyncIterator[Bot]:
    bot = Bot(settings, database, [platform], scheduler=scheduler, poll_seconds=0.05)
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()


async def eventually(
    check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll `check` (run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(interval)
