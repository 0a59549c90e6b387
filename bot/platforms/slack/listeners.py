"""Slack requests in: slash commands, buttons and app mentions become Invocations.

Each listener acknowledges first (inside Slack's 3 s, before any database work), then runs the
command and answers through the request's response_url (or an ephemeral message for a mention).
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
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import publishing
from bot.core import Invocation, Reply, apology
from bot.platforms.base import render_reply
from bot.platforms.slack import blocks as kit
from bot.platforms.slack.email_match import EmailMatcher
from bot.platforms.slack.outbound import join_channel
from bot.store import events
from bot.templating import escape_mrkdwn

if TYPE_CHECKING:
    from bot.config import SlackSettings
    from bot.runtime import Bot

log = logging.getLogger(__name__)

COMMANDS = ("sign", "unsign", "status", "letters", "cosign")
_MENTION = re.compile(r"^\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>\s*")

Respond = Callable[..., Awaitable[Any]]


def split_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


class SlackListeners:
    """The inbound half of SlackPlatform (a mixin: it shares the platform's client and bot)."""

    name: str
    config: SlackSettings
    client: AsyncWebClient | None
    _bot: Bot | None
    _http: aiohttp.ClientSession | None
    _email_matcher: EmailMatcher | None = None

    async def _acks_first(self) -> None:
        """Overridden by SlackPlatform: wait while requests are being acknowledged."""

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
        if _is_post(invocation, replies):
            await self._membership_note(invocation, respond)

    async def _membership_note(self, invocation: Invocation, respond: Respond) -> None:
        """`/cosign post` where the bot cannot post: say so now, not just in the log.

        The post is queued either way. Joining now makes a public channel ready for the post and
        its files; `channel_not_found` means a private channel (or a conversation between others)
        the bot was not invited to: Slack hides those from it, and only an invitation helps.
        """
        assert self.client is not None
        if await join_channel(self.client, invocation.channel) != "channel_not_found":
            return
        await respond(
            text=(
                "I am not a member of this conversation, so I cannot post the letter here yet. "
                "In a private channel, invite me with `/invite @cosign`: the post follows within "
                "minutes (I keep trying, and coordinators get a direct message until it is "
                "posted)."
            ),
            response_type="ephemeral",
        )

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
        if self._email_matcher is None:
            self._email_matcher = EmailMatcher(self.client, self._bot.database, self.name)
        await self._email_matcher.link(user)

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
        # read only: a Sign click in a channel the letter was not posted to adds no post there
        letter = await asyncio.to_thread(publishing.letter_view, self._bot.database, slug=slug)
        title = letter.title if letter else slug
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


# --- request helpers ---------------------------------------------------------------------------


def _is_post(invocation: Invocation, replies: list[Reply]) -> bool:
    """A coordinator's `/cosign post SLUG` that was accepted (the letter is queued here)."""
    args = invocation.args
    return (
        invocation.command == "cosign"
        and bool(args)
        and args[0].lower() == "post"
        and any(reply.template == "replies/posted.j2" for reply in replies)
    )


def _action_value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def _action_id(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("action_id") or "")[:100]


def _channel(body: dict[str, Any]) -> str:
    channel = body.get("channel") or {}
    return str(channel.get("id") or (body.get("container") or {}).get("channel_id") or "")


def repair_form_body(request: AsyncBoltRequest) -> None:
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
