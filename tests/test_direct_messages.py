"""Direct messages (DESIGN.md §8, issue 12) on the console and on Slack (the fake Web API).

`bot.direct.enqueue_dm` queues an outbox row of kind `dm` whose channel is the member's account;
each platform delivers it in the member's direct conversation:

- console: `[dm @USER] text`;
- Slack: chat.postMessage with the user id as `channel`, which posts in the app's DM with that user
  (docs.slack.dev/reference/methods/chat.postMessage: "posts a message to a public channel,
  private channel, or direct message (DM, or IM) conversation"); a message too long for one
  message's blocks goes as a file into that DM, whose D… id conversations.open returns ("Opens
  or resumes a direct message", scope `im:write`; files.completeUploadExternal takes
  conversation ids only).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ConsoleHarness
from fakeslack import FakeSlack
from helpers import import_example_roster
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_support import SlackHarness
from sqlmodel import select

from bot.db import Database
from bot.direct import enqueue_dm
from bot.models import Member, OutboxMessage
from bot.platforms.slack.manifest import manifest

REMINDER = "replies/reminder.j2"


def context(title: str = "A letter", time_left: str = "1 hour left") -> dict[str, Any]:
    return {"title": title, "slug": "a-letter", "time_left": time_left, "count": 3}


def queue(database: Database, member_id: str, key: str, **values: Any) -> bool:
    with database.session() as session:
        member = session.exec(select(Member).where(Member.member_id == member_id)).one()
        return enqueue_dm(
            session, member=member, key=key, template=REMINDER, context=context(**values)
        )


def dm_rows(database: Database) -> list[OutboxMessage]:
    with database.session() as session:
        return list(session.exec(select(OutboxMessage).where(OutboxMessage.kind == "dm")).all())


async def wait_for_row(
    database: Database, check: Callable[[OutboxMessage], bool], timeout: float = 10
) -> OutboxMessage:
    """The (one) dm row, once `check` holds for it."""
    deadline = time.monotonic() + timeout
    while True:
        rows = dm_rows(database)
        if rows and check(rows[0]):
            return rows[0]
        assert time.monotonic() < deadline, f"dm row never matched: {rows}"
        await asyncio.sleep(0.05)


# --- console ------------------------------------------------------------------------------------


async def test_console_prints_a_direct_message_once(
    console_harness: ConsoleHarness, database: Database
) -> None:
    import_example_roster(database)
    async with console_harness as h:
        assert queue(database, "au-abetz", "reminder:a-letter:1h:au-abetz", title="<Übung>")
        assert not queue(database, "au-abetz", "reminder:a-letter:1h:au-abetz")  # same key
        printed = await h.send()
    lines = [line for line in printed.splitlines() if line.startswith("[dm ")]
    assert lines == [
        "[dm @au-abetz] ⏰ Reminder: “<Übung>” (a-letter): 1 hour left. 3 signatures so far; "
        "sign it with !sign a-letter."
    ], printed
    (row,) = dm_rows(database)
    assert row.delivered_at is not None and row.channel == "au-abetz"


# --- Slack --------------------------------------------------------------------------------------


def _im_messages(h: SlackHarness, user: str) -> list[dict[str, Any]]:
    return h.fake.dms_readable_by(user)


async def test_slack_dm_is_posted_to_the_user_and_lands_in_their_im(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_user("UABETZ", "abetz", "Eric Abetz")
        assert queue(h.database, "au-abetz", "k1", title="<!channel> & <@UALTON>")
        assert queue(h.database, "au-abetz", "k2", title="Second")
        await h.settle()
        posts = h.fake.calls_to("chat.postMessage")
        assert [c.args["channel"] for c in posts] == ["UABETZ", "UABETZ"]
        assert all(c.ok and not c.no_text and not c.link_names for c in posts)
        im = h.fake.ims["UABETZ"]
        assert im.startswith("D") and {c.response["channel"] for c in posts} == {im}
        first, second = _im_messages(h, "UABETZ")  # one IM for the user, both messages in it
        # Escaped mrkdwn: the names show literally and ping nobody (rule 7).
        assert "&lt;!channel&gt; &amp; &lt;@UALTON&gt;" in first["text"]
        assert "<!channel>" not in str(first["blocks"]) and "<@UALTON>" not in first["text"]
        assert "Second" in second["text"]
        # conversations.open resumes the same conversation.
        client = AsyncWebClient(token=h.fake.token, base_url=h.fake.api_url)
        opened = await client.conversations_open(users="UABETZ")
        assert opened["channel"]["id"] == im and opened.get("already_open") is True
        for row in dm_rows(h.database):
            assert row.delivered_at is not None and row.attempts == 1


async def test_slack_dm_too_long_for_a_message_goes_as_a_file_in_the_dm(
    db_url: str, tmp_path: Path
) -> None:
    long_text = " ".join(f"word{i}" for i in range(4000))  # ~35k characters
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_user("UABETZ", "abetz", "Eric Abetz")
        assert queue(h.database, "au-abetz", "long", time_left=long_text)
        await h.settle()
        assert h.fake.calls_to("chat.postMessage") == []  # not cut into a message
        (opened,) = h.fake.calls_to("conversations.open")
        assert opened.args["users"] == "UABETZ" and opened.ok
        (complete,) = h.fake.calls_to("files.completeUploadExternal")
        im = h.fake.ims["UABETZ"]
        assert complete.ok and complete.args["channel_id"] == im
        (upload,) = [f for f in h.fake.files.values() if f.completed]
        assert upload.channels == [im]
        assert long_text in upload.content.decode("utf-8")  # the whole text, nothing dropped
        assert upload.initial_comment is not None and len(upload.initial_comment) < 2000
        (shown,) = _im_messages(h, "UABETZ")
        assert shown["upload"] and shown["files"][0]["ims"] == [im]
        (row,) = dm_rows(h.database)
        assert row.delivered_at is not None


async def test_slack_dm_file_needs_im_write_and_the_manifest_grants_it(
    db_url: str, tmp_path: Path
) -> None:
    """conversations.open needs `im:write` for a 1:1 DM (mpim:write is for group DMs): without
    it the fake answers missing_scope, the row fails for good; the manifest asks for it."""
    async with SlackHarness(db_url, tmp_path) as h:
        assert "im:write" in manifest(h.settings.slack)["oauth_config"]["scopes"]["bot"]
        h.fake.add_user("UABETZ", "abetz", "Eric Abetz")
        assert h.fake.scopes is not None
        h.fake.scopes.discard("im:write")
        h.fake.scopes.add("mpim:write")
        assert queue(h.database, "au-abetz", "long", time_left="x " * 20000)
        opened = (await h.fake.wait_for("conversations.open", 1))[0]
        assert opened.error == "missing_scope" and opened.response["needed"] == "im:write"
        row = await wait_for_row(h.database, lambda r: bool(r.last_error))
        assert "missing_scope" in (row.last_error or "") and row.delivered_at is None
        assert h.fake.files == {} or not any(f.completed for f in h.fake.files.values())
        assert _im_messages(h, "UABETZ") == []


async def test_fake_slack_im_rules() -> None:
    """The fake's IM model: one D… conversation per user, made on first use, the same from
    chat.postMessage and conversations.open; an unknown user has none."""
    async with FakeSlack() as fake:
        fake.add_user("U123", "alice")
        client = AsyncWebClient(token=fake.token, base_url=fake.api_url)
        posted = await client.chat_postMessage(channel="U123", text="hi")
        opened = await client.conversations_open(users="U123")
        assert posted["channel"] == opened["channel"]["id"] == fake.ims["U123"]
        assert len(fake.ims["U123"]) >= 9  # a conversation id files.completeUploadExternal takes
        assert [m["text"] for m in fake.dms_readable_by("U123")] == ["hi"]
        with pytest.raises(SlackApiError) as refused:
            await client.conversations_open(users="UNOBODY")
        assert refused.value.response["error"] == "user_not_found"
        fake.install({"oauth_config": {"scopes": {"bot": ["chat:write", "mpim:write"]}}})
        with pytest.raises(SlackApiError) as scoped:
            await client.conversations_open(users="U123")
        assert scoped.value.response["error"] == "missing_scope"
