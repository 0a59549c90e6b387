"""Copies of published letters (DESIGN.md §10): one row per letter once its copies are settled."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from bot.models._types import UTCDateTime, utcnow


class CopiesStatus(StrEnum):
    queued = "queued"  # one direct message with the PDF per compiled signatory was queued
    off = "off"  # [letters].send_copies was false when the letter was published
    no_pdf = "no_pdf"  # the compilation has no PDF to send
    before_copies = "before_copies"  # published before copies existed (migration 0013)


class LetterCopies(SQLModel, table=True):
    """Written once the copies of a published letter are all queued (or will never be): the
    scheduler's copies pass looks for published letters without this row, so a restart or a
    second replica resumes an interrupted pass and never starts a finished one again."""

    id: int | None = Field(default=None, primary_key=True)
    letter_pk: int = Field(foreign_key="letter.id", unique=True)
    status: str = Field(max_length=20)
    count: int = 0  # direct messages queued for this letter (by every pass, all replicas)
    queued_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
