"""kill -9 in the middle of a burst of signatures: nothing acknowledged is lost or doubled.

A real `cosign run` process serves Slack over HTTP (against the fake Web API in this process);
500 members sign with 50 requests in flight; the bot is SIGKILLed halfway, restarted, and the
members who never saw a reply try again, as people would.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from fakeslack import FakeSlack
from helpers import create_example_letter, reply_kind
from pg_server import _free_port
from process_support import (
    SlashBurst,
    signed_ids,
    slack_bot_env,
    slack_replies,
    spawn_bot,
    stop_bot,
    undelivered,
    wait_healthy,
)
from slack_support import burst_roster
from sqlmodel import select

from bot.db import Database
from bot.delivery import LEASE
from bot.models import OutboxMessage, Signature
from bot.roster import import_roster

MEMBERS = 500
IN_FLIGHT = 50


async def test_kill_9_mid_burst_loses_and_doubles_nothing(db_url: str, tmp_path: Path) -> None:
    async with FakeSlack() as fake:
        from conftest import make_settings

        settings = make_settings(db_url, tmp_path)
        database = Database(db_url)
        with database.session() as session:
            import_roster(session, data=burst_roster(MEMBERS), actor="test")
        create_example_letter(database, settings, post_to=["slack:C1", "slack:C2"])
        port = _free_port()
        env = slack_bot_env(
            db_url, port, fake, tmp_path / "out", COSIGN_SCHEDULER__TICK_SECONDS="1"
        )
        url = f"http://127.0.0.1:{port}/slack/events"
        users = [f"UB{i:04d}" for i in range(MEMBERS)]
        async with aiohttp.ClientSession() as http:
            bot = await spawn_bot(env, tmp_path, tmp_path / "bot1.log")
            await wait_healthy(http, port)
            burst = SlashBurst(http, url, fake, IN_FLIGHT)

            async def killer() -> None:
                while len(slack_replies(fake, burst)) < MEMBERS // 2:
                    await asyncio.sleep(0.01)
                await stop_bot(bot, kill=True)
                burst.killed.set()

            await asyncio.gather(killer(), *(burst.sign(u, "1") for u in users))
            first = slack_replies(fake, burst)
            committed = signed_ids(database, "slack")  # what the killed bot had committed
            # Before the kill every request was a first signature: answered at most once, and
            # only ever with the confirmation of a new signature, after its commit (rule 3).
            assert all(len(texts) == 1 for texts in first.values()), first
            kinds = {key: reply_kind(texts[0]) for key, texts in first.items()}
            assert set(kinds.values()) == {"signed"}, kinds
            acknowledged = {key.split("-")[0] for key in first}
            assert acknowledged <= committed, acknowledged - committed
            # Really mid-burst: half acknowledged, yet some members had not signed at all.
            assert MEMBERS // 2 <= len(acknowledged) <= len(committed) < MEMBERS, (
                len(acknowledged),
                len(committed),
            )

            bot = await spawn_bot(env, tmp_path, tmp_path / "bot2.log")
            await wait_healthy(http, port)
            retry = [u for u in users if u not in acknowledged]
            burst.killed.clear()
            await asyncio.gather(*(burst.sign(u, "2") for u in retry))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(
                [k for k in slack_replies(fake, burst) if k.endswith("-2")]
            ) < len(retry):
                await asyncio.sleep(0.1)
            # A row the killed bot had claimed waits out its lease, then the new bot sends it.
            deadline = time.monotonic() + LEASE.total_seconds() + 30
            while time.monotonic() < deadline and undelivered(database):
                await asyncio.sleep(0.5)
            await asyncio.sleep(4)  # let the live counter settle
            assert await stop_bot(bot) == 0

        replies = slack_replies(fake, burst)
        # Nothing answered twice: the killed bot's unanswered requests stay unanswered.
        assert {k: v for k, v in replies.items() if k.endswith("-1")} == first
        second = {k.split("-")[0]: v for k, v in replies.items() if k.endswith("-2")}
        assert set(second) == set(retry)  # everyone who retried got an answer
        assert all(len(texts) == 1 for texts in second.values()), second
        # "You signed" exactly where this retry recorded the signature; where the killed bot had
        # committed it (but died before answering), "You already signed".
        expected = {u: "already_signed" if u in committed else "signed" for u in retry}
        assert {u: reply_kind(texts[0]) for u, texts in second.items()} == expected
        with database.session() as session:
            rows = session.exec(select(Signature)).all()
            per_member = Counter(r.member_pk for r in rows)
            assert len(per_member) == MEMBERS and set(per_member.values()) == {1}
            assert all(r.withdrawn_at is None for r in rows)
            pending = session.exec(select(OutboxMessage)).all()
            assert all(m.delivered_at is not None for m in pending)
        database.dispose()
        posts = Counter(
            c.args.get("channel")
            for c in fake.calls_to("chat.postMessage")
            if "Open for signing" in str(c.args.get("text"))
        )
        # Slack has no idempotency key: a post sent just before the kill may be sent once more.
        assert set(posts) == {"C1", "C2"} and all(1 <= n <= 2 for n in posts.values()), posts
        for channel in ("C1", "C2"):
            shown = [m for m in fake.messages_in(channel) if m.get("blocks")]
            assert any(f"{MEMBERS} signatures" in str(m["blocks"]) for m in shown)
        print(
            f"kill -9 after {len(acknowledged)} acknowledged and {len(committed)} committed "
            "signatures; "
            f"{len(retry)} retried; letter posts per channel: {dict(posts)}"
        )


async def test_kill_9_between_ack_and_commit_answers_every_acknowledged_command(
    db_url: str, tmp_path: Path
) -> None:
    """Rule 12. With answer_within 0 every /sign is acknowledged before it commits (journaled
    first): the bot is killed mid-burst, and after its restart every acknowledged request is
    answered exactly once, through its response_url, and every signature it reports exists."""
    if not db_url.startswith("postgresql"):
        pytest.skip(
            "on SQLite the journal write waits for the command's write lock, so an acknowledged "
            "command is answered within a millisecond: no window to kill in; PostgreSQL has one"
        )
    sqlite_url = db_url
    async with FakeSlack() as fake:
        from conftest import make_settings

        settings = make_settings(sqlite_url, tmp_path)
        database = Database(sqlite_url)
        with database.session() as session:
            import_roster(session, data=burst_roster(MEMBERS), actor="test")
        create_example_letter(database, settings, post_to=["slack:C1"])
        port = _free_port()
        env = slack_bot_env(
            sqlite_url, port, fake, tmp_path / "out", COSIGN_SLACK__ANSWER_WITHIN="0"
        )
        url = f"http://127.0.0.1:{port}/slack/events"
        users = [f"UB{i:04d}" for i in range(MEMBERS)]
        async with aiohttp.ClientSession() as http:
            bot = await spawn_bot(env, tmp_path, tmp_path / "bot1.log")
            await wait_healthy(http, port)
            burst = SlashBurst(http, url, fake, IN_FLIGHT)

            async def killer() -> None:
                while len(burst.acked) < MEMBERS // 2:
                    await asyncio.sleep(0.005)
                await stop_bot(bot, kill=True)
                burst.killed.set()

            await asyncio.gather(killer(), *(burst.sign(u, "1") for u in users))
            acked = set(burst.acked)
            answered_before = slack_replies(fake, burst)
            committed = signed_ids(database, "slack")
            assert not burst.inline  # answer_within 0: no answer travels in an ack
            owed = {key for key in acked if key not in answered_before}
            # Really mid-burst, and really between ack and answer for some.
            assert MEMBERS // 2 <= len(acked) < MEMBERS, len(acked)
            assert owed, "every acknowledged command had been answered before the kill"

            bot = await spawn_bot(env, tmp_path, tmp_path / "bot2.log")
            await wait_healthy(http, port)
            deadline = time.monotonic() + 60  # the journal is read at start, then every 15 s
            while time.monotonic() < deadline and not acked <= set(slack_replies(fake, burst)):
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)  # nothing more may come
            assert await stop_bot(bot) == 0

        replies = slack_replies(fake, burst)
        assert acked <= set(replies), sorted(acked - set(replies))[:10]
        # What was owed at the kill is answered exactly once, after the restart.
        assert all(len(replies[key]) == 1 for key in owed), {
            k: replies[k] for k in owed if len(replies[k]) != 1
        }
        # An answer sent in the instant before its "answered" mark committed is sent once more
        # (Slack's response_url has no idempotency key); never a third time, never many.
        again = {key for key in acked - owed if len(replies[key]) > 1}
        assert all(len(replies[key]) == 2 for key in again), again
        assert len(again) <= IN_FLIGHT, len(again)
        kinds = {key: reply_kind(text) for key in acked for text in replies[key]}
        assert set(kinds.values()) == {"signed"}, kinds
        told = {key.split("-")[0] for key in acked}
        final = signed_ids(database, "slack")
        assert told <= final
        with database.session() as session:
            rows = session.exec(select(Signature)).all()
            assert set(Counter(r.member_pk for r in rows).values()) == {1}
        database.dispose()
        print(
            f"kill -9 with {len(acked)} acknowledged ({len(owed)} not yet answered, "
            f"{len(committed)} committed); all owed answered once after the restart; "
            f"{len(again)} answered a second time"
        )


def test_reply_kinds_tell_a_new_signature_from_look_alikes() -> None:
    """The crash tests' classifier: "signed" only for the confirmation of a new signature."""
    from bot.core import Reply
    from bot.platforms.base import render_reply

    context = {
        "title": "A <b>“title”</b> & more",
        "name": "Sen. *Abetz*",
        "group": "Australia (Senate)",
        "deadline": "2030-01-01 00:00 UTC",
        "slug": "interpol-2021",
        "signed_at": "2029-12-01 10:00 UTC",
        "via": "matrix",
        "error_id": "e-1",
    }
    for fmt in ("text", "mrkdwn", "html"):
        for kind in ("signed", "already_signed", "unknown_account", "withdrawn", "apology"):
            text = render_reply(Reply(f"replies/{kind}.j2", context), fmt)
            assert reply_kind(text) == kind, (fmt, kind, text)
    for look_alike in ("You signed on 2029-12-01 10:00 UTC.", "You have not signed yet.", ""):
        assert reply_kind(look_alike).startswith("other"), look_alike
