"""Shared fixtures: a fresh database per test on SQLite and (when configured) PostgreSQL.

PostgreSQL is used when COSIGN_TEST_POSTGRES_URL is set (.ci/run sets it): each test run creates its
own schema, migrates it once, truncates between tests and drops it at the end.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from synapse_server import synapse, synapse_default_limits  # noqa: F401  (session fixtures)

from bot.config import Settings, load_settings
from bot.db import Database
from bot.platforms.console import ConsolePlatform
from bot.runtime import Bot

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
POSTGRES_URL = os.environ.get("COSIGN_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack-sdk sends even loopback traffic through *_PROXY variables (it ignores NO_PROXY)."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SKIP_SLACK_SDK_WARNING", "1")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy (migrating per test is slower)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("COSIGN_TEST_POSTGRES_URL is not set")
    schema = f"cosign_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    database = Database(url)
    database.upgrade()
    database.dispose()
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _truncate_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        tables = (
            conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename <> 'alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        if tables:
            names = ", ".join(f'"{t}"' for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database for this test, on each configured backend."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "cosign.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_schema_url")
    _truncate_postgres(url)
    return str(url)


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: for tests about processes sharing one file, or CLI runs."""
    path = tmp_path / "cosign.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def make_settings(db_url: str, tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    overrides: dict[str, Any] = {
        "database": {"url": db_url},
        "letters": {"output_dir": str(tmp_path / "out")},
        "scheduler": {"tick_seconds": 0.1, "reminders": ["24h", "1h"]},
        "coordinators": {"console": ["coordinator"], "announce": ["console:#secretariat"]},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(None, overrides)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.database.url)
    yield db
    db.dispose()


class ConsoleHarness:
    """Drives the real console platform and bot in-process; collects what it prints."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.out = io.StringIO()
        self.console = ConsolePlatform(
            user="coordinator", channel="#general", stdout=self.out, interactive=False
        )
        self.bot = Bot(settings, database, [self.console], scheduler=False, poll_seconds=0.05)
        self._mark = 0

    async def __aenter__(self) -> ConsoleHarness:
        await self.bot.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bot.stop()

    async def send(self, *lines: str) -> str:
        """Feed lines, wait for the outbox, and return only what was printed since last time."""
        for line in lines:
            await self.console.handle_line(line)
        await self.bot.drain(platforms=["console"], timeout=10)
        value = self.out.getvalue()
        new, self._mark = value[self._mark :], len(value)
        return new


@pytest.fixture
def console_harness(settings: Settings, database: Database) -> ConsoleHarness:
    return ConsoleHarness(settings, database)
