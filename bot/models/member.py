"""Members of the roster and the chat accounts linked to them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, UniqueConstraint, event, false
from sqlmodel import Field, SQLModel

from bot.models._types import UTCDateTime, utcnow
from bot.names import email_key, filing_family, filing_key, render_name


class Role(StrEnum):
    member = "member"
    coordinator = "coordinator"
    staff = "staff"  # signs and withdraws for the members it acts for (StaffLink; DESIGN.md §8)


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
    # bot.names.email_key(email), kept by the ORM events below: match_email looks it up by index
    email_key: str = Field(default="", index=True)
    role: str = Field(default=Role.member.value, max_length=20)
    active: bool = True
    # `remind off` (DESIGN.md §8): no reminders by direct message; not a roster column, so a
    # re-import keeps the member's choice.
    reminders_off: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    # Derived from the fields above on every ORM write (below), so that status can list 10,000
    # names without rendering and collating each on every request. bot.names.FILING_KEY_PREFIX
    # starts each key: a key without the current prefix (or NULL) means both are out of date.
    filing_key: str | None = Field(default=None, nullable=True)
    printed_name: str | None = Field(default=None, nullable=True)  # bot.names.render_name

    def rendered_name(self) -> str:
        """The name as the letter prints it (bot.names.render_name), from the fields themselves."""
        return render_name(
            title=self.title,
            given_name=self.given_name,
            family_name=self.family_name,
            post_nominals=self.post_nominals,
            display_name=self.display_name,
        )

    def listing_fields(self) -> tuple[str, str]:
        """(filing_key, printed_name) as they should be stored."""
        key = filing_key(
            family_name=filing_family(self.family_name, self.display_name),
            given_name=self.given_name,
            member_id=self.member_id,
        )
        return key, self.rendered_name()


@event.listens_for(Member, "before_insert")
@event.listens_for(Member, "before_update")
def _keep_listing_fields(_mapper: Any, _connection: Any, member: Member) -> None:
    member.filing_key, member.printed_name = member.listing_fields()
    member.email_key = email_key(member.email)


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


class StaffLink(SQLModel, table=True):
    """A staff account acts for a member (the roster's `acts_for`); the roster owns these rows."""

    __table_args__ = (UniqueConstraint("staff_pk", "member_pk", name="uq_staff_link"),)

    id: int | None = Field(default=None, primary_key=True)
    staff_pk: int = Field(foreign_key="member.id", index=True)
    member_pk: int = Field(foreign_key="member.id", index=True)


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
