"""`cosign run` runs commands in a forked worker process, and outlives that worker's death."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
from fakeslack import DEFAULT_SECRET, FakeSlack, sign_request, slash_command_body
from helpers import create_example_letter
from pg_server import _free_port
from process_support import slack_bot_env, spawn_bot, stop_bot, wait_healthy
from slack_support import burst_roster, inline_answer, reply_text
from sqlmodel import select

from bot.db import Database
from bot.models import Member, Signature
from bot.roster import import_roster


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


async def _sign(http: aiohttp.ClientSession, url: str, fake: FakeSlack, user: str, n: int) -> str:
    token = f"{user}-{n}"
    body = slash_command_body("/sign", "", user, response_url=fake.response_url(token))
    form = "application/x-www-form-urlencoded"
    headers = {"Content-Type": form, **sign_request(DEFAULT_SECRET, body)}
    async with http.post(url, data=body, headers=headers) as response:
        assert response.status == 200
        answer = inline_answer(response.status, await response.text())
    if answer is not None:  # answered in the acknowledgement
        return reply_text(answer)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        calls = [c for c in fake.calls_to("response_url") if c.path.endswith(token)]
        if calls:
            return reply_text(calls[0].args)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no reply for {token}")


def _signed(database: Database) -> set[str]:
    with database.session() as session:
        query = select(Member.member_id).join(Signature, Signature.member_pk == Member.id)  # type: ignore[arg-type]
        return set(session.exec(query).all())


async def test_commands_run_in_a_worker_and_a_dead_worker_costs_one_apology(
    db_url: str, tmp_path: Path
) -> None:
    async with FakeSlack() as fake:
        from conftest import make_settings

        settings = make_settings(db_url, tmp_path)
        database = Database(db_url)
        with database.session() as session:
            import_roster(session, data=burst_roster(3), actor="test")
        create_example_letter(database, settings, post_to=["slack:C1"])
        port = _free_port()
        env = slack_bot_env(db_url, port, fake, tmp_path / "out")
        url = f"http://127.0.0.1:{port}/slack/events"
        log = tmp_path / "bot.log"
        async with aiohttp.ClientSession() as http:
            bot = await spawn_bot(env, tmp_path, log)
            try:
                await wait_healthy(http, port)
                workers = _children(bot.pid)
                assert workers, "no command worker process"
                assert f"commands run in {len(workers)} worker process(es)" in log.read_text()

                assert "You signed" in await _sign(http, url, fake, "UB0000", 1)
                assert _signed(database) == {"m000"}

                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.5)
                # The command that finds the worker dead is answered, with an error id...
                answer = await _sign(http, url, fake, "UB0001", 1)
                assert "something went wrong on our side" in answer and "error id" in answer
                # ...and the bot carries on: trying again signs, the first signature stands.
                assert "You signed" in await _sign(http, url, fake, "UB0001", 2)
                assert "already signed" in await _sign(http, url, fake, "UB0000", 2)
                assert _signed(database) == {"m000", "m001"}
                assert "a command worker process died" in log.read_text()
            finally:
                assert await stop_bot(bot) == 0
        database.dispose()


async def test_a_killed_bot_takes_its_worker_with_it(db_url: str, tmp_path: Path) -> None:
    """kill -9 of `cosign run` must not leave its worker holding the database (and running)."""
    async with FakeSlack() as fake:
        port = _free_port()
        env = slack_bot_env(db_url, port, fake, tmp_path / "out")
        async with aiohttp.ClientSession() as http:
            bot = await spawn_bot(env, tmp_path, tmp_path / "bot.log")
            await wait_healthy(http, port)
            workers = _children(bot.pid)
            assert workers
            await stop_bot(bot, kill=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            await asyncio.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
