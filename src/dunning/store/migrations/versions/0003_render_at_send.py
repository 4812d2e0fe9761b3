"""Render emails when they are sent: keep the decision's variant, content filled at send time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variant", sa.String(length=40), nullable=True))
        batch_op.alter_column("subject", existing_type=sa.Text(), nullable=True)
        batch_op.alter_column("html", existing_type=sa.Text(), nullable=True)
        batch_op.alter_column("text", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.execute("UPDATE outbox SET subject = '', html = '', text = '' WHERE subject IS NULL")
        batch_op.alter_column("text", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("html", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("subject", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("variant")
