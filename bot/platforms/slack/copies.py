"""A direct message with a file of a letter on Slack (outbox kind `dm_file`): the copy of the
published PDF each signatory gets (DESIGN.md §10, bot.copies).

The file goes into the app's DM with the member, with the message as its comment:
conversations.open (scope `im:write`) "opens or resumes" that DM and returns its D… id, and
files_upload_v2 shares the upload there (files.completeUploadExternal takes conversation ids
only: a U… user id is refused). Errors that say the member cannot be messaged are permanent;
anything else (a 429 with its Retry-After included) is left to the caller's SlackApiError
handling, which retries.
"""

from __future__ import annotations

import asyncio
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import publishing
from bot.db import Database
from bot.models import OutboxMessage
from bot.platforms.base import Delivery, Prefixed, render_message

#: conversations.open's documented errors for an account that cannot be messaged, and
#: files.completeUploadExternal's for a conversation the bot may not share files in.
COPY_PERMANENT_ERRORS = frozenset(
    {
        "user_not_found",
        "user_not_visible",
        "user_disabled",
        "cannot_dm_bot",
        "invalid_channel",
        "posting_to_channel_denied",
    }
)


async def deliver_file_dm(
    client: AsyncWebClient, database: Database, platform: Prefixed, message: OutboxMessage
) -> Delivery:
    """Upload the letter's file into the member's DM, the rendered message as its comment."""
    attached = message.payload.get("file") or {}
    slug, fmt = str(attached.get("slug", "")), str(attached.get("format", "pdf"))
    if fmt != "pdf":
        return Delivery.failed(f"cannot attach a {fmt!r} file", permanent=True)
    data = await asyncio.to_thread(publishing.compiled_pdf, database, slug=slug)
    if data is None:
        return Delivery.failed(f"{slug} has no compiled PDF", permanent=True)
    title = str(message.payload.get("context", {}).get("title", slug))
    try:
        opened = await client.conversations_open(users=message.channel)
        channel = str((opened.get("channel") or {}).get("id") or "")
        if not channel:
            return Delivery.failed("conversations.open returned no channel")
        response = await client.files_upload_v2(
            channel=channel,
            content=data,
            filename=f"{slug}.pdf",
            title=f"{title} (PDF)",
            initial_comment=render_message(platform, message.payload, "mrkdwn"),
        )
    except SlackApiError as exc:
        error = str(exc.response.get("error") or exc)
        if exc.response.status_code != 429 and error in COPY_PERMANENT_ERRORS:
            return Delivery.failed(f"{error}: cannot send {message.channel} a file", permanent=True)
        raise
    return Delivery.sent(channel=channel, files=_file_ids(response))


def _file_ids(response: Any) -> list[str]:
    files = response.get("files") or []
    return [str(f["id"]) for f in files if isinstance(f, dict) and f.get("id")]
