"""campaigns: letter leads, visibility, embargo and publication; members' reminder opt-out

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from bot.models._types import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leads", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(
            sa.Column(
                "visibility",
                sqlmodel.sql.sqltypes.AutoString(length=10),
                nullable=False,
                server_default="",
            )
        )
        batch_op.add_column(sa.Column("embargo", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("published_at", UTCDateTime(), nullable=True))
    # Letters closed before embargoes existed were published when they closed.
    op.execute("UPDATE letter SET published_at = closed_at WHERE state = 'closed'")
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reminders_off", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.drop_column("reminders_off")
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.drop_column("published_at")
        batch_op.drop_column("embargo")
        batch_op.drop_column("visibility")
        batch_op.drop_column("leads")
