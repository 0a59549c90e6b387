"""What every chat platform adapter provides, and what the core gives it back."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bot.core import Reply
from bot.templating import render

if TYPE_CHECKING:
    from bot.models import OutboxMessage
    from bot.publishing import PostView
    from bot.runtime import Bot


@dataclass(frozen=True)
class Delivery:
    """The outcome of sending one outbox message; platform failures stay in these values."""

    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    retry_after: float | None = None  # seconds, from a rate limit
    permanent: bool = False  # retrying will not help (e.g. the channel does not exist)

    @classmethod
    def sent(cls, **result: Any) -> Delivery:
        return cls(ok=True, result=result)

    @classmethod
    def failed(
        cls, error: str, *, retry_after: float | None = None, permanent: bool = False
    ) -> Delivery:
        return cls(ok=False, error=error, retry_after=retry_after, permanent=permanent)


class Platform(abc.ABC):
    name: str
    #: how users type commands here ("!sign" or "/sign"); templates show it in hints
    command_prefix: str = "!"

    @abc.abstractmethod
    async def start(self, bot: Bot) -> None:
        """Connect and start receiving commands; return once running."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect; safe to call twice."""

    @abc.abstractmethod
    async def deliver(self, message: OutboxMessage) -> Delivery:
        """Send one outbox message (letter post, reminder, compiled letter, …)."""

    #: at most one edit of a letter post every this many seconds (the live counter)
    counter_interval: float = 3.0
    #: whether letter posts on this platform show a live counter that needs editing
    live_counter: bool = False

    async def update_post(self, post: PostView) -> Delivery:
        """Edit a letter post to show its current count and state (buttons gone once closed)."""
        return Delivery.sent()


def render_reply(reply: Reply, fmt: str) -> str:
    return render(reply.template, fmt, **reply.context).strip("\n")


class Prefixed(Protocol):
    """Anything that knows how its platform's commands are typed (`/sign`, `!sign`)."""

    command_prefix: str


def render_message(platform: Prefixed, payload: dict[str, Any], fmt: str) -> str:
    """An outbox `message` (template + context) for this platform, e.g. a reminder."""
    context = {"prefix": platform.command_prefix, **payload["context"]}
    return render(payload["template"], fmt, **context).strip("\n")
