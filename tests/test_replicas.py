"""Two `cosign run` processes on one database, both with the scheduler: one compilation, one
announcement, every reminder exactly once (PostgreSQL, and SQLite with a shared file)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

from conftest import make_settings
from fakeslack import DEFAULT_SECRET, FakeSlack
from helpers import create_example_letter, import_example_roster
from pg_server import _free_port
from process_support import bot_env, spawn_bot, stop_bot
from sqlmodel import col, select

from bot.db import Database
from bot.models import AuditEvent, Compilation, OutboxMessage, Reminder
from bot.models._types import utcnow


async def test_two_bots_compile_announce_and_remind_once(db_url: str, tmp_path: Path) -> None:
    async with FakeSlack() as fake:
        settings = make_settings(
            db_url,
            tmp_path,
            scheduler={"reminders": ["7s", "5s"]},
            coordinators={"announce": ["slack:CANNOUNCE"]},
        )
        database = Database(db_url)
        import_example_roster(database)
        create_example_letter(
            database,
            settings,
            deadline=utcnow() + timedelta(seconds=10),
            post_to=["slack:C1", "slack:C2"],
        )
        common = {
            "COSIGN_DATABASE__URL": db_url,
            "COSIGN_SCHEDULER__TICK_SECONDS": "0.2",
            "COSIGN_SCHEDULER__REMINDERS": '["7s", "5s"]',
            # the roster has no Slack ids: reminders by DM would wait for a console (none here)
            "COSIGN_SCHEDULER__DM_REMINDERS": "false",
            "COSIGN_COORDINATORS__ANNOUNCE": '["slack:CANNOUNCE"]',
            "COSIGN_SLACK__ENABLED": "true",
            "COSIGN_SLACK__MODE": "http",
            "COSIGN_SLACK__API_URL": fake.api_url,
            "SLACK_BOT_TOKEN": fake.token,
            "SLACK_SIGNING_SECRET": DEFAULT_SECRET,
        }
        bots = []
        for i in range(2):
            workdir = tmp_path / f"bot{i}"
            workdir.mkdir()
            env = bot_env(
                **common,
                COSIGN_SLACK__PORT=str(_free_port()),
                COSIGN_LETTERS__OUTPUT_DIR=str(workdir / "out"),
            )
            bots.append(await spawn_bot(env, workdir, tmp_path / f"bot{i}.log"))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not fake.files:
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)  # room for a second bot to (wrongly) announce again
        finally:
            codes = [await stop_bot(bot) for bot in bots]
        logs = "".join((tmp_path / f"bot{i}.log").read_text() for i in range(2))
        assert codes == [0, 0], logs
        assert "Traceback" not in logs, logs
        with database.session() as session:
            assert len(session.exec(select(Compilation)).all()) == 1
            closes = session.exec(
                select(AuditEvent).where(AuditEvent.action == "letter.closed")
            ).all()
            assert len(closes) == 1
            reminders = session.exec(select(Reminder)).all()
            assert sorted((r.offset_label, r.status) for r in reminders) == [
                ("5s", "sent"),
                ("7s", "sent"),
            ]
            undelivered = session.exec(
                select(OutboxMessage).where(col(OutboxMessage.delivered_at).is_(None))
            ).all()
            assert undelivered == []
        database.dispose()
        uploads = list(fake.files.values())
        assert sorted(u.filename for u in uploads) == [
            "interpol-2021.html",
            "interpol-2021.pdf",
            "interpol-2021.txt",
        ]
        posts = fake.calls_to("chat.postMessage")
        for channel in ("C1", "C2"):
            texts = [str(c.args.get("text")) for c in posts if c.args.get("channel") == channel]
            assert sum("Open for signing" in t for t in texts) == 1, texts
            assert sum("Reminder" in t for t in texts) == 2, texts  # 7s and 5s, once each
            assert sum("closed at" in t for t in texts) == 1, texts
        written = [p for p in tmp_path.glob("bot*/out/interpol-2021/letter.txt")]
        assert len(written) >= 1
