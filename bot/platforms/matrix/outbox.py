"""What the Matrix platform posts on its own (the outbox), and the live counter's edits.

Everything here is ``m.text``, not ``m.notice``: the default push rule ``.m.rule.suppress_notices``
silences notices whatever the room's notification setting, and these are what members must see.
(Command replies stay notices; the bot ignores its own events, so its posts are never commands.)

* ``post_letter``: the letter with its deadline and count; recorded with
  ``publishing.record_post`` (the event id) so the counter can edit it. A letter whose edit would
  not fit one event as sent (64 KiB including, in encrypted rooms, the base64 megolm ciphertext
  of the ASCII-escaped JSON) is posted as a summary with the text as an ``m.file``.
* ``message``: a reminder, deadline change or closing summary (template + context).
* ``compiled``: the compiled letter as files (``.txt`` and ``.html``) after a summary.
* ``dm``: a direct message to a member (template + context; the channel is their user id), in
  the direct room ``bot.platforms.matrix.direct`` finds or makes; too large for one event (a
  huge word diff asking to re-confirm a changed text), its beginning and its last paragraph
  (what to do) plus the whole text as a file.
* ``dm_file``: a direct message with a file of a letter (the copy of the published PDF): the
  message, then the file as an ``m.file`` (uploaded encrypted in an encrypted room), both in the
  member's direct room.
* ``update_post``: an ``m.replace`` edit of the post with the full new content. When the text
  changed (DESIGN.md §9) and no longer fits an edit, the edit says the text is attached and the
  new text follows as an ``m.file`` (``SLUG-vN.txt``), once per version: it is sent only by the
  edit that first shows that version, with a transaction id derived from the post and version.

Each send's transaction id derives from the outbox idempotency key (plus a part name), so a retry
after a crash returns the event already sent instead of posting it again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bot import publishing
from bot.db import Database
from bot.direct import DM, DM_FILE
from bot.platforms.base import Delivery, Platform, render_message
from bot.platforms.matrix.content import (
    MSGTYPE_TEXT,
    Rendered,
    edit,
    html_lines,
    notice,
    render_pair,
    txn_id,
)
from bot.platforms.matrix.direct import DirectRooms
from bot.platforms.matrix.send import Sender
from bot.timeutil import format_utc

if TYPE_CHECKING:
    from bot.models import OutboxMessage
    from bot.publishing import LetterView, PostView

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
PDF = "application/pdf"


class Publisher:
    def __init__(
        self,
        platform: Platform,
        database: Database,
        sender: Sender,
        directs: DirectRooms | None = None,
    ) -> None:
        self.platform = platform
        self.database = database
        self.sender = sender
        self.directs = directs

    async def deliver(self, message: OutboxMessage) -> Delivery:
        if message.kind == "post_letter":
            return await self._post_letter(message)
        if message.kind == "message":
            return await self.sender.send_text(
                message.channel,
                self._rendered(message),
                key=message.idempotency_key,
                msgtype=MSGTYPE_TEXT,
            )
        if message.kind == DM:
            return await self._direct_message(message)
        if message.kind == DM_FILE:
            return await self._direct_file(message)
        if message.kind == "compiled":
            return await self._post_compiled(message)
        return Delivery.failed(f"unknown outbox kind {message.kind!r}", permanent=True)

    def _rendered(self, message: OutboxMessage) -> Rendered:
        return Rendered(
            render_message(self.platform, message.payload, "text"),
            html_lines(render_message(self.platform, message.payload, "html")),
        )

    async def _direct_message(self, message: OutboxMessage) -> Delivery:
        """To the member's direct room (made once, kept): ``m.text`` so it notifies, mentioning
        no one; the transaction id derives from the outbox key, so a redelivery is one event."""
        if self.directs is None:
            return Delivery.failed("direct messages are not set up")
        room = await self.directs.room_for(message.channel)
        if isinstance(room, Delivery):
            return room
        sent = await self.sender.send_text(
            room,
            self._rendered(message),
            key=message.idempotency_key,
            msgtype=MSGTYPE_TEXT,
            keep_ending=True,  # what to do (re-confirm, withdraw) stays in view, not in a file
        )
        if not sent.ok:
            return sent
        return Delivery.sent(room_id=room, **sent.result)

    async def _direct_file(self, message: OutboxMessage) -> Delivery:
        """The message, then the PDF as an ``m.file``, in the member's direct room; each event's
        transaction id derives from the outbox key, so a redelivery repeats neither."""
        if self.directs is None:
            return Delivery.failed("direct messages are not set up")
        attached = message.payload.get("file") or {}
        slug, fmt = str(attached.get("slug", "")), str(attached.get("format", "pdf"))
        if fmt != "pdf":
            return Delivery.failed(f"cannot attach a {fmt!r} file", permanent=True)
        data = await asyncio.to_thread(publishing.compiled_pdf, self.database, slug=slug)
        if data is None:
            return Delivery.failed(f"{slug} has no compiled PDF", permanent=True)
        room = await self.directs.room_for(message.channel)
        if isinstance(room, Delivery):
            return room
        key = message.idempotency_key
        sent = await self.sender.send_text(
            room, self._rendered(message), key=key, msgtype=MSGTYPE_TEXT
        )
        if not sent.ok:
            return sent
        filed = await self.sender.send_file(
            room, filename=f"{slug}.pdf", data=data, mimetype=PDF, tx=txn_id(key, "pdf")
        )
        if not filed.ok:
            return filed
        return Delivery.sent(
            room_id=room,
            event_id=sent.result.get("event_id"),
            file_event_id=filed.result.get("event_id"),
        )

    def letter_content(self, letter: LetterView, room_id: str) -> tuple[dict[str, Any], bool]:
        """The post's content, and whether its text had to go into an attached file."""
        content: dict[str, Any] = {}
        for attached in (False, True):
            content = notice(
                render_pair(
                    "matrix/letter_post.j2",
                    title=letter.title,
                    slug=letter.slug,
                    state=letter.state,
                    deadline=letter.deadline_text,
                    closed_at=format_utc(letter.closed_at) if letter.closed_at else "",
                    count=letter.count,
                    text=letter.text,
                    change_note=letter.change_note,
                    attached=attached,
                    filename=text_filename(letter),
                    prefix=self.platform.command_prefix,
                ),
                msgtype=MSGTYPE_TEXT,
            )
            # Decided on the size of an edit, which carries the content again (m.new_content),
            # so the counter can always edit what was posted.
            if self.sender.fits(room_id, edit("$" + "x" * 60, content)):
                return content, attached
        return content, True

    async def _post_letter(self, message: OutboxMessage) -> Delivery:
        room_id, key = message.channel, message.idempotency_key
        post = await asyncio.to_thread(
            publishing.letter_post,
            self.database,
            slug=message.payload["slug"],
            platform=self.platform.name,
            channel=room_id,
        )
        if post is None:
            return Delivery.sent(skipped="letter not found")
        if post.message_id:  # posted and recorded before a crash, not yet marked delivered
            return Delivery.sent(event_id=post.message_id)
        content, attached = self.letter_content(post.letter, room_id)
        sent = await self.sender.room_send(room_id, content, txn_id(key, "post"))
        if not sent.ok:
            return sent
        event_id = str(sent.result["event_id"])
        if attached:
            filed = await self.sender.send_file(
                room_id,
                filename=text_filename(post.letter),
                data=(post.letter.text + "\n").encode("utf-8"),
                mimetype=TEXT,
                tx=txn_id(key, "file"),
                reply_to=event_id,
            )
            if not filed.ok:
                return filed  # the retry finds the post by its transaction id, sends the file
        await asyncio.to_thread(
            publishing.record_post,
            self.database,
            post_id=post.post_id,
            message_id=event_id,
            count=post.letter.count,
            state=post.letter.state,
            version=post.letter.version,
        )
        return Delivery.sent(event_id=event_id, attached=attached)

    async def _post_compiled(self, message: OutboxMessage) -> Delivery:
        room_id, key = message.channel, message.idempotency_key
        result = await asyncio.to_thread(
            publishing.compiled, self.database, slug=message.payload["slug"]
        )
        if result is None:
            return Delivery.failed("the letter has no compilation yet")
        files = [
            (fmt, f"{result.slug}.{fmt}", mimetype)
            for fmt, mimetype in (("txt", TEXT), ("html", HTML))
            if fmt in result.outputs
        ]
        pdf = await asyncio.to_thread(publishing.compiled_pdf, self.database, slug=result.slug)
        if pdf is not None:
            files.insert(0, ("pdf", f"{result.slug}.pdf", PDF))
        summary = render_pair(
            "matrix/compiled.j2",
            title=result.title,
            closed_at=format_utc(result.compiled_at),
            count=result.count,
            files=[name for _, name, _ in files],
            witness=result.witness(),
        )
        sent = await self.sender.room_send(
            room_id, notice(summary, msgtype=MSGTYPE_TEXT), txn_id(key, "summary")
        )
        if not sent.ok:
            return sent
        event_ids = {"summary": sent.result.get("event_id")}
        for fmt, filename, mimetype in files:
            data = pdf if fmt == "pdf" and pdf is not None else result.outputs[fmt].encode("utf-8")
            filed = await self.sender.send_file(
                room_id,
                filename=filename,
                data=data,
                mimetype=mimetype,
                tx=txn_id(key, fmt),
            )
            if not filed.ok:
                return filed
            event_ids[fmt] = filed.result.get("event_id")
        return Delivery.sent(**event_ids)

    async def update_post(self, post: PostView) -> Delivery:
        if not post.message_id:
            return Delivery.failed("the post has no event id", permanent=True)
        letter = post.letter
        content, attached = self.letter_content(letter, post.channel)
        # A fresh transaction id: the same count can legitimately be shown again later.
        edited = await self.sender.room_send(post.channel, edit(post.message_id, content))
        if not edited.ok or not attached or (post.shown_version or 1) == letter.version:
            return edited
        # A new text too long for the post (rule 8: never cut silently): the edit now says it is
        # attached, so it must be. Only the edit that first shows this version gets here (the
        # counter then records the version as shown); a retry after a failure or a crash reuses
        # the transaction id, so Synapse answers with the file event already sent.
        filed = await self.sender.send_file(
            post.channel,
            filename=text_filename(letter),
            data=(letter.text + "\n").encode("utf-8"),
            mimetype=TEXT,
            tx=txn_id("letter-text", post.message_id, str(letter.version)),
            reply_to=post.message_id,
        )
        if not filed.ok:
            return filed
        return Delivery.sent(
            event_id=edited.result.get("event_id"), file_event_id=filed.result.get("event_id")
        )


def text_filename(letter: LetterView) -> str:
    """The attached text's name: ``SLUG.txt``, then ``SLUG-v2.txt``…, so the file of each
    version of a changed text (DESIGN.md §9) is told apart from the earlier ones in the room."""
    return f"{letter.slug}.txt" if letter.version <= 1 else f"{letter.slug}-v{letter.version}.txt"
