"""Matrix `!sign` command-to-reply latency against a bare matrix-nio echo bot (DESIGN.md §7).

Starts a throwaway Synapse (tests/synapse_server.py) on loopback, two rooms with the same members:
in one a bare nio bot (sync_forever + a callback that replies with an m.notice) answers `!ping`,
in the other cosign's Matrix platform answers `!sign` (a real signature: handler, transaction,
audit event, durable reply). Commands alternate between the rooms so both see the same load.
Latency is the reply's `origin_server_ts` minus the command's (one clock: the homeserver's).

    .venv/bin/python bench/matrix_sign.py [--samples 40] [--members 20]

Prints both medians and the ratio; the target is cosign ≤ 1.5 × the echo bot.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import create_example_letter  # noqa: E402
from nio import AsyncClient, AsyncClientConfig, MatrixRoom, RoomMessageText  # noqa: E402
from synapse_server import SynapseServer, unique_localpart  # noqa: E402

from bot.config import load_settings  # noqa: E402
from bot.db import Database  # noqa: E402
from bot.platforms.matrix import MatrixPlatform  # noqa: E402
from bot.roster import import_roster  # noqa: E402
from bot.runtime import Bot  # noqa: E402


def reply_target(event: dict[str, Any]) -> str | None:
    rel = event.get("content", {}).get("m.relates_to") or {}
    target = (rel.get("m.in_reply_to") or {}).get("event_id")
    return target if isinstance(target, str) else None


async def measure(server: SynapseServer, token: str, room: str, sender: str, body: str) -> int:
    event_id = await asyncio.to_thread(server.send_text, sender, room, body)
    reply = await server.wait_for_event_async(
        token, room, lambda e: reply_target(e) == event_id, timeout=30, history=20
    )
    command = server.request(
        "GET", f"/_matrix/client/v3/rooms/{room}/event/{event_id}", token=token
    )
    return int(reply["origin_server_ts"]) - int(command["origin_server_ts"])


async def run(samples: int, member_count: int, work: Path) -> tuple[list[int], list[int]]:
    server = SynapseServer(work / "synapse")
    server.start()
    try:
        owner = server.register_user(unique_localpart("owner"))
        echo = server.register_user(unique_localpart("echo"))
        cosign = server.register_user(unique_localpart("cosign"))
        members = [server.register_user(unique_localpart("m")) for _ in range(member_count)]
        invite = [m.user_id for m in members]
        echo_room = server.create_room(owner.access_token, invite=[*invite, echo.user_id])
        sign_room = server.create_room(owner.access_token, invite=[*invite, cosign.user_id])
        for room, bot_user in ((echo_room, echo), (sign_room, cosign)):
            server.join(bot_user.access_token, room)
            for m in members:
                server.join(m.access_token, room)

        # The bare echo bot.
        client = AsyncClient(
            server.base_url,
            echo.user_id,
            device_id=echo.device_id,
            config=AsyncClientConfig(encryption_enabled=False),
        )
        client.restore_login(echo.user_id, echo.device_id, echo.access_token)

        async def on_message(room: MatrixRoom, event: RoomMessageText) -> None:
            if event.sender != echo.user_id and event.body.startswith("!ping"):
                await client.room_send(
                    room.room_id,
                    "m.room.message",
                    {
                        "msgtype": "m.notice",
                        "body": "pong",
                        "m.mentions": {},
                        "m.relates_to": {"m.in_reply_to": {"event_id": event.event_id}},
                    },
                )

        client.add_event_callback(on_message, RoomMessageText)  # type: ignore[arg-type]
        await client.sync(timeout=0)
        echo_task = asyncio.create_task(client.sync_forever(timeout=30_000))

        # cosign, with a roster of the members and one open letter posted in its room.
        db_url = f"sqlite:///{work / 'cosign.db'}"
        settings = load_settings(
            None,
            {
                "database": {"url": db_url},
                "letters": {"output_dir": str(work / "out")},
                "console": {"enabled": False},
                "matrix": {
                    "enabled": True,
                    "homeserver": server.base_url,
                    "user_id": cosign.user_id,
                    "device_id": cosign.device_id,
                    "store_path": str(work / "store"),
                    "encryption": False,
                },
            },
        )
        database = Database(db_url)
        database.upgrade()

        header = (
            "member_id,title,given_name,family_name,post_nominals,group,display_name,"
            "email,slack_id,matrix_id,role\n"
        )
        rows = "".join(
            f"m{i},,Given,Family{i},MP,Group,,,,{m.user_id},member\n" for i, m in enumerate(members)
        )
        with database.session() as session:
            import_roster(session, data=header + rows, actor="bench")
        create_example_letter(database, settings, post_to=[f"matrix:{sign_room}"])
        platform = MatrixPlatform(settings, access_token=cosign.access_token, counter_interval=60.0)
        bot = Bot(settings, database, [platform], scheduler=False)
        await bot.start()
        try:
            await asyncio.sleep(1.0)  # the letter post goes out
            echo_ms: list[int] = []
            sign_ms: list[int] = []
            for i in range(samples):
                member = members[i % len(members)]
                echo_ms.append(
                    await measure(
                        server, owner.access_token, echo_room, member.access_token, f"!ping {i}"
                    )
                )
                verb = "!sign" if (i // len(members)) % 2 == 0 else "!unsign"
                sign_ms.append(
                    await measure(server, owner.access_token, sign_room, member.access_token, verb)
                )
        finally:
            await bot.stop()
            echo_task.cancel()
            await client.close()
            database.dispose()
        return echo_ms, sign_ms
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--members", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="cosign-bench-") as tmp:
        echo_ms, sign_ms = asyncio.run(run(args.samples, args.members, Path(tmp)))
    for name, values in (("echo bot", echo_ms), ("cosign", sign_ms)):
        p90 = sorted(values)[int(len(values) * 0.9)]
        print(f"{name:10} median {statistics.median(values):.0f} ms  (p90 {p90} ms)")
    ratio = statistics.median(sign_ms) / max(1.0, statistics.median(echo_ms))
    print(f"ratio      {ratio:.2f} (target ≤ 1.5)")


if __name__ == "__main__":
    main()
