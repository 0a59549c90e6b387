"""The Slack platform on slack-bolt's AsyncApp: HTTP (aiohttp) or Socket Mode.

Translation only: slash commands, buttons and app mentions become Invocations; Replies are rendered
as mrkdwn sections; outbox messages become chat.postMessage / files_upload_v2 calls; the live
counter edits posts with chat.update. Slack failures stay here as Delivery values.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from sqlalchemy import text as sql_text

from bot import publishing
from bot.config import ConfigError, Settings
from bot.core import Invocation, Reply, apology
from bot.models import OutboxMessage
from bot.platforms import slack_blocks as kit
from bot.platforms.base import Delivery, Platform, render_message, render_reply
from bot.publishing import PostView
from bot.store import events
from bot.templating import escape_mrkdwn
from bot.timeutil import format_utc

if TYPE_CHECKING:
    from bot.runtime import Bot

log = logging.getLogger(__name__)

COMMANDS = ("sign", "unsign", "status", "letters", "cosign")
PERMANENT_ERRORS = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "msg_too_long",
    "invalid_blocks",
    "no_text",
    "message_not_found",
    "edit_window_closed",
    "cant_update_message",
    "restricted_action",
    "token_revoked",
    "missing_scope",
    "invalid_arguments",
}
RATE_LIMIT_RETRIES = 3
# A reply waits at most this long for requests being acknowledged (SlackPlatform._acks_first).
ACKS_FIRST_SECONDS = 1.0
# ...and requests count as still coming until none has arrived for this long (a burst's requests
# come well under a millisecond apart; one user's command waits a few ms at most).
ACKS_QUIET_SECONDS = 0.01
_MENTION = re.compile(r"^\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>\s*")

Respond = Callable[..., Awaitable[Any]]


def split_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


class SlackPlatform(Platform):
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
        self.port: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._acking = 0  # requests received and not yet answered (acknowledged)
        self._last_request = 0.0  # loop time of the latest request's arrival
        self._quiet = asyncio.Event()  # set: no request in flight or arriving
        self._quiet.set()
        self._quiet_check: asyncio.TimerHandle | None = None

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
        )
        self._http = aiohttp.ClientSession()
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
        assert self.app is not None
        self._acking += 1
        self._last_request = asyncio.get_running_loop().time()
        self._quiet.clear()
        try:
            raw = await request.text()
            bolt_request = AsyncBoltRequest(
                body=raw,
                query=request.query_string,
                headers=request.headers,  # type: ignore[arg-type]
            )
            _repair_form_body(bolt_request)
            response = await self.app.async_dispatch(bolt_request)
            return await to_aiohttp_response(response)
        finally:
            self._acking -= 1
            self._check_quiet()

    async def _acks_first(self) -> None:
        """Let requests being acknowledged go first, for at most ACKS_FIRST_SECONDS.

        Slack gives an acknowledgement 3 s, after which the user sees an error; a reply through
        response_url may come any time in 30 minutes. Under a burst, sending replies competed
        with acknowledging for this process: acks came at half a bare Bolt app's rate
        (bench/slack_sign.py). The command's work is already done and committed by now.
        """
        if not self._quiet.is_set():
            try:
                await asyncio.wait_for(self._quiet.wait(), ACKS_FIRST_SECONDS)
            except TimeoutError:
                pass

    def _check_quiet(self) -> None:
        """Set _quiet once nothing is in flight and nothing arrived for ACKS_QUIET_SECONDS."""
        self._quiet_check = None
        if self._acking or self._quiet.is_set():
            return
        loop = asyncio.get_running_loop()
        remaining = self._last_request + ACKS_QUIET_SECONDS - loop.time()
        if remaining <= 0:
            self._quiet.set()
        elif self._quiet_check is None:
            self._quiet_check = loop.call_later(remaining, self._check_quiet)

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
        with self._bot.database.engine.connect() as conn:
            conn.execute(sql_text("SELECT 1"))

    # --- inbound -----------------------------------------------------------------------------

    def _register(self, app: AsyncApp) -> None:
        app.command(re.compile(r"^/"))(self._on_command)  # unknown ones get "Unknown command"
        app.action(kit.SIGN_ACTION)(self._on_sign_button)
        app.action(kit.CONFIRM_ACTION)(self._on_confirm)
        app.action(kit.WITHDRAW_ACTION)(self._on_withdraw_button)
        app.action(kit.CANCEL_ACTION)(self._on_cancel)
        app.action(re.compile(".*"))(self._on_unknown_action)  # registered last: a fallback
        app.event("app_mention")(self._on_mention)
        app.error(self._on_error)

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error(
            "slack: unhandled error for %s", body.get("type") or body.get("command"), exc_info=error
        )

    async def _on_command(
        self, ack: Callable[..., Awaitable[None]], command: dict[str, Any]
    ) -> None:
        await ack()  # inside Slack's 3 s, before any database work
        respond = self._responder(command.get("response_url", ""))
        invocation = Invocation(
            platform=self.name,
            channel=command.get("channel_id", ""),
            user=command.get("user_id", ""),
            command=command.get("command", "/").lstrip("/"),
            args=split_args(command.get("text", "")),
            event_id=command.get("trigger_id", ""),
            display_name=command.get("user_name", ""),
        )
        await self._run(invocation, respond)

    def _responder(self, response_url: str) -> Respond:
        """Answers through response_url on the platform's one HTTP session.

        Bolt's own `respond` opens a new session and connection per reply: under a burst of
        slash commands that was ~45 % of the event loop's time (bench/slack_sign.py, py-spy).
        """
        client = AsyncWebhookClient(url=response_url, session=self._http)

        async def respond(
            text: str = "",
            blocks: list[Any] | None = None,
            response_type: str | None = None,
            replace_original: bool | None = None,
            **_: Any,
        ) -> None:
            response = await client.send(
                text=text,
                blocks=blocks,
                response_type=response_type,
                replace_original=replace_original,
            )
            if response.status_code != 200:
                log.warning(
                    "slack: response_url answered %s: %s",
                    response.status_code,
                    str(response.body)[:200],
                )

        return respond

    async def _run(
        self, invocation: Invocation, respond: Respond, *, replace: bool = False
    ) -> None:
        assert self._bot is not None
        try:
            await self._link_by_email(invocation.user)
            replies = await self._bot.handle(invocation)
        except Exception as exc:  # noqa: BLE001 - answered with an error id, logged once
            replies = [apology(invocation, exc)]
        for reply in replies:
            await self._respond(reply, invocation, respond, replace=replace)

    async def _respond(
        self, reply: Reply, invocation: Invocation, respond: Respond, *, replace: bool = False
    ) -> None:
        await self._acks_first()
        text = render_reply(reply, "mrkdwn")
        blocks = kit.text_blocks(text)
        kind = "in_channel" if reply.visibility == "public" else "ephemeral"
        if blocks is None:
            await self._send_long_reply(text, invocation, respond)
            return
        try:
            await respond(
                text=kit.fallback(text), blocks=blocks, response_type=kind, replace_original=replace
            )
        except Exception:
            log.exception("slack: could not answer %s from %s", invocation.command, invocation.user)

    async def _send_long_reply(self, text: str, invocation: Invocation, respond: Respond) -> None:
        """Too long for one message: a DM with the whole reply as a file, and a pointer."""
        assert self.client is not None
        try:
            opened = await self.client.conversations_open(users=invocation.user)
            channel = opened["channel"]["id"]
            await self.client.files_upload_v2(
                channel=channel,
                content=text,
                filename=f"cosign-{invocation.command}.txt",
                title=f"cosign {invocation.command}",
            )
            note = "The answer is long, so I sent it to you as a file in a direct message."
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack: long reply as a file failed: %s", exc)
            note = (
                "The answer is too long for Slack; use `cosign status SLUG --json` or "
                "`cosign compile` on the command line."
            )
        await respond(text=note, response_type="ephemeral")

    async def _link_by_email(self, user: str) -> None:
        if not self.config.match_email or self._bot is None or self.client is None:
            return
        database = self._bot.database
        known = await asyncio.to_thread(
            publishing.member_label, database, platform=self.name, external_id=user
        )
        if known is not None:
            return
        try:
            info = await self.client.users_info(user=user)
        except SlackApiError as exc:
            log.warning("slack: users.info for %s failed: %s", user, exc.response.get("error"))
            return
        email = ((info.get("user") or {}).get("profile") or {}).get("email") or ""
        if await asyncio.to_thread(
            publishing.link_by_email, database, platform=self.name, external_id=user, email=email
        ):
            log.info("slack: linked %s by roster e-mail", user)

    async def _on_sign_button(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]
    ) -> None:
        """Sign opens a confirmation naming the member; nothing is recorded until Confirm."""
        await ack()
        respond = self._responder(body.get("response_url", ""))
        assert self._bot is not None
        slug = _action_value(body)
        user = (body.get("user") or {}).get("id", "")
        await self._link_by_email(user)
        label = await asyncio.to_thread(
            publishing.member_label, self._bot.database, platform=self.name, external_id=user
        )
        if label is None:  # unknown account: the sign handler records the pending request
            await self._run(self._button_invocation(body, "sign", slug), respond)
            return
        post = await asyncio.to_thread(
            publishing.letter_post,
            self._bot.database,
            slug=slug,
            platform=self.name,
            channel=_channel(body),
        )
        title = post.letter.title if post else slug
        blocks = kit.confirm_blocks(slug, label, title)
        await respond(
            text=escape_mrkdwn(f"Sign “{title}” as {label}?"),
            blocks=blocks,
            response_type="ephemeral",
            replace_original=False,
        )

    async def _on_confirm(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        respond = self._responder(body.get("response_url", ""))
        invocation = self._button_invocation(body, "sign", _action_value(body))
        await self._run(invocation, respond, replace=True)

    async def _on_withdraw_button(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]
    ) -> None:
        await ack()
        respond = self._responder(body.get("response_url", ""))
        await self._run(self._button_invocation(body, "unsign", _action_value(body)), respond)

    async def _on_cancel(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        respond = self._responder(body.get("response_url", ""))
        await respond(
            text="Cancelled; nothing was signed.", response_type="ephemeral", replace_original=True
        )

    async def _on_unknown_action(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]
    ) -> None:
        await ack()
        log.warning("slack: ignored unknown action %s", _action_id(body))

    def _button_invocation(self, body: dict[str, Any], command: str, slug: str) -> Invocation:
        user = body.get("user") or {}
        return Invocation(
            platform=self.name,
            channel=_channel(body),
            user=user.get("id", ""),
            command=command,
            args=[slug] if slug else [],
            thread=((body.get("container") or {}).get("message_ts")),
            event_id=body.get("trigger_id", ""),
            display_name=user.get("username") or user.get("name") or "",
        )

    async def _on_mention(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any], event: dict[str, Any]
    ) -> None:
        """`@cosign sign` in a channel or in a letter's thread; Slack retries are handled once."""
        await ack()
        assert self._bot is not None and self.client is not None
        event_id = body.get("event_id", "")
        fresh = await asyncio.to_thread(self._claim_event, event_id)
        if not fresh:
            log.info("slack: event %s already handled (retry)", event_id)
            return
        words = split_args(_MENTION.sub("", event.get("text", ""), count=1))
        if not words or words[0].lower().lstrip("/!") not in COMMANDS:
            words = ["help"]
        channel, user = event.get("channel", ""), event.get("user", "")
        thread = event.get("thread_ts")
        invocation = Invocation(
            platform=self.name,
            channel=channel,
            user=user,
            command=words[0].lower().lstrip("/!"),
            args=words[1:],
            thread=thread,
            event_id=event_id,
        )

        async def respond(text: str, blocks: list[Any] | None = None, **_: Any) -> None:
            assert self.client is not None
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, blocks=blocks, thread_ts=thread
            )

        await self._run(invocation, respond)

    def _claim_event(self, event_id: str) -> bool:
        assert self._bot is not None
        if not event_id:
            return True
        with self._bot.database.session() as session:
            return events.mark_handled(session, platform=self.name, event_id=event_id)

    # --- outbound ----------------------------------------------------------------------------

    async def deliver(self, message: OutboxMessage) -> Delivery:
        assert self._bot is not None and self.client is not None
        try:
            if message.kind == "post_letter":
                return await self._post_letter(message)
            if message.kind == "message":
                payload = message.payload
                text = render_message(self, payload, "mrkdwn")
                blocks = kit.text_blocks(text)
                response = await self.client.chat_postMessage(
                    channel=message.channel, text=kit.fallback(text), blocks=blocks
                )
                return Delivery.sent(ts=response.get("ts"))
            if message.kind == "compiled":
                return await self._post_compiled(message)
            return Delivery.failed(f"unknown outbox kind {message.kind!r}", permanent=True)
        except SlackApiError as exc:
            return _failure(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Delivery.failed(f"{exc.__class__.__name__}: {exc}")

    async def _post_letter(self, message: OutboxMessage) -> Delivery:
        assert self._bot is not None and self.client is not None
        database = self._bot.database
        post = await asyncio.to_thread(
            publishing.letter_post,
            database,
            slug=message.payload["slug"],
            platform=self.name,
            channel=message.channel,
        )
        if post is None:
            return Delivery.failed("letter no longer exists", permanent=True)
        letter = post.letter
        with_file = not kit.letter_fits(letter)
        if with_file:
            await self.client.files_upload_v2(
                channel=message.channel,
                content=letter.text + "\n",
                filename=f"{letter.slug}.txt",
                title=letter.title,
            )
        response = await self.client.chat_postMessage(
            channel=message.channel,
            text=kit.letter_fallback(letter),
            blocks=kit.letter_blocks(letter, with_file=with_file),
            unfurl_links=False,
            unfurl_media=False,
        )
        channel = response.get("channel") or message.channel
        ts = str(response.get("ts"))
        await asyncio.to_thread(
            publishing.record_post,
            database,
            post_id=post.post_id,
            message_id=ts,
            count=letter.count,
            state=letter.state,
        )
        return Delivery.sent(channel=channel, ts=ts)

    async def _post_compiled(self, message: OutboxMessage) -> Delivery:
        assert self._bot is not None and self.client is not None
        result = await asyncio.to_thread(
            publishing.compiled, self._bot.database, slug=message.payload["slug"]
        )
        if result is None:
            return Delivery.failed("no compilation for this letter", permanent=True)
        summary = escape_mrkdwn(
            f"📬 “{result.title}” closed at {format_utc(result.compiled_at)} with "
            f"{result.count} signature{'' if result.count == 1 else 's'}. "
            "The compiled letter is attached (text and printable HTML)."
        )
        response = await self.client.files_upload_v2(
            channel=message.channel,
            initial_comment=summary,
            file_uploads=[
                {
                    "content": result.outputs["txt"],
                    "filename": f"{result.slug}.txt",
                    "title": f"{result.title} (text)",
                },
                {
                    "content": result.outputs["html"],
                    "filename": f"{result.slug}.html",
                    "title": f"{result.title} (HTML)",
                },
            ],
        )
        files = response.get("files") or []
        return Delivery.sent(files=[f.get("id") for f in files if isinstance(f, dict)])

    async def update_post(self, post: PostView) -> Delivery:
        assert self.client is not None and post.message_id is not None
        letter = post.letter
        try:
            await self.client.chat_update(
                channel=post.channel,
                ts=post.message_id,
                text=kit.letter_fallback(letter),
                blocks=kit.letter_blocks(letter, with_file=not kit.letter_fits(letter)),
            )
        except SlackApiError as exc:
            return _failure(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Delivery.failed(f"{exc.__class__.__name__}: {exc}")
        return Delivery.sent()


# --- helpers ---------------------------------------------------------------------------------


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _failure(exc: SlackApiError) -> Delivery:
    response = exc.response
    error = str(response.get("error") or exc)
    if response.status_code == 429:
        retry_after = float(
            response.headers.get("Retry-After", response.headers.get("retry-after", 30))
        )
        return Delivery.failed("ratelimited", retry_after=retry_after)
    return Delivery.failed(error, permanent=error in PERMANENT_ERRORS)


def _action_value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def _action_id(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("action_id") or "")[:100]


def _channel(body: dict[str, Any]) -> str:
    channel = body.get("channel") or {}
    return str(channel.get("id") or (body.get("container") or {}).get("channel_id") or "")


def _repair_form_body(request: AsyncBoltRequest) -> None:
    """slack-bolt parses a form body that merely *contains* "payload" (say, `/sign payloads`) as {}.

    Slash commands are form bodies without a `payload` field: re-parse those ourselves. The raw
    body (and so the signature check) is untouched.
    """
    raw = request.raw_body
    if request.body or not raw or raw.startswith("{") or "payload" not in raw:
        return
    fields = dict(parse_qsl(raw, keep_blank_values=True))
    if "payload" in fields:
        return
    request.body = fields
    request.context = build_async_context(AsyncBoltContext({}), fields)
