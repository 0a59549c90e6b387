"""Letters, where they were posted, reminders sent and the one compilation of each."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from bot.models._types import UTCDateTime, utcnow


class LetterState(StrEnum):
    draft = "draft"
    open = "open"
    closed = "closed"


class Letter(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(index=True, unique=True, max_length=200)
    title: str
    date: str = ""
    addressees: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    closing: str = ""
    signed_by: str = ""
    template: str = ""
    proxy: str = Field(default="", max_length=10)  # direct | confirm; "" = [letters].proxy
    deadline: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    state: str = Field(default=LetterState.draft.value, max_length=10, index=True)
    version: str = Field(max_length=64)  # SHA-256 of the current text (DESIGN.md §3)
    # The current text's number among the letter's versions (DESIGN.md §9): 1, 2, …
    version_number: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    created_by: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    opened_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    closed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # Campaigns (DESIGN.md §8). leads: member_ids printed first, in this order. visibility:
    # public | counts | private, "" until posted (then [letters].visibility is fixed on it).
    # embargo: names are published then, not at close; published_at: when they were.
    leads: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    visibility: str = Field(default="", max_length=10, sa_column_kwargs={"server_default": ""})
    embargo: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    published_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class LetterVersion(SQLModel, table=True):
    """One text a letter has had (DESIGN.md §9): what signatures of that version agreed to."""

    __table_args__ = (UniqueConstraint("letter_pk", "number", name="uq_letter_version_number"),)

    id: int | None = Field(default=None, primary_key=True)
    letter_pk: int = Field(foreign_key="letter.id", index=True)
    number: int
    sha256: str = Field(max_length=64)
    title: str
    date: str = ""
    addressees: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    closing: str = ""
    signed_by: str = ""
    minor: bool = False  # made with --minor: signatures moved to it without asking
    created_by: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class Post(SQLModel, table=True):
    """Where a letter was posted, so counters can be updated and buttons removed at close."""

    __table_args__ = (UniqueConstraint("letter_pk", "platform", "channel", name="uq_post_channel"),)

    id: int | None = Field(default=None, primary_key=True)
    letter_pk: int = Field(foreign_key="letter.id", index=True)
    platform: str = Field(max_length=20)
    channel: str = Field(max_length=255)
    message_id: str | None = Field(default=None, max_length=255, index=True)
    shown_count: int | None = None
    shown_state: str | None = Field(default=None, max_length=10)
    shown_version: int | None = None  # the text's version number the post shows
    posted_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    updated_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class Reminder(SQLModel, table=True):
    """One row per (letter, offset, deadline): sent or skipped, never twice."""

    __table_args__ = (
        UniqueConstraint("letter_pk", "offset_label", "deadline", name="uq_reminder_once"),
    )

    id: int | None = Field(default=None, primary_key=True)
    letter_pk: int = Field(foreign_key="letter.id", index=True)
    offset_label: str = Field(max_length=20)
    deadline: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    status: str = Field(max_length=10)  # sent | skipped
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class Compilation(SQLModel, table=True):
    """The final text of a closed letter; the unique letter_pk makes compilation happen once.

    `outputs` holds the text formats; pdf and docx are CompiledFile rows (not loaded with it);
    `sha256` covers all of them. `receipt` (DESIGN.md §10) and `warnings` (names the PDF cannot
    draw) are None for compilations made before they existed.
    """

    id: int | None = Field(default=None, primary_key=True)
    letter_pk: int = Field(foreign_key="letter.id", unique=True)
    compiled_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    signatory_count: int
    outputs: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sha256: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    files_written_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    receipt: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    warnings: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )


class CompiledFile(SQLModel, table=True):
    """A binary output of a compilation (pdf, docx): the exact bytes published and verified."""

    __table_args__ = (UniqueConstraint("compilation_pk", "format", name="uq_compiled_file_format"),)

    id: int | None = Field(default=None, primary_key=True)
    compilation_pk: int = Field(foreign_key="compilation.id", index=True)
    format: str = Field(max_length=10)
    sha256: str = Field(max_length=64, index=True)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
