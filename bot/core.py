"""The platform-neutral command core: Invocation in, Reply out, no I/O of its own.

Adapters translate a platform event into an ``Invocation`` and render the ``Reply`` objects they
get back. Handlers register with ``@command`` (errbot's ``@botcmd(template=…)``): they return a dict
for their template, or a ``Reply``; their docstring is their help text.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Dialect
from sqlalchemy import text as sql_text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from bot.config import Settings
from bot.db import Database
from bot.models import Member
from bot.models._types import utcnow
from bot.store import events
from bot.store.members import is_coordinator_member, member_for_account, prefetch_accounts
from bot.store.outbox import QUEUED_MESSAGES

log = logging.getLogger(__name__)

Visibility = Literal["private", "public"]
PREFIXES = ("!", "/")


@dataclass(frozen=True)
class Invocation:
    platform: str
    channel: str
    user: str
    command: str
    args: list[str] = field(default_factory=list)
    thread: str | None = None  # the message id this command replies to / is threaded under
    event_id: str = ""
    display_name: str = ""
    # Set: the command is journaled under event_id (run once, its replies kept until answered);
    # what the platform needs to answer it after a restart (DESIGN.md rule 12).
    reply_to: dict[str, Any] | None = None


@dataclass(frozen=True)
class Reply:
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    visibility: Visibility = "private"
    # The command queued outbox messages: the deliverer should look now, not at its next poll.
    # Most commands (every signature) queue nothing and leave the outbox alone.
    wakes_outbox: bool = False


class CommandError(Exception):
    """An expected refusal: its message is shown to the user as it is."""


class UsageError(CommandError):
    """Bad arguments: the user gets the command's usage line."""


class TryAgain(CommandError):
    """The database is unavailable for a moment."""


def parse_text(text: str) -> tuple[str, list[str]] | None:
    """'!sign interpol-2021' or '/sign' -> ('sign', ['interpol-2021']); None if not a command."""
    stripped = text.strip()
    if len(stripped) < 2 or stripped[0] not in PREFIXES or stripped[1] in PREFIXES + (" ",):
        return None
    body = stripped[1:]
    try:
        words = shlex.split(body)
    except ValueError:
        words = body.split()
    if not words:
        return None
    return words[0].lower(), words[1:]


Handler = Callable[["Context", list[str]], "dict[str, Any] | Reply"]


@dataclass
class Command:
    name: str
    usage: str
    template: str
    handler: Handler
    visibility: Visibility
    coordinator_only: bool

    @property
    def help(self) -> str:
        return inspect.cleandoc(self.handler.__doc__ or "").split("\n\n")[0]


class Registry:
    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}

    def command(
        self,
        name: str,
        *,
        usage: str,
        template: str,
        visibility: Visibility = "private",
        coordinator_only: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            if name in self.commands:
                raise ValueError(f"command {name!r} registered twice")
            self.commands[name] = Command(
                name, usage, template, handler, visibility, coordinator_only
            )
            return handler

        return register


@dataclass
class Context:
    """What a handler may use: settings, a session in an open transaction, the clock, the caller."""

    settings: Settings
    session: Session
    invocation: Invocation
    now: datetime
    command: Command | None = None
    _member: Member | None = None
    _member_loaded: bool = False

    @property
    def member(self) -> Member | None:
        if not self._member_loaded:
            self._member = member_for_account(
                self.session, platform=self.invocation.platform, external_id=self.invocation.user
            )
            self._member_loaded = True
        return self._member

    @property
    def is_coordinator(self) -> bool:
        inv = self.invocation
        if inv.user in self.settings.coordinators.for_platform(inv.platform):
            return True
        return is_coordinator_member(self.session, platform=inv.platform, external_id=inv.user)

    @property
    def actor(self) -> str:
        return f"{self.invocation.platform}:{self.invocation.user}"

    def require_coordinator(self) -> None:
        if not self.is_coordinator:
            raise CommandError("Only coordinators can do that.")

    def usage(self, usage: str | None = None) -> UsageError:
        text = usage or (self.command.usage if self.command else "")
        return UsageError(f"Usage: {text}")


#: PostgreSQL, in a batch: the longest a command waits for a lock while the transaction holds
#: those of the commands before it (see `dispatch_many`)
BATCH_LOCK_TIMEOUT = "100ms"
_BOUND_LOCK_WAITS = sql_text(f"SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'")


def _plain_savepoints(dialect: Dialect) -> None:
    """Emit SAVEPOINT and RELEASE SAVEPOINT as plain SQL, the very text SQLAlchemy compiles.

    Each savepoint has a name of its own, so SQLAlchemy compiles both statements anew every
    time (its statement cache never holds them): ~40 µs a command in a group commit, many times
    what the database spends on them. (A savepoint's rollback, rare, keeps the compiled path.)
    """
    quote = dialect.identifier_preparer.quote

    def savepoint(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"SAVEPOINT {quote(name)}")

    def release(connection: Connection, name: str) -> None:
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {quote(name)}")

    dialect.do_savepoint = savepoint  # type: ignore[method-assign]
    dialect.do_release_savepoint = release  # type: ignore[method-assign]


class Dispatcher:
    """Runs invocations in transactions; a reply exists only after its transaction committed."""

    def __init__(self, settings: Settings, database: Database, registry: Registry) -> None:
        self.settings = settings
        self.database = database
        self.registry = registry
        _plain_savepoints(database.engine.dialect)

    def dispatch(self, invocation: Invocation, *, now: datetime | None = None) -> list[Reply]:
        """One invocation in one transaction."""
        command = self.registry.commands.get(invocation.command)
        if command is None:
            return [_unknown(invocation)]
        try:
            with self.database.session() as session:
                replies = self._run(session, command, invocation, now)
            return replies
        except CommandError as exc:
            return [error_reply(str(exc))]
        except (OperationalError, DBAPIError) as exc:
            if getattr(exc, "connection_invalidated", False) or isinstance(exc, OperationalError):
                log.warning(
                    "database unavailable for %s: %s", invocation.command, exc.__class__.__name__
                )
                return [
                    error_reply(
                        "The database is not reachable right now; please try again in a moment."
                    )
                ]
            return [apology(invocation, exc)]
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are caught
            return [apology(invocation, exc)]

    def dispatch_many(
        self, invocations: Sequence[Invocation], *, now: datetime | None = None
    ) -> list[list[Reply]]:
        """Group commit: the invocations in one transaction, each in a savepoint; their replies
        (in order) exist only after the one commit.

        A commit costs as much as a signature, and a burst queues commands behind the worker
        anyway. Each command's refusal (CommandError) or failure rolls back its savepoint only:
        it gets the reply `dispatch` would give, the others commit. One that meets a database
        error runs again alone after the commit (its own transaction, `dispatch`'s handling);
        if the shared transaction cannot commit, every command runs again alone.

        PostgreSQL: a batch holds the locks of its earlier commands (the audit chain's lock, a
        letter's row, a journal key) while a later one waits, an order no single command has;
        so after the first command a lock wait is bounded, and a command that hits the bound
        runs alone after the commit instead of deadlocking with another transaction.
        """
        if len(invocations) <= 1:
            return [self.dispatch(invocation, now=now) for invocation in invocations]
        results: list[list[Reply]] = [[] for _ in invocations]
        alone: list[int] = []
        journal: list[events.Record] = []
        try:
            with self.database.session() as session:
                queued = False
                bounded = session.get_bind().dialect.name != "postgresql"
                callers = [
                    (i.platform, i.user) for i in invocations if i.command in self.registry.commands
                ]
                prefetch_accounts(session, accounts=callers)  # one query, not one each
                for index, invocation in enumerate(invocations):
                    command = self.registry.commands.get(invocation.command)
                    if command is None:
                        results[index] = [_unknown(invocation)]
                        continue
                    if not bounded and index > 0:
                        session.execute(_BOUND_LOCK_WAITS)
                        bounded = True
                    session.info[QUEUED_MESSAGES] = False  # per command: does its reply wake
                    mine: list[events.Record] = []
                    try:
                        with session.begin_nested():
                            results[index] = self._run(session, command, invocation, now, mine)
                        queued = queued or bool(session.info.get(QUEUED_MESSAGES))
                        journal += mine  # its savepoint is released: it stands
                    except CommandError as exc:
                        results[index] = [error_reply(str(exc))]
                    except DBAPIError as exc:
                        log.info(
                            "%s gave way in a batch (%s); it runs alone after the commit",
                            invocation.command,
                            getattr(exc, "orig", exc).__class__.__name__,
                        )
                        alone.append(index)
                    except Exception as exc:  # noqa: BLE001 - as in dispatch: an apology
                        results[index] = [apology(invocation, exc)]
                session.info[QUEUED_MESSAGES] = queued  # what the whole transaction queued
                events.record_many(session, records=journal)  # the replies, with their effects
        except Exception as exc:  # noqa: BLE001 - the commit failed: each runs again alone
            log.warning(
                "group commit of %d commands failed (%s); running each alone",
                len(invocations),
                exc.__class__.__name__,
            )
            return [self.dispatch(invocation, now=now) for invocation in invocations]
        for index in alone:
            results[index] = self.dispatch(invocations[index], now=now)
        return results

    def _run(
        self,
        session: Session,
        command: Command,
        invocation: Invocation,
        now: datetime | None,
        journal: list[events.Record] | None = None,
    ) -> list[Reply]:
        """The command in the session's transaction (or savepoint): its journal claim, its
        handler, its reply; raises what the handler raises. Its journal record is written now,
        or added to `journal` (a group commit writes those together before its commit)."""
        journaled = invocation.reply_to is not None and bool(invocation.event_id)
        if journaled:
            claim = events.claim(
                session, platform=invocation.platform, event_id=invocation.event_id
            )
            if not claim.run:  # a retry or a replay: it ran, and is answered once
                return []
        context = Context(self.settings, session, invocation, now or utcnow(), command)
        if command.coordinator_only:
            context.require_coordinator()
        result = command.handler(context, list(invocation.args))
        reply = (
            result
            if isinstance(result, Reply)
            else Reply(command.template, result, command.visibility)
        )
        if session.info.get(QUEUED_MESSAGES):
            reply = replace(reply, wakes_outbox=True)
        if journaled:
            record = events.Record(
                invocation.platform,
                invocation.event_id,
                [reply],
                invocation.reply_to,
                answered=claim.fresh and bool((invocation.reply_to or {}).get("inline")),
            )
            if journal is None:
                events.record_many(session, records=[record])
            else:
                journal.append(record)
        return [reply]


def _unknown(invocation: Invocation) -> Reply:
    return error_reply(f"Unknown command {invocation.command!r}. Try help.")


def error_reply(message: str) -> Reply:
    return Reply("replies/error.j2", {"message": message}, "private")


def apology(invocation: Invocation, exc: BaseException) -> Reply:
    error_id = secrets.token_hex(4)
    log.error(
        "error %s handling %s from %s:%s",
        error_id,
        invocation.command,
        invocation.platform,
        invocation.user,
        exc_info=exc,
    )
    return Reply("replies/apology.j2", {"error_id": error_id}, "private")
