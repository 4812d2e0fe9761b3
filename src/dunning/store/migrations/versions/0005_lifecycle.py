"""Lifecycle notices: tenure and temporary upgrades on subscriptions, a subject on jobs, a subscription on emails.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dunning.store.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_UTC = dunning.store.models.UtcDateTime


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("started_at", _UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("first_seen_at", _UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("upgrade_plan", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("upgrade_ends_at", _UTC(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("upgrade_revert_to", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("upgrade_seen_at", _UTC(timezone=True), nullable=True))
    # jobs.subject: what a job without a case is about; outbox.subject is the email's subject
    # line already, so an email names its subscription in ``subscription_id``.
    for table, column in (("jobs", "subject"), ("outbox", "subscription_id")):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column(column, sa.String(length=255), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def downgrade() -> None:
    for table, column in (("outbox", "subscription_id"), ("jobs", "subject")):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
            batch_op.drop_column(column)
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        for column in (
            "upgrade_seen_at",
            "upgrade_revert_to",
            "upgrade_ends_at",
            "upgrade_plan",
            "first_seen_at",
            "started_at",
        ):
            batch_op.drop_column(column)
