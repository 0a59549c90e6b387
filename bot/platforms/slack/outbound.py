"""Slack messages out: outbox rows become chat.postMessage / files_upload_v2 calls.

The live counter edits letter posts with chat.update. Slack failures stay here, as Delivery values
(permanent or to be retried, with Retry-After honoured).

Membership: `chat:write.public` lets chat.postMessage reach public channels the bot is not in, and
nothing else: a file upload there answers `not_in_channel`, and a private channel the bot was not
invited to is invisible (`channel_not_found`). So the bot joins public channels first
(conversations.join, `channels:join`), posts the message, and queues its files as an outbox row of
their own: a failed upload never takes the post with it, and is retried by itself. Where the bot
is not a member and cannot join (a private channel), the coordinators get a direct message asking
them to invite it, and the post is retried for about a day, and for as long as the letter is open.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import campaign, publishing
from bot.direct import DM, DM_FILE
from bot.models import LetterState, OutboxMessage
from bot.platforms.base import Delivery, render_message
from bot.platforms.slack import blocks as kit
from bot.platforms.slack.copies import deliver_file_dm
from bot.publishing import PostView
from bot.store import letters, outbox
from bot.templating import escape_mrkdwn
from bot.timeutil import format_utc

if TYPE_CHECKING:
    from bot.runtime import Bot

log = logging.getLogger(__name__)

#: Characters of a direct message too long for one message shown above its file.
DM_PREVIEW = 1500
#: conversations.open's documented errors for an account that cannot be messaged: not retried.
DM_PERMANENT_ERRORS = frozenset(
    {"user_not_found", "user_not_visible", "user_disabled", "cannot_dm_bot"}
)

#: Outbox kinds for the files that follow a post (queued by the post, delivered on their own).
#: A letter's file is also queued when a changed text no longer fits its post (one per version).
LETTER_FILE = "slack_letter_file"
COMPILED_FILES = "slack_compiled_files"
#: The button of a direct message too long for one message (sent as a file): it follows in the
#: same DM as an outbox row of its own, so a retry never uploads the file twice.
DM_BUTTON = "slack_dm_button"
#: Characters of a channel message too long for one message shown above its file.
MESSAGE_PREVIEW = 1500

#: "The bot is not in that channel": chat.postMessage's `not_in_channel` (public, without
#: chat:write.public) and `channel_not_found` (a private channel it was not invited to, or no such
#: channel: Slack does not tell them apart); files.completeUploadExternal's documented
#: `invalid_channel`, `posting_to_channel_denied` and `no_permission`. Inviting the bot mends them.
MEMBERSHIP_ERRORS = frozenset(
    {"not_in_channel", "channel_not_found", "invalid_channel", "posting_to_channel_denied",
     "no_permission"}
)  # fmt: skip
#: Such a failure is retried after min(attempt × 60 s, 15 min), for this many attempts (~a day).
MEMBERSHIP_RETRY_STEP = 60.0
MEMBERSHIP_RETRY_MAX = 900.0
MEMBERSHIP_ATTEMPTS = 96

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
                return await self._post_message(message)
            if message.kind in (DM, DM_BUTTON):
                return await self._direct_message(message)
            if message.kind == DM_FILE:
                return await deliver_file_dm(self.client, self._bot.database, self, message)
            if message.kind == "compiled":
                return await self._post_compiled(message)
            if message.kind == LETTER_FILE:
                return await self._upload_letter_file(message)
            if message.kind == COMPILED_FILES:
                return await self._upload_compiled_files(message)
            return Delivery.failed(f"unknown outbox kind {message.kind!r}", permanent=True)
        except SlackApiError as exc:
            return _failure(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Delivery.failed(f"{exc.__class__.__name__}: {exc}")

    async def _post_message(self, message: OutboxMessage) -> Delivery:
        """A notice to a channel (reminder, deadline moved, text corrected). Too long for one
        message's blocks (a minor change's diff can be), the whole text goes as a file with its
        beginning as the comment: never cut (rule 8)."""
        assert self.client is not None
        text = render_message(self, message.payload, "mrkdwn")
        blocks = kit.text_blocks(text)
        if blocks is not None:
            response = await self.client.chat_postMessage(
                channel=message.channel, text=kit.fallback(text), blocks=blocks
            )
            return Delivery.sent(ts=response.get("ts"))
        await join_channel(self.client, message.channel)  # uploads need membership
        plain = render_message(self, message.payload, "text")
        preview = kit.chunk(text, MESSAGE_PREVIEW)[0].rstrip() + " …"
        slug = str(message.payload.get("context", {}).get("slug") or "cosign")
        response = await self.client.files_upload_v2(
            channel=message.channel,
            content=plain + "\n",
            filename=f"{slug}-notice.txt",
            title="Notice from cosign",
            initial_comment=f"{preview}\n\n_Too long for one message: the full text is in the "
            "attached file._",
        )
        return Delivery.sent(files=_file_ids(response))

    async def _direct_message(self, message: OutboxMessage) -> Delivery:
        """A message to one member: chat.postMessage with the user id as channel posts in the
        app's DM with them (their App Home Messages tab). Too long for one message's blocks, it
        goes as a file with a short comment; the upload needs the D… conversation id
        (files.completeUploadExternal takes conversation ids only), which conversations.open
        (`im:write`) returns, the same one every time."""
        try:
            if message.kind == DM_BUTTON:
                return await self._send_dm_button(message)
            return await self._send_direct(message)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc)
            if error in DM_PERMANENT_ERRORS:
                return Delivery.failed(f"{error}: cannot message {message.channel}", permanent=True)
            raise

    async def _send_direct(self, message: OutboxMessage) -> Delivery:
        """The text, with its button (Re-confirm, DESIGN.md §9) after it when it has one."""
        assert self.client is not None
        text = render_message(self, message.payload, "mrkdwn")
        button = kit.dm_button(message.payload.get("context", {}).get("button"))
        blocks = kit.text_blocks_with(text, button)
        if blocks is not None:
            response = await self.client.chat_postMessage(
                channel=message.channel,
                text=kit.fallback(text),
                blocks=blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
            return Delivery.sent(channel=response.get("channel"), ts=response.get("ts"))
        opened = await self.client.conversations_open(users=message.channel)
        channel = str((opened.get("channel") or {}).get("id") or "")
        if not channel:
            return Delivery.failed("conversations.open returned no channel")
        plain = render_message(self, message.payload, "text")
        # Cut at a space or line (kit.chunk), never inside an escape such as &lt;.
        preview = kit.chunk(text, DM_PREVIEW)[0].rstrip() + " …"
        response = await self.client.files_upload_v2(
            channel=channel,
            content=plain + "\n",
            filename="message.txt",
            title="Message from cosign",
            initial_comment=f"{preview}\n\n_Too long for one message: the full text is in the "
            "attached file._",
        )
        if button is not None:  # the button follows in the same DM, as a row of its own
            context = message.payload.get("context", {})
            await self._queue_after(
                message,
                DM_BUTTON,
                payload={
                    "button": context.get("button"),
                    "context": {
                        name: context.get(name)
                        for name in ("title", "slug", "version", "for_member", "name")
                    },
                },
            )
        return Delivery.sent(channel=channel, files=_file_ids(response))

    async def _send_dm_button(self, message: OutboxMessage) -> Delivery:
        """The button of a direct message that went as a file: a short message in the same DM
        (the user id as channel), its words plain text (no mentions)."""
        assert self.client is not None
        actions = kit.dm_button(message.payload.get("button"))
        if actions is None:
            return Delivery.failed("no button to send", permanent=True)
        prompt = kit.button_prompt(message.payload.get("context") or {})
        response = await self.client.chat_postMessage(
            channel=message.channel,
            text=kit.fallback(escape_mrkdwn(prompt)),
            blocks=[{"type": "section", "text": kit.plain(prompt, kit.MAX_SECTION)}, actions],
            unfurl_links=False,
            unfurl_media=False,
        )
        return Delivery.sent(channel=response.get("channel"), ts=response.get("ts"))

    async def _post_letter(self, message: OutboxMessage) -> Delivery:
        """Join, post, record the post; a letter too long for one message queues its file."""
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
        await join_channel(self.client, message.channel)
        try:
            response = await self.client.chat_postMessage(
                channel=message.channel,
                text=kit.letter_fallback(letter),
                blocks=kit.letter_blocks(letter, with_file=with_file),
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            return await self._undelivered(
                message, exc, what="the letter", title=letter.title, open_=letter.state
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
            version=letter.version,
        )
        if with_file:
            await self._queue_after(
                message, LETTER_FILE, payload={"slug": letter.slug, "version": letter.version}
            )
        return Delivery.sent(channel=channel, ts=ts)

    async def _upload_letter_file(self, message: OutboxMessage) -> Delivery:
        """The full text of a letter too long for its post, uploaded below it: the version the
        row was queued for (its payload's `version`). A text changed again before the upload
        is not uploaded: the post shows the newer one, which queues its own file if needed."""
        assert self._bot is not None and self.client is not None
        letter = await asyncio.to_thread(
            publishing.letter_view, self._bot.database, slug=message.payload["slug"]
        )
        if letter is None:
            return Delivery.failed("letter no longer exists", permanent=True)
        wanted = message.payload.get("version")
        if wanted is not None and wanted != letter.version:
            return Delivery.sent(superseded_by=letter.version)
        await join_channel(self.client, message.channel)
        title = letter.title
        if letter.version > 1:
            title = f"{title} (version {letter.version})"
        try:
            response = await self.client.files_upload_v2(
                channel=message.channel,
                content=letter.text + "\n",
                filename=kit.letter_file_name(letter),
                title=title,
            )
        except SlackApiError as exc:
            return await self._undelivered(
                message, exc, what="the full text of", title=letter.title, open_=letter.state
            )
        return Delivery.sent(files=_file_ids(response))

    async def _post_compiled(self, message: OutboxMessage) -> Delivery:
        """The closing summary to an announce channel; the compiled files follow on their own."""
        assert self._bot is not None and self.client is not None
        result = await asyncio.to_thread(
            publishing.compiled, self._bot.database, slug=message.payload["slug"]
        )
        if result is None:
            return Delivery.failed("no compilation for this letter", permanent=True)
        formats = "PDF, text and printable HTML" if result.pdf_sha256 else "text and printable HTML"
        summary = escape_mrkdwn(
            f"📬 “{result.title}” closed at {format_utc(result.compiled_at)} with "
            f"{result.count} signature{'' if result.count == 1 else 's'}. "
            f"The compiled letter follows as files ({formats}). {result.witness()}".rstrip()
        )
        await join_channel(self.client, message.channel)
        try:
            response = await self.client.chat_postMessage(
                channel=message.channel, text=summary, unfurl_links=False, unfurl_media=False
            )
        except SlackApiError as exc:
            return await self._undelivered(
                message, exc, what="the compiled letter", title=result.title
            )
        await self._queue_after(message, COMPILED_FILES)
        return Delivery.sent(channel=response.get("channel"), ts=response.get("ts"))

    async def _upload_compiled_files(self, message: OutboxMessage) -> Delivery:
        assert self._bot is not None and self.client is not None
        result = await asyncio.to_thread(
            publishing.compiled, self._bot.database, slug=message.payload["slug"]
        )
        if result is None:
            return Delivery.failed("no compilation for this letter", permanent=True)
        await join_channel(self.client, message.channel)
        pdf = await asyncio.to_thread(
            publishing.compiled_pdf, self._bot.database, slug=result.slug
        )
        uploads: list[dict[str, Any]] = []
        if pdf is not None:
            uploads.append(
                {"content": pdf, "filename": f"{result.slug}.pdf", "title": f"{result.title} (PDF)"}
            )
        try:
            response = await self.client.files_upload_v2(
                channel=message.channel,
                file_uploads=[
                    *uploads,
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
        except SlackApiError as exc:
            return await self._undelivered(
                message, exc, what="the files of the compiled letter", title=result.title
            )
        return Delivery.sent(files=_file_ids(response))

    async def _queue_after(
        self, message: OutboxMessage, kind: str, *, payload: dict[str, Any] | None = None
    ) -> None:
        """Queue what follows a post (its files) or a direct message (its button) as an outbox
        row of its own: durable, retried by itself, and a failure there never undoes (nor
        repeats) what went before."""
        assert self._bot is not None

        def enqueue() -> None:
            assert self._bot is not None
            with self._bot.database.session() as session:
                outbox.enqueue(
                    session,
                    key=f"{kind}:{message.idempotency_key}",
                    platform=self.name,
                    channel=message.channel,
                    kind=kind,
                    payload=payload if payload is not None else {"slug": message.payload["slug"]},
                    letter_pk=message.letter_pk,
                )

        await asyncio.to_thread(enqueue)

    async def _undelivered(
        self,
        message: OutboxMessage,
        exc: SlackApiError,
        *,
        what: str,
        title: str,
        open_: str | None = None,
    ) -> Delivery:
        """A post the bot could not make because it is not in the channel: say so in the log,
        tell the coordinators by direct message (once), and keep retrying (for about a day, and
        as long as the letter is open) so that inviting the bot is enough."""
        error = str(exc.response.get("error") or exc)
        if exc.response.status_code == 429 or error not in MEMBERSHIP_ERRORS:
            return _failure(exc)
        assert self._bot is not None
        attempt = message.attempts + 1
        slug = str(message.payload.get("slug", ""))
        log.warning(
            "slack: could not post %s “%s” in %s (%s): the bot is not a member of that channel. "
            "A private channel must invite it (/invite @cosign). Coordinators are told by "
            "direct message; attempt %d of %d.",
            what,
            title,
            message.channel,
            error,
            attempt,
            MEMBERSHIP_ATTEMPTS,
        )
        settings = self._bot.settings

        def notify() -> None:
            assert self._bot is not None
            with self._bot.database.session() as session:
                campaign.notify_undelivered(
                    session,
                    settings=settings,
                    platform=self.name,
                    about=message.idempotency_key,
                    channel=message.channel,
                    what=what,
                    title=title,
                    slug=slug,
                    error=error,
                    letter_pk=message.letter_pk,
                )

        await asyncio.to_thread(notify)
        reason = f"{error}: the bot is not a member of {message.channel}; invite it"
        if attempt >= MEMBERSHIP_ATTEMPTS and open_ != LetterState.open.value:
            return Delivery.failed(reason, permanent=True)
        retry_after = min(MEMBERSHIP_RETRY_STEP * attempt, MEMBERSHIP_RETRY_MAX)
        return Delivery.failed(reason, retry_after=retry_after)

    async def update_post(self, post: PostView) -> Delivery:
        """The live counter's edit: count, state, and a changed text with its note (DESIGN.md
        §9). A new text too long for the post is shown as a summary and reaches the channel
        whole as a file of that version (rule 8), queued once per version and post."""
        assert self.client is not None and post.message_id is not None
        letter = post.letter
        with_file = not kit.letter_fits(letter)
        try:
            await self.client.chat_update(
                channel=post.channel,
                ts=post.message_id,
                text=kit.letter_fallback(letter),
                blocks=kit.letter_blocks(letter, with_file=with_file),
            )
        except SlackApiError as exc:
            delivery = _failure(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Delivery.failed(f"{exc.__class__.__name__}: {exc}")
        else:
            delivery = Delivery.sent()
        new_text = (post.shown_version or 1) != letter.version
        if with_file and new_text and (delivery.ok or delivery.permanent):
            # before the counter marks the post shown: a crash here edits and queues again
            await asyncio.to_thread(self._queue_version_file, post)
            if self._bot is not None:
                self._bot.deliverer.notify()  # sent now, not at the outbox's next poll
        return delivery

    def _queue_version_file(self, post: PostView) -> None:
        """The file with a changed letter's full text, below its post (kind LETTER_FILE)."""
        assert self._bot is not None
        letter = post.letter
        with self._bot.database.session() as session:
            found = letters.get_letter(session, slug=letter.slug)
            outbox.enqueue(
                session,
                key=f"{LETTER_FILE}:{letter.slug}:v{letter.version}:{self.name}:{post.channel}",
                platform=self.name,
                channel=post.channel,
                kind=LETTER_FILE,
                payload={"slug": letter.slug, "version": letter.version},
                letter_pk=found.id if found is not None else None,
            )


async def join_channel(client: AsyncWebClient, channel: str) -> str | None:
    """Join a public channel before posting there (uploads need membership); Slack's error if
    that failed, None when the bot is in. A private channel answers `channel_not_found` (not
    invited) or `method_not_supported_for_channel_type`; either way the post that follows decides,
    so a failed join is only reported."""
    if not channel or channel[0] in "DUW":  # a direct message: nothing to join
        return None
    try:
        await client.conversations_join(channel=channel)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or exc)
        if error == "missing_scope":
            log.warning(
                "slack: cannot join %s: the app lacks the channels:join scope; reinstall it from "
                "`cosign slack manifest` (file uploads to channels it is not in fail)",
                channel,
            )
        return error
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{exc.__class__.__name__}: {exc}"
    return None


def _file_ids(response: Any) -> list[str]:
    files = response.get("files") or []
    return [str(f["id"]) for f in files if isinstance(f, dict) and f.get("id")]


def _failure(exc: SlackApiError) -> Delivery:
    response = exc.response
    error = str(response.get("error") or exc)
    if response.status_code == 429:
        retry_after = float(
            response.headers.get("Retry-After", response.headers.get("retry-after", 30))
        )
        return Delivery.failed("ratelimited", retry_after=retry_after)
    return Delivery.failed(error, permanent=error in PERMANENT_ERRORS)
