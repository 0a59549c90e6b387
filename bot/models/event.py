"""Platform events already handled: retried or re-synced deliveries are handled once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from bot.models._types import UTCDateTime, utcnow


class HandledEvent(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("platform", "event_id", name="uq_handled_event"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=20)
    event_id: str = Field(max_length=255)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
