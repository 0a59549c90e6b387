"""The bot under trouble: PostgreSQL restarted under it, and a deadline passing while it is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pg_server
import pytest
from fakeslack import slash_command_body
from helpers import create_example_letter, import_example_roster
from process_support import bot_env, spawn_bot, stop_bot
from slack_support import SlackHarness, reply_text

from bot.db import Database
from bot.models._types import utcnow
from bot.store import letters


@pytest.fixture
def private_postgres() -> Iterator[pg_server.ThrowawayPostgres]:
    """A cluster of this test's own: the test really stops and starts it."""
    if not pg_server.available():
        pytest.skip("PostgreSQL server binaries are not installed")
    with pg_server.throwaway(stop_mode="immediate") as server:
        Database(server.url).upgrade()
        yield server


async def test_postgres_restart_answers_try_again_and_recovers(
    private_postgres: pg_server.ThrowawayPostgres, tmp_path: Path
) -> None:
    async with SlackHarness(private_postgres.url, tmp_path) as h:
        slug = "interpol-2021"
        create_example_letter(h.database, h.settings, post_to=["slack:C1"])
        await h.post(
            slash_command_body("/sign", slug, "UABETZ", response_url=h.fake.response_url("before"))
        )
        assert "signed" in reply_text((await h.replies("before"))[0])

        await asyncio.to_thread(private_postgres.stop, "fast")
        status, _, elapsed = await h.post(
            slash_command_body("/sign", slug, "UALTON", response_url=h.fake.response_url("down"))
        )
        assert status == 200 and elapsed < 3  # still acked at once
        down = reply_text((await h.replies("down", timeout=30))[0])
        assert "try again" in down and "Traceback" not in down

        await asyncio.to_thread(private_postgres.start)
        await h.post(
            slash_command_body("/sign", slug, "UALTON", response_url=h.fake.response_url("after"))
        )
        assert "signed" in reply_text((await h.replies("after", timeout=30))[0])
        await h.settle()  # the background loops are still alive and working
        with h.database.session() as session:
            letter = letters.get_letter(session, slug=slug)
            assert letter is not None
        assert h.fake.messages_in("C1")  # the post went out after recovery
        assert "2 signatures" in str(h.fake.messages_in("C1")[0]["blocks"])


async def test_deadline_passed_while_down_compiles_within_one_tick_of_start(
    sqlite_url: str, tmp_path: Path
) -> None:
    from conftest import make_settings

    settings = make_settings(sqlite_url, tmp_path)
    database = Database(sqlite_url)
    import_example_roster(database)
    create_example_letter(
        database, settings, deadline=utcnow() + timedelta(hours=1), post_to=["console:#members"]
    )
    with database.session() as session:  # the deadline passed while no bot was running
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None
        letter.deadline = utcnow() - timedelta(minutes=10)
        session.add(letter)
    # The second tick comes `tick` seconds after the first, and the first no earlier than the
    # process start: a close less than `tick` after the spawn can only be the first tick's.
    tick = 20.0
    env = bot_env(
        COSIGN_DATABASE__URL=sqlite_url,
        COSIGN_SCHEDULER__TICK_SECONDS=str(tick),
        COSIGN_LETTERS__OUTPUT_DIR=str(tmp_path / "out"),
    )
    log = tmp_path / "bot.log"
    spawned_at = utcnow()
    process = await spawn_bot(env, tmp_path, log)
    try:
        deadline = time.monotonic() + 2 * tick
        while time.monotonic() < deadline and not (tmp_path / "out/interpol-2021").exists():
            await asyncio.sleep(0.1)
    finally:
        assert await stop_bot(process) == 0
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None and letter.id is not None
        assert letter.state == "closed" and letter.closed_at is not None, log.read_text()
        compilation = letters.get_compilation(session, letter_pk=letter.id)
        assert compilation is not None
    # Closed by this bot (not before it started) and on its first tick (before any second one).
    assert spawned_at <= letter.closed_at <= compilation.compiled_at
    assert (compilation.compiled_at - spawned_at).total_seconds() < tick, log.read_text()
    assert log.read_text().count("closed interpol-2021 at its deadline") == 1
    assert (tmp_path / "out/interpol-2021/letter.txt").exists()
    database.dispose()
