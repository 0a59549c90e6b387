"""`[slack].match_email`: link an unknown Slack account to the roster member with its e-mail.

Only a Slack account of the workspace the app is installed in, with a confirmed e-mail, is linked,
and only to an active roster `member` (never a coordinator) with no Slack account yet: a Slack
Connect guest, or any workspace that controls its own directory, can claim any address. Misses are
remembered for a while, so an unknown account cannot make every one of its commands call
users.info and read the roster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import publishing
from bot.db import Database

log = logging.getLogger(__name__)

MISS_SECONDS = 600.0  # an account that did not match is asked again after this long
MISS_ENTRIES = 10_000  # the oldest misses are forgotten beyond this many


class EmailMatcher:
    def __init__(self, client: AsyncWebClient, database: Database, platform: str) -> None:
        self.client = client
        self.database = database
        self.platform = platform
        self._team_id: str | None = None
        self._misses: OrderedDict[str, float] = OrderedDict()

    async def link(self, user: str) -> bool:
        """True when `user` was linked now; False when known already, or not linkable."""
        if self._missed_recently(user):
            return False
        known = await asyncio.to_thread(
            publishing.member_label, self.database, platform=self.platform, external_id=user
        )
        if known is not None:
            return False
        email = await self._confirmed_email(user)
        linked = bool(email) and await asyncio.to_thread(
            publishing.link_by_email,
            self.database,
            platform=self.platform,
            external_id=user,
            email=email,
        )
        if linked:
            log.info("slack: linked %s by roster e-mail", user)
        else:
            self._remember_miss(user)
        return linked

    async def _confirmed_email(self, user: str) -> str:
        """The account's e-mail if it belongs to our workspace and Slack confirmed it, else ""."""
        try:
            team = await self._installed_team()
            info = await self.client.users_info(user=user)
        except SlackApiError as exc:
            log.warning("slack: users.info for %s failed: %s", user, exc.response.get("error"))
            return ""
        account: dict[str, Any] = info.get("user") or {}
        if (
            account.get("team_id") != team
            or account.get("deleted")
            or account.get("is_bot")
            or account.get("is_stranger")
            or account.get("is_email_confirmed") is not True
        ):
            log.info("slack: %s not matched by e-mail: not a confirmed user of %s", user, team)
            return ""
        return str((account.get("profile") or {}).get("email") or "")

    async def _installed_team(self) -> str:
        if self._team_id is None:
            response = await self.client.auth_test()
            self._team_id = str(response.get("team_id") or "")
        return self._team_id

    def _missed_recently(self, user: str) -> bool:
        at = self._misses.get(user)
        if at is None:
            return False
        if time.monotonic() - at < MISS_SECONDS:
            return True
        del self._misses[user]
        return False

    def _remember_miss(self, user: str) -> None:
        self._misses[user] = time.monotonic()
        self._misses.move_to_end(user)
        while len(self._misses) > MISS_ENTRIES:
            self._misses.popitem(last=False)
