"""Engine, sessions and migrations for SQLite (WAL) and PostgreSQL.

SQLite transactions start with BEGIN IMMEDIATE so two processes sharing one file serialise their
writes instead of forking the audit chain or both closing a letter; PostgreSQL uses row locks and an
advisory lock around the audit chain (see bot.store.audit).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlmodel import Session

log = logging.getLogger(__name__)

#: Alembic's package-resource form, resolved through importlib: found wherever bot is installed.
MIGRATIONS = "bot:migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: a connection execution option: its SQLite transactions begin deferred, taking no write lock
READ_ONLY_OPTION = "cosign_read_only"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _create_private(Path(parsed.database).expanduser())
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            poolclass=NullPool if parsed.database in (None, "", ":memory:") else None,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only: it holds the roster's e-mail addresses.

    SQLite gives the -wal and -shm files the database file's permissions. An existing file keeps
    the mode its owner gave it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (so we can BEGIN IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A reader (health checks) must not queue behind writers for the write lock.
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def is_postgres(session_or_engine: Session | Engine) -> bool:
    bind = (
        session_or_engine.get_bind()
        if isinstance(session_or_engine, Session)
        else session_or_engine
    )
    return bind.dialect.name == "postgresql"


class Database:
    """The engine plus a session factory; one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def ping(self) -> None:
        """Check the database answers, without the write lock (a GET flood must not contend
        with signing: every other transaction begins BEGIN IMMEDIATE on SQLite)."""
        with self.engine.connect() as conn:
            conn.execution_options(**{READ_ONLY_OPTION: True})
            conn.execute(text("SELECT 1"))

    def upgrade(self) -> None:
        """Apply pending migrations, then recompute derived data they leave stale."""
        from bot.store.members import refresh_listing_fields  # the store imports the models

        upgrade(self.engine)
        with self.session() as session:
            refreshed = refresh_listing_fields(session)
        if refreshed:
            log.info("computed the filing keys and printed names of %d members", refreshed)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Apply pending migrations (every CLI command calls this first)."""
    config = alembic_config(engine)
    command.upgrade(config, "head")
