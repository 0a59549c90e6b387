"""staff: who acts for whom, who signed a signature, whether it awaits the member; letter proxy

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stafflink",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_pk", sa.Integer(), nullable=False),
        sa.Column("member_pk", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["staff_pk"], ["member.id"]),
        sa.ForeignKeyConstraint(["member_pk"], ["member.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("staff_pk", "member_pk", name="uq_staff_link"),
    )
    with op.batch_alter_table("stafflink", schema=None) as batch_op:
        batch_op.create_index("ix_stafflink_staff_pk", ["staff_pk"])
        batch_op.create_index("ix_stafflink_member_pk", ["member_pk"])
    # Plain ALTER TABLE ADD COLUMN (no table rebuild on SQLite, which would have to restate the
    # partial unique index on signature): no foreign key on signed_by_pk, a member.id.
    with op.batch_alter_table("signature", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signed_by_pk", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("awaiting_member", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index("ix_signature_signed_by_pk", ["signed_by_pk"])
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "proxy",
                sqlmodel.sql.sqltypes.AutoString(length=10),
                nullable=False,
                server_default="",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.drop_column("proxy")
    with op.batch_alter_table("signature", schema=None) as batch_op:
        batch_op.drop_index("ix_signature_signed_by_pk")
        batch_op.drop_column("awaiting_member")
        batch_op.drop_column("signed_by_pk")
    with op.batch_alter_table("stafflink", schema=None) as batch_op:
        batch_op.drop_index("ix_stafflink_member_pk")
        batch_op.drop_index("ix_stafflink_staff_pk")
    op.drop_table("stafflink")
