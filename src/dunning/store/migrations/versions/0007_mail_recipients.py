"""Email recipients: unsubscribed addresses, bouncing addresses, and outbox rows by address.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dunning.store.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_UTC = dunning.store.models.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "mail_suppressions",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_mail_suppressions")),
    )
    op.create_table(
        "mail_bounces",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("bounced_at", _UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_mail_bounces")),
    )
    with op.batch_alter_table("mail_bounces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mail_bounces_customer_id"), ["customer_id"], unique=False)
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_to_email"), ["to_email"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_to_email"))
    op.drop_table("mail_bounces")
    op.drop_table("mail_suppressions")
