"""command journal: handled events keep the command and the answer owed for them (rule 12)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.models._types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("handledevent", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=10), nullable=False, server_default="done")
        )
        batch_op.add_column(sa.Column("invocation", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("replies", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("reply_to", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("answered_at", bot.models._types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_handledevent_owed", ["platform", "state", "answered_at"])
    # every event handled before the journal existed was answered then
    op.execute("UPDATE handledevent SET answered_at = at")


def downgrade() -> None:
    with op.batch_alter_table("handledevent", schema=None) as batch_op:
        batch_op.drop_index("ix_handledevent_owed")
        for name in ("answered_at", "reply_to", "replies", "invocation", "state"):
            batch_op.drop_column(name)
