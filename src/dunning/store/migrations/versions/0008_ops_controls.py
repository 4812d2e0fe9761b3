"""Ops controls: notice kinds on hold, and the audit of what operators did.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dunning.store.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_UTC = dunning.store.models.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "paused_kinds",
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("paused_at", _UTC(timezone=True), nullable=False),
        sa.Column("paused_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_paused_kinds")),
    )
    op.create_table(
        "ops_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _UTC(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_audit")),
    )
    with op.batch_alter_table("ops_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ops_audit_at"), ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ops_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ops_audit_at"))
    op.drop_table("ops_audit")
    op.drop_table("paused_kinds")
