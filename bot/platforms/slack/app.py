"""The Slack platform on slack-bolt's AsyncApp: HTTP (aiohttp) or Socket Mode.

Translation only. This module holds the app's lifecycle (the HTTP endpoint and /healthz, or the
Socket Mode connection); requests in are `listeners`, messages out are `outbound`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import ConfigError, Settings
from bot.platforms.base import Platform
from bot.platforms.slack.answers import AnswerBook
from bot.platforms.slack.listeners import (
    SlackListeners,
    repair_form_body,
    slash_command_fields,
)
from bot.platforms.slack.outbound import SlackOutbound

if TYPE_CHECKING:
    from bot.runtime import Bot

log = logging.getLogger(__name__)

RATE_LIMIT_RETRIES = 3


class SlackPlatform(SlackListeners, SlackOutbound, Platform):
    name = "slack"
    command_prefix = "/"
    live_counter = True
    counter_interval = 3.0

    def __init__(
        self,
        settings: Settings,
        *,
        bot_token: str | None = None,
        signing_secret: str | None = None,
        app_token: str | None = None,
    ) -> None:
        secrets = settings.secrets
        self.settings = settings
        self.config = settings.slack
        self.bot_token = bot_token or _secret(secrets.slack_bot_token)
        self.signing_secret = signing_secret or _secret(secrets.slack_signing_secret)
        self.app_token = app_token or _secret(secrets.slack_app_token)
        if not self.bot_token:
            raise ConfigError("slack: SLACK_BOT_TOKEN is not set (needed with slack.enabled)")
        if self.config.mode == "http" and not self.signing_secret:
            raise ConfigError(
                "slack: SLACK_SIGNING_SECRET is not set (needed with slack.mode=http)"
            )
        if self.config.mode == "socket" and not self.app_token:
            raise ConfigError("slack: SLACK_APP_TOKEN is not set (needed with slack.mode=socket)")
        self._bot: Bot | None = None
        self.app: AsyncApp | None = None
        self.client: AsyncWebClient | None = None
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        # The check Bolt's request verification makes (v0 HMAC, timestamp within 5 minutes)
        self._verifier = (
            SignatureVerifier(self.signing_secret)
            if self.config.mode == "http" and self.signing_secret
            else None
        )
        self.port: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._answers: AnswerBook | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, bot: Bot) -> None:
        self._bot = bot
        client_args: dict[str, Any] = {
            "token": self.bot_token,
            "retry_handlers": [
                AsyncConnectionErrorRetryHandler(max_retry_count=2),
                AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            ],
        }
        if self.config.api_url:
            client_args["base_url"] = self.config.api_url
        self.client = AsyncWebClient(**client_args)
        self.app = AsyncApp(
            client=self.client,
            signing_secret=self.signing_secret or "socket-mode-does-not-sign",
            request_verification_enabled=self.config.mode == "http",
            ignoring_self_events_enabled=True,
            raise_error_for_unhandled_request=False,
            # The listener decides when to acknowledge, and with what: a slash command's answer
            # goes in its acknowledgement. (Otherwise Bolt polls every 10 ms for the ack.)
            process_before_response=True,
        )
        self._http = aiohttp.ClientSession()
        self._answers = AnswerBook(bot, self.deliver_owed)
        self._answers.start()
        self._register(self.app)
        if self.config.mode == "http":
            await self._start_http()
        else:
            self._socket = AsyncSocketModeHandler(self.app, app_token=self.app_token)
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
            log.info("slack: connected in Socket Mode")

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._answers is not None:
            await self._answers.stop()
            self._answers = None
        if self.client is not None and self.client.session is not None:
            await self.client.session.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._bot = None

    async def _start_http(self) -> None:
        web_app = web.Application(client_max_size=1024 * 1024)
        web_app.router.add_post(self.config.path, self._http_endpoint)
        web_app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        log.info(
            "slack: listening on http://%s:%s%s", self.config.host, self.port, self.config.path
        )

    async def _http_endpoint(self, request: web.Request) -> web.Response:
        """Slack's requests: a correctly signed slash command is answered directly (the hot
        path: `answer_slash_command`); everything else, and any request whose signature does
        not verify (Bolt answers it 401), goes through Bolt's dispatch."""
        assert self.app is not None
        raw = await request.text()
        fields = slash_command_fields(raw, request.headers.get("Content-Type", ""))
        if fields is not None and self._verifier is not None and self._verifier.is_valid(
            raw,
            request.headers.get("X-Slack-Request-Timestamp", "0"),
            request.headers.get("X-Slack-Signature", ""),
        ):
            return await to_aiohttp_response(await self.answer_slash_command(fields))
        bolt_request = AsyncBoltRequest(
            body=raw,
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
        )
        repair_form_body(bolt_request)
        response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(response)

    async def _healthz(self, request: web.Request) -> web.Response:
        assert self._bot is not None
        database = "ok"
        try:
            await asyncio.to_thread(self._ping_database)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            database = f"unavailable: {exc.__class__.__name__}"
        body = {"database": database, "platforms": sorted(self._bot.running_platforms)}
        return web.json_response(body, status=200)

    def _ping_database(self) -> None:
        assert self._bot is not None
        self._bot.database.ping()


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None
