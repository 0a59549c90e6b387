"""member e-mail key: the normalised, indexed address that Slack's match_email looks up

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_key", sa.String(), nullable=False, server_default=""))
        batch_op.create_index("ix_member_email_key", ["email_key"])
    # The normalisation of bot.names.email_key, restated: a migration must not change meaning
    # when the code it ships with moves on. The ORM keeps the column current from here on.
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, email FROM member WHERE email <> ''")).all()
    keys = [
        {"pk": pk, "key": unicodedata.normalize("NFC", email).strip().lower()} for pk, email in rows
    ]
    if keys:
        conn.execute(sa.text("UPDATE member SET email_key = :key WHERE id = :pk"), keys)


def downgrade() -> None:
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.drop_index("ix_member_email_key")
        batch_op.drop_column("email_key")
