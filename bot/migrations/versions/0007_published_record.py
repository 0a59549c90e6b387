"""published record: pdf/docx bytes of each compilation, its receipt and font warnings

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("compilation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("receipt", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("warnings", sa.JSON(), nullable=True))
    op.create_table(
        "compiledfile",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("compilation_pk", sa.Integer(), nullable=False),
        sa.Column("format", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["compilation_pk"], ["compilation.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("compilation_pk", "format", name="uq_compiled_file_format"),
    )
    with op.batch_alter_table("compiledfile", schema=None) as batch_op:
        batch_op.create_index("ix_compiledfile_compilation_pk", ["compilation_pk"])
        batch_op.create_index("ix_compiledfile_sha256", ["sha256"])


def downgrade() -> None:
    with op.batch_alter_table("compiledfile", schema=None) as batch_op:
        batch_op.drop_index("ix_compiledfile_sha256")
        batch_op.drop_index("ix_compiledfile_compilation_pk")
    op.drop_table("compiledfile")
    with op.batch_alter_table("compilation", schema=None) as batch_op:
        batch_op.drop_column("warnings")
        batch_op.drop_column("receipt")
