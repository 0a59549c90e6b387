"""What every chat platform adapter provides, and what the core gives it back."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.core import Reply
from bot.templating import render

if TYPE_CHECKING:
    from bot.models import OutboxMessage
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

    @abc.abstractmethod
    async def start(self, bot: Bot) -> None:
        """Connect and start receiving commands; return once running."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect; safe to call twice."""

    @abc.abstractmethod
    async def deliver(self, message: OutboxMessage) -> Delivery:
        """Send one outbox message (letter post, reminder, compiled letter, …)."""

    async def wait_idle(self) -> None:  # noqa: B027 - optional hook
        """Wait for work this platform started (the console uses it before exiting)."""


def render_reply(reply: Reply, fmt: str) -> str:
    return render(reply.template, fmt, **reply.context).strip("\n")
