"""The SQL pieces shared by the set-based statements of price migrations (SQLite and PostgreSQL).

:func:`bp_sql` and :func:`apply_sql` are :func:`.pricing.increase_bp` and
:func:`.pricing.first_renewal_on_or_after` written in SQL, so that one statement computes
them for every member; the tests check both give the same answers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from dunning.store.models import PriceMigration, UtcDateTime
from dunning.workflows.price_migrations.pricing import (
    BP_CAP,
    BP_PER_WHOLE,
    MONTHS_PER,
    earliest_apply,
    first_renewal_on_or_after,
)
from dunning.workflows.price_migrations.terms import MigrationTerms

_SQLITE_STAMP = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a UTC instant in SQLite


def bp_sql(current: str, new: str) -> str:
    """:func:`pricing.increase_bp` in SQL for ``current < new`` (integer division: floor of positives)."""
    raw = f"(2 * ({new} - {current}) * {BP_PER_WHOLE} + {current}) / (2 * {current})"
    # WHENs are tried in order (an OR's operands are not): no division by a zero amount.
    return f"(CASE WHEN {current} = 0 THEN {BP_CAP} WHEN {raw} > {BP_CAP} THEN {BP_CAP} ELSE {raw} END)"


def apply_sql(session: Session, cpe: str) -> str:
    """The first renewal of ``cpe`` on or after ``:threshold``, ``:step`` months apart (see pricing).

    PostgreSQL computes it in SQL, adding months to the anchor in UTC (its month arithmetic
    clamps to the month's end as :func:`pricing.add_months` does). SQLite, the single-machine
    backend, calls :func:`pricing.first_renewal_on_or_after` itself through a function
    registered on the connection: same statement, same answer.
    """
    if session.get_bind().dialect.name != "postgresql":
        raw = session.connection().connection.driver_connection
        raw.create_function("dunning_price_apply_at", 3, _sqlite_apply_at, deterministic=True)  # type: ignore[union-attr]
        return f"dunning_price_apply_at({cpe}, :threshold, :step)"
    local = f"({cpe} AT TIME ZONE 'UTC')"
    # Months from the anchor's month to the threshold's (the threshold's month index is a parameter).
    months = f"(:threshold_month - (CAST(extract(year FROM {local}) AS integer) * 12 + CAST(extract(month FROM {local}) AS integer) - 1))"
    k0 = f"(({months} / :step) * :step)"  # whole periods: that renewal is in the threshold's month or before
    at_k0 = f"({local} + make_interval(months => {k0}))"
    chosen = f"(CASE WHEN {at_k0} < (:threshold AT TIME ZONE 'UTC') THEN {k0} + :step ELSE {k0} END)"
    return (
        f"(CASE WHEN {cpe} >= :threshold THEN {cpe} "
        f"ELSE ({local} + make_interval(months => {chosen})) AT TIME ZONE 'UTC' END)"
    )


def _sqlite_apply_at(cpe: str | None, threshold: str, step: int) -> str | None:
    if cpe is None:
        return None
    anchor = datetime.fromisoformat(cpe).replace(tzinfo=UTC)
    limit = datetime.fromisoformat(threshold).replace(tzinfo=UTC)
    return first_renewal_on_or_after(anchor, "month", int(step), limit).strftime(_SQLITE_STAMP)


def apply_params(migration: PriceMigration | MigrationTerms, notice_at: datetime) -> dict[str, Any]:
    """Parameters of :func:`apply_sql` for notices sent at ``notice_at``."""
    effective = migration.effective_at
    threshold = earliest_apply(effective, migration.grandfather_months, notice_at, migration.notice_days)
    return {
        "threshold": threshold,
        "threshold_month": threshold.year * 12 + threshold.month - 1,
        "step": MONTHS_PER[migration.interval],
    }


def statement(sql: str, **typed: Any) -> TextClause:
    """A text statement whose instants are bound as UTC columns are (same text format on SQLite)."""
    stmt = text(sql)
    names = [name for name in ("now", "threshold", "wall") if f":{name}" in sql]
    return stmt.bindparams(*(bindparam(name, type_=UtcDateTime()) for name in names), **typed)


#: The subscriptions a migration takes in (``s``; parameters plan, currency, interval, false).
SUBSCRIPTION_FILTER = """
    s.plan = :plan AND s.currency = :currency AND s.interval = :interval AND s.interval_count = 1
    AND s.status IN ('active', 'past_due', 'trialing') AND s.cancel_at_period_end = :false
"""
