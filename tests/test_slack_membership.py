"""Slack channel membership: `chat:write.public` lets chat.postMessage into public channels the bot
is not in, and nothing else. File uploads need membership (the bot joins public channels first),
private channels need an invitation (coordinators are told), and a failed upload never costs the
post. Against the fake Web API with the printed manifest installed."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fakeslack import Call, slash_command_body
from helpers import LETTER
from slack_support import SlackHarness, reply_text
from sqlalchemy import update
from sqlmodel import col, select

from bot.campaign import Target, close_and_announce, post_letter
from bot.letterfile import parse_letter
from bot.models import OutboxMessage
from bot.models._types import utcnow
from bot.store import letters

LONG_LETTER = (
    LETTER.read_text(encoding="utf-8").replace('slug = "interpol-2021"', 'slug = "long-letter"')
    + ("\n\n" + "This paragraph is long enough to need a file. " * 40) * 50
)


def create(h: SlackHarness, text: str | None = None) -> str:
    """A draft letter (a coordinator posts it)."""
    now = utcnow()
    source = parse_letter(
        text or LETTER.read_text(encoding="utf-8"), zone=h.settings.letters.zone, now=now
    )
    with h.database.session() as session:
        letter = letters.create_letter(
            session, source=source, deadline=now + timedelta(days=2), actor="test"
        )
        assert letter is not None
    return source.slug


def post(h: SlackHarness, slug: str, channel: str) -> None:
    """What `cosign letter post SLUG --to slack:CHANNEL` does: open the letter, enqueue."""
    with h.database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None
        post_letter(
            session,
            settings=h.settings,
            letter=letter,
            targets=[Target("slack", channel)],
            actor="test",
            now=utcnow(),
        )


def index(calls: list[Call], method: str, channel: str) -> int:
    """Position of the first successful call of `method` to `channel`."""
    for i, call in enumerate(calls):
        target = call.args.get("channel") or call.args.get("channel_id")
        if call.method == method and target == channel and call.ok:
            return i
    raise AssertionError(f"no successful {method} to {channel}: {[c.method for c in calls]}")


async def wait_until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_compiled_letter_to_an_unjoined_public_channel_is_joined_then_uploaded(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_channel("CANNOUNCE", "coordinators")  # public; the bot was never added
        slug = create(h)
        post(h, slug, "C1")
        await h.settle()
        with h.database.session() as session:
            letter = letters.get_letter(session, slug=slug)
            assert letter is not None
            close_and_announce(
                session, settings=h.settings, letter=letter, actor="test", now=utcnow()
            )
        h.bot.deliverer.notify()
        await h.settle()
        calls = h.fake.calls
        join = index(calls, "conversations.join", "CANNOUNCE")
        summary = index(calls, "chat.postMessage", "CANNOUNCE")
        upload = index(calls, "files.completeUploadExternal", "CANNOUNCE")
        assert join < summary < upload
        assert h.fake.channels["CANNOUNCE"]["is_member"] is True
        files = {u.filename for u in h.fake.files.values() if u.channel == "CANNOUNCE"}
        assert files == {f"{slug}.pdf", f"{slug}.txt", f"{slug}.html"}
        assert "closed at" in h.fake.messages_in("CANNOUNCE")[0]["text"]


async def test_long_letter_to_an_unjoined_public_channel_is_posted_then_its_file(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_channel("C2", "members")
        slug = create(h, LONG_LETTER)
        post(h, slug, "C2")
        await h.settle()
        calls = h.fake.calls
        assert index(calls, "chat.postMessage", "C2") < index(
            calls, "files.completeUploadExternal", "C2"
        )
        (upload,) = h.fake.files.values()
        assert upload.channel == "C2" and upload.completed
        assert upload.content.decode().count("This paragraph is long enough") == 40 * 50
        letter_posts = [m for m in h.fake.messages_in("C2") if not m.get("upload")]
        assert len(letter_posts) == 1


async def test_a_failed_upload_keeps_the_post_and_is_retried_alone(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.fail("files.completeUploadExternal", error="internal_error", times=1)
        slug = create(h, LONG_LETTER)
        post(h, slug, "C1")
        await h.fake.wait_for("files.completeUploadExternal", 1)
        # the upload failed; the letter is posted all the same, with its Sign button
        (posted,) = h.fake.messages_in("C1")
        assert posted["blocks"][-1]["type"] == "actions"
        await h.fake.wait_for("files.completeUploadExternal", 2, timeout=15)
        await h.settle()
        assert [u.filename for u in h.fake.files.values() if u.completed] == [f"{slug}.txt"]
        assert len(h.fake.calls_to("chat.postMessage")) == 1  # the post was not repeated


async def test_private_channel_not_invited_tells_coordinators_and_posts_once_invited(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`cosign letter post … --to slack:CPRIV` only enqueues: the coordinators learn by direct
    message that the bot must be invited, and the post follows the invitation."""
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_channel("CPRIV", "secretariat", private=True)
        slug = create(h)
        post(h, slug, "CPRIV")
        await wait_until(lambda: h.fake.dms_readable_by("UADMIN"))
        (dm,) = h.fake.dms_readable_by("UADMIN")
        assert "could not post the letter" in dm["text"] and "CPRIV" in dm["text"]
        assert "/invite @cosign" in dm["text"]
        assert "not a member" in caplog.text and "/invite @cosign" in caplog.text
        assert h.fake.messages_in("CPRIV") == []
        with h.database.session() as session:  # still queued, not given up
            (row,) = session.exec(
                select(OutboxMessage).where(
                    OutboxMessage.kind == "post_letter", OutboxMessage.channel == "CPRIV"
                )
            ).all()
            assert row.delivered_at is None and row.failed_at is None

        h.fake.invite_bot("CPRIV")
        with h.database.session() as session:  # the retry is due (rather than in a minute)
            session.execute(
                update(OutboxMessage)
                .where(col(OutboxMessage.delivered_at).is_(None))
                .values(next_attempt_at=utcnow())
            )
        await h.settle()
        (letter_post,) = h.fake.messages_in("CPRIV")
        assert slug in str(letter_post["blocks"])
        assert len(h.fake.dms_readable_by("UADMIN")) == 1  # told once


async def test_cosign_post_in_a_private_channel_asks_for_an_invitation(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_channel("CPRIV", "secretariat", private=True)
        h.fake.add_channel("CPUB", "members")
        slug = create(h)
        await h.post(
            slash_command_body(
                "/cosign",
                f"post {slug}",
                "UADMIN",
                channel_id="CPRIV",
                response_url=h.fake.response_url("p1"),
            )
        )
        posted, note = await h.replies("p1", count=2)
        assert "open for signing" in reply_text(posted)
        assert "/invite @cosign" in reply_text(note) and note["response_type"] == "ephemeral"

        # a public channel: joined at once, and no such note
        await h.post(
            slash_command_body(
                "/cosign",
                f"post {slug}",
                "UADMIN",
                channel_id="CPUB",
                response_url=h.fake.response_url("p2"),
            )
        )
        (only,) = await h.replies("p2")
        await asyncio.sleep(0.3)
        assert len(await h.replies("p2")) == 1  # the answer (in the ack), and no note
        assert "/invite" not in reply_text(only)
        assert h.fake.channels["CPUB"]["is_member"] is True
