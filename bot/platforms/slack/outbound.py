"""Slack messages out: outbox rows become chat.postMessage / files_upload_v2 calls.

The live counter edits letter posts with chat.update. Slack failures stay here, as Delivery values
(permanent or to be retried, with Retry-After honoured).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import publishing
from bot.models import OutboxMessage
from bot.platforms.base import Delivery, render_message
from bot.platforms.slack import blocks as kit
from bot.publishing import PostView
from bot.templating import escape_mrkdwn
from bot.timeutil import format_utc

if TYPE_CHECKING:
    from bot.runtime import Bot

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


class SlackOutbound:
    """The outbound half of SlackPlatform (a mixin: it shares the platform's client and bot)."""

    name: str
    command_prefix: str
    client: AsyncWebClient | None
    _bot: Bot | None

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



def _failure(exc: SlackApiError) -> Delivery:
    response = exc.response
    error = str(response.get("error") or exc)
    if response.status_code == 429:
        retry_after = float(
            response.headers.get("Retry-After", response.headers.get("retry-after", 30))
        )
        return Delivery.failed("ratelimited", retry_after=retry_after)
    return Delivery.failed(error, permanent=error in PERMANENT_ERRORS)
