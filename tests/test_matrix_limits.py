"""Synapse's default rate limits (rc_message 0.2/s, burst 10) and a burst of 30 `!sign`.

Thirty replies cannot leave faster than the homeserver allows (about 100 s after the first ten), so
this test is slow by nature; it checks that every signature is recorded at once, every command is
answered exactly once, and M_LIMIT_EXCEEDED was really met and waited out.
"""

from __future__ import annotations

import time
from pathlib import Path

from helpers import create_example_letter, reply_kind
from matrix_support import eventually, new_world, reply_target, running
from sqlmodel import select
from synapse_server import SynapseServer

from bot.db import Database
from bot.models import Signature


async def test_burst_of_30_signs_under_default_rate_limits(
    synapse_default_limits: SynapseServer, tmp_path: Path, sqlite_url: str
) -> None:
    server = synapse_default_limits
    world = new_world(server, tmp_path)
    burst = world.add_members(30)
    room = world.room()
    settings = world.settings(sqlite_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    create_example_letter(database, settings, post_to=[])  # open, not posted: replies only

    def recorded() -> int:
        with database.session() as session:
            return len(session.exec(select(Signature)).all())

    platform = world.platform(settings, counter_interval=5.0)
    async with running(settings, database, platform):
        began = time.monotonic()
        commands = [world.say(m.user, room, "!sign interpol-2021") for m in burst]
        await eventually(lambda: recorded() == 30, timeout=30, what="30 signatures")
        recorded_after = time.monotonic() - began

        def answered() -> int:
            targets = {reply_target(e) for e in world.bot_events(room, limit=300)}
            return len(targets & set(commands))

        await eventually(lambda: answered() == 30, timeout=240, interval=1.0, what="30 replies")
        answered_after = time.monotonic() - began
        assert platform.sender is not None
        limited = platform.sender.gate.times_limited
    print(
        f"\n30 signatures recorded in {recorded_after:.1f} s, all answered in "
        f"{answered_after:.1f} s; M_LIMIT_EXCEEDED waited out {limited} times"
    )
    assert limited > 0, "the burst never met the rate limit: the test proves nothing"
    for command in commands:
        replies = world.replies_to(room, command, limit=300)
        assert len(replies) == 1 and reply_kind(replies[0]["content"]["body"]) == "signed"
    database.dispose()
