"""Jobs: the case_id and subject indexes cover only the rows that have one.

A job has a case (failed payments) or a subject (lifecycle notices, price
migrations), rarely both: each full index held a NULL entry for every job of the
other workflows, and every insert paid for it. Lookups compare the column with a
value (``case_id = …``, ``subject = ANY(…)``), which implies NOT NULL, so both
PostgreSQL and SQLite use the partial indexes for them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = ("case_id", "subject")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for column in _COLUMNS:
            batch_op.drop_index(batch_op.f(f"ix_jobs_{column}"))
            batch_op.create_index(
                batch_op.f(f"ix_jobs_{column}"),
                [column],
                unique=False,
                sqlite_where=sa.text(f"{column} IS NOT NULL"),
                postgresql_where=sa.text(f"{column} IS NOT NULL"),
            )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for column in _COLUMNS:
            batch_op.drop_index(batch_op.f(f"ix_jobs_{column}"))
            batch_op.create_index(batch_op.f(f"ix_jobs_{column}"), [column], unique=False)
