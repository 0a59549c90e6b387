"""letter versions: every text a letter has had; signatures record theirs and await re-confirmation

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from bot.models._types import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "letterversion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("letter_pk", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("date", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("addressees", sa.JSON(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("closing", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("signed_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("minor", sa.Boolean(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["letter_pk"], ["letter.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("letter_pk", "number", name="uq_letter_version_number"),
    )
    with op.batch_alter_table("letterversion", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_letterversion_letter_pk"), ["letter_pk"])
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("version_number", sa.Integer(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("post", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shown_version", sa.Integer(), nullable=True))
    with op.batch_alter_table("signature", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("version_number", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column(
                "awaiting_reconfirmation", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    # Every existing letter's text is its version 1 (earlier texts were not kept), and what was
    # signed before counts as signed on it: under the old rules an update kept every signature.
    op.execute(
        "INSERT INTO letterversion (letter_pk, number, sha256, title, date, addressees, body, "
        "closing, signed_by, minor, created_by, created_at) "
        "SELECT id, 1, version, title, date, addressees, body, closing, signed_by, false, "
        "created_by, created_at FROM letter"
    )
    op.execute("UPDATE post SET shown_version = 1")


def downgrade() -> None:
    with op.batch_alter_table("signature", schema=None) as batch_op:
        batch_op.drop_column("awaiting_reconfirmation")
        batch_op.drop_column("version_number")
    with op.batch_alter_table("post", schema=None) as batch_op:
        batch_op.drop_column("shown_version")
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.drop_column("version_number")
    with op.batch_alter_table("letterversion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_letterversion_letter_pk"))
    op.drop_table("letterversion")
