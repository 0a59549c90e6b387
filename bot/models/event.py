"""Platform events handled once, and the answers owed for them (DESIGN.md rules 10 and 12).

A row is written in the same transaction as the command it records, so a command never runs twice
for one event (a retry, a replay after a crash), and its replies are kept until the platform has
sent them: a bot killed between the commit and the answer answers after its restart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from bot.models._types import UTCDateTime, utcnow


class HandledEvent(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("platform", "event_id", name="uq_handled_event"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=20)
    event_id: str = Field(max_length=255)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    # received: acknowledged, not yet run (the command is in `invocation`); done: run and committed
    # (its replies in `replies`). Rows from before the journal are done and answered.
    state: str = Field(default="done", max_length=10)
    invocation: bytes | None = Field(default=None, sa_column=Column(LargeBinary()))
    replies: bytes | None = Field(default=None, sa_column=Column(LargeBinary()))
    # Where the answer goes, as the platform needs it (Slack: response_url, or channel and user).
    reply_to: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON()))
    answered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
