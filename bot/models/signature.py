"""Signatures: at most one active (not withdrawn) per letter and member."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, text
from sqlmodel import Field, SQLModel

from bot.models._types import UTCDateTime, utcnow


class Signature(SQLModel, table=True):
    __table_args__ = (
        Index(
            "uq_signature_active",
            "letter_pk",
            "member_pk",
            unique=True,
            sqlite_where=text("withdrawn_at IS NULL"),
            postgresql_where=text("withdrawn_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    letter_pk: int = Field(foreign_key="letter.id", index=True)
    member_pk: int = Field(foreign_key="member.id", index=True)
    signed_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    withdrawn_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    via_platform: str = Field(default="", max_length=20)
    via_external_id: str = Field(default="", max_length=255)
    via_event_id: str = Field(default="", max_length=255)
    letter_version: str = Field(default="", max_length=64)  # SHA-256 of the text signed
    version_number: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    # The text changed materially since (DESIGN.md §9): it counts again once re-confirmed.
    awaiting_reconfirmation: bool = False
    # Staff signing for the member (DESIGN.md §8): who signed (a member.id), and whether it still
    # awaits the member's confirmation (proxy mode `confirm`: not counted, never compiled).
    signed_by_pk: int | None = Field(default=None, index=True)
    awaiting_member: bool = False
