"""letter copies: whether each published letter's PDF copies to its signatories were queued

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from bot.models._types import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lettercopies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("letter_pk", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["letter_pk"], ["letter.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("letter_pk"),
    )
    # Letters already published when copies arrived are settled as they are: upgrading must not
    # suddenly send every signatory of every old letter a direct message. Letters closed but
    # still under embargo get their copies when they are published.
    op.execute(
        "INSERT INTO lettercopies (letter_pk, status, count, queued_at) "
        "SELECT id, 'before_copies', 0, published_at FROM letter WHERE published_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("lettercopies")
