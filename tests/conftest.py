"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL.

Every `db_url` test runs on both backends, so `make test` is the whole suite on any machine.
PostgreSQL comes from, in order: COSIGN_TEST_POSTGRES_URL; the local server at LOCAL_POSTGRES_URL;
a throwaway cluster started from the installed server binaries (tests/pg_server.py) for this
session. Where none of these exists the PostgreSQL variants are reported as skipped, with why.
Each test run creates its own database (its own schema where it may not create databases),
migrates it once, truncates between tests and drops it at the end.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg_server
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError
from synapse_server import synapse, synapse_default_limits  # noqa: F401  (session fixtures)

from bot.config import Settings, load_settings
from bot.db import Database
from bot.platforms.console import ConsolePlatform
from bot.runtime import Bot

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LOCAL_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgres"]  # always both: an unavailable PostgreSQL shows as skipped
_postgres_used: list[str] = []  # where the PostgreSQL variants ran, for the summary line


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


def _reachable(url: str) -> str:
    """'' if a connection to url works, else why not (the first line of the error)."""
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "use something else"
        cause = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's wrapper
        return (str(cause).splitlines() or [cause.__class__.__name__])[0]
    finally:
        engine.dispose()
    return ""


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server for this session: the configured one, the local one, or a throwaway."""
    configured = os.environ.get("COSIGN_TEST_POSTGRES_URL", "")
    if configured:  # asked for explicitly: if it does not answer, the tests fail, not skip
        _postgres_used.append(f"COSIGN_TEST_POSTGRES_URL ({configured})")
        yield configured
        return
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL: the psycopg driver is not installed (pip install -e '.[test]')")
    local_error = _reachable(LOCAL_POSTGRES_URL)
    if not local_error:
        _postgres_used.append(f"the local server ({LOCAL_POSTGRES_URL})")
        yield LOCAL_POSTGRES_URL
        return
    if not pg_server.available():
        pytest.skip(
            "PostgreSQL unavailable: COSIGN_TEST_POSTGRES_URL is unset, "
            f"{LOCAL_POSTGRES_URL} does not answer ({local_error}) and no server binaries "
            "under /usr/lib/postgresql/*/bin to start a throwaway cluster"
        )
    with pg_server.throwaway() as server:
        _postgres_used.append(f"a throwaway cluster ({server.url}; local: {local_error})")
        yield server.url


@pytest.fixture(scope="session")
def postgres_run_url(postgres_server_url: str) -> Iterator[str]:
    """This run's own database on the server (or, without CREATEDB, its own schema), migrated
    once and dropped at the end. A database of its own also keeps the audit chain's advisory
    lock (per database, not per schema) from making concurrent runs wait for each other.
    """
    name = f"cosign_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        own_database = True
        url = make_url(postgres_server_url).set(database=name).render_as_string(False)
    except DBAPIError:  # no CREATEDB privilege: a schema in the configured database
        own_database = False
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        separator = "&" if "?" in postgres_server_url else "?"
        url = f"{postgres_server_url}{separator}options=-csearch_path%3D{name}"
    try:
        database = Database(url)
        database.upgrade()
        database.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            if not own_database:
                conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
            elif conn.dialect.server_version_info >= (13,):  # type: ignore[operator]
                # FORCE: a killed bot's connections may not be gone yet.
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            else:
                conn.execute(text(f'DROP DATABASE "{name}"'))
        admin.dispose()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which PostgreSQL the postgres variants used: a throwaway cluster is worth knowing."""
    for where in _postgres_used:
        terminalreporter.write_line(f"PostgreSQL variants ran against {where}")


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
    """A fresh, migrated database for this test, on each backend."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "cosign.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_run_url")
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
