"""Matrix sync state: the bot's own checkpoint, written only after a batch's commands are handled.

nio saves its ``next_batch`` before it runs callbacks, so a crash mid-batch would lose commands;
cosign keeps its own token here instead, one row per bot account (a different account never
resumes from another's position).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from bot.models._types import UTCDateTime, utcnow


class MatrixSyncState(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=255, unique=True)
    next_batch: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class MatrixDirectRoom(SQLModel, table=True):
    """The direct room the bot made for one Matrix user (DESIGN.md §8, direct messages).

    Recorded here before anything is sent in it, so a redelivered outbox row, a restart or a
    second replica reuses it instead of creating another (the account's ``m.direct`` lists it
    too, for clients and as the fallback when this row is missing).
    """

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=255, unique=True)
    room_id: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
