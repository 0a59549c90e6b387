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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from bot.config import Settings
from bot.db import Database
from bot.models import Member
from bot.models._types import utcnow
from bot.store import events
from bot.store.members import is_coordinator_member, member_for_account
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


class Dispatcher:
    """Runs one invocation in one transaction; the reply exists only after the commit."""

    def __init__(self, settings: Settings, database: Database, registry: Registry) -> None:
        self.settings = settings
        self.database = database
        self.registry = registry

    def dispatch(self, invocation: Invocation, *, now: datetime | None = None) -> list[Reply]:
        command = self.registry.commands.get(invocation.command)
        if command is None:
            return [error_reply(f"Unknown command {invocation.command!r}. Try help.")]
        journaled = invocation.reply_to is not None and bool(invocation.event_id)
        try:
            with self.database.session() as session:
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
                queued = bool(session.info.get(QUEUED_MESSAGES))
                reply = (
                    result
                    if isinstance(result, Reply)
                    else Reply(command.template, result, command.visibility)
                )
                if queued:
                    reply = replace(reply, wakes_outbox=True)
                if journaled:
                    events.record(
                        session,
                        platform=invocation.platform,
                        event_id=invocation.event_id,
                        replies=[reply],
                        reply_to=invocation.reply_to,
                        answered=claim.fresh and bool((invocation.reply_to or {}).get("inline")),
                    )
            return [reply]
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
