"""Price migrations: the migration and its members.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dunning.store.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_UTC = dunning.store.models.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "price_migrations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("plan", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("interval", sa.String(length=10), nullable=False),
        sa.Column("new_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("effective_at", _UTC(timezone=True), nullable=False),
        sa.Column("notice_days", sa.Integer(), nullable=False),
        sa.Column("grandfather_months", sa.Integer(), nullable=False),
        sa.Column("offers", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("guardrail_percent", sa.Integer(), nullable=False),
        sa.Column("cancel_alert_percent", sa.Integer(), nullable=False),
        sa.Column("cancel_alert_days", sa.Integer(), nullable=False),
        sa.Column("created_at", _UTC(timezone=True), nullable=False),
        sa.Column("launched_at", _UTC(timezone=True), nullable=True),
        sa.Column("paused_at", _UTC(timezone=True), nullable=True),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("canceled_at", _UTC(timezone=True), nullable=True),
        sa.Column("completed_at", _UTC(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_migrations")),
    )
    op.create_table(
        "price_migration_members",
        sa.Column("migration_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("current_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("new_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("increase_minor", sa.BigInteger(), nullable=False),
        sa.Column("increase_bp", sa.Integer(), nullable=False),
        sa.Column("above_guardrail", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("notice_at", _UTC(timezone=True), nullable=True),
        sa.Column("notified_at", _UTC(timezone=True), nullable=True),
        sa.Column("reminded_at", _UTC(timezone=True), nullable=True),
        sa.Column("applies_at", _UTC(timezone=True), nullable=True),
        sa.Column("applied_at", _UTC(timezone=True), nullable=True),
        sa.Column("choice", sa.String(length=20), nullable=True),
        sa.Column("choice_at", _UTC(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["migration_id"],
            ["price_migrations.id"],
            name=op.f("fk_price_migration_members_migration_id_price_migrations"),
        ),
        sa.PrimaryKeyConstraint("migration_id", "subscription_id", name=op.f("pk_price_migration_members")),
    )
    with op.batch_alter_table("price_migration_members", schema=None) as batch_op:
        batch_op.create_index("ix_price_migration_members_state", ["migration_id", "state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_price_migration_members_subscription_id"), ["subscription_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("price_migration_members")
    op.drop_table("price_migrations")
