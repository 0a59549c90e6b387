"""The durable outbox: everything the bot sends on its own is a row here first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from bot.models._types import UTCDateTime, utcnow


class OutboxMessage(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=300)
    platform: str = Field(max_length=20, index=True)
    channel: str = Field(max_length=255)
    kind: str = Field(max_length=30)  # post_letter | message | compiled
    letter_pk: int | None = Field(default=None, foreign_key="letter.id", index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    claimed_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # Who holds the lease: a random token set by each claim. Outcomes are recorded only under it,
    # so a sender whose lease lapsed cannot overwrite what the row's new holder recorded.
    claim_token: str | None = Field(default=None, max_length=64)
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    failed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
