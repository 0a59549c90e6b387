"""Members of the roster and the chat accounts linked to them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from bot.models._types import UTCDateTime, utcnow


class Role(StrEnum):
    member = "member"
    coordinator = "coordinator"


class Member(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    member_id: str = Field(index=True, unique=True, max_length=200)
    title: str = ""
    given_name: str = ""
    family_name: str = ""
    post_nominals: str = ""
    group: str = ""
    display_name: str = ""
    email: str = ""
    role: str = Field(default=Role.member.value, max_length=20)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class Identity(SQLModel, table=True):
    """A chat account (platform, external id) linked to one member; unique per account."""

    __table_args__ = (UniqueConstraint("platform", "external_id", name="uq_identity_account"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=20)
    external_id: str = Field(max_length=255)
    member_pk: int = Field(foreign_key="member.id", index=True)
    linked_via: str = Field(default="roster", max_length=20)  # roster | email | coordinator
    linked_by: str = ""
    linked_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class PendingRequest(SQLModel, table=True):
    """An unknown chat account that tried to sign; coordinators resolve it with `cosign link`."""

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=20)
    external_id: str = Field(max_length=255)
    display_name: str = ""
    channel: str = ""
    letter_pk: int | None = Field(default=None, foreign_key="letter.id")
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
