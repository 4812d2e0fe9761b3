"""What a price migration does and where it stands: preview, per-subscriber rows, status, list.

Read-only, and aggregate SQL: the preview of a million members is one grouped query plus
the list of those above the guardrail, never a query per subscriber. A draft has sent
nothing yet, so its dates are estimates for a launch now: each member's apply date is
computed afresh from its subscription's renewal (the plan-time value would age). Once
launched, the stored dates are the truth (the workers move them as facts change).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dunning.store.models import PriceMigration, PriceMigrationMember
from dunning.workflows.price_migrations.members import get
from dunning.workflows.price_migrations.pricing import Group, exponent, summarize
from dunning.workflows.price_migrations.sql import SUBSCRIPTION_FILTER, apply_params, apply_sql, statement

#: Member states whose price stays as it is.
KEPT = ("excluded", "skipped")
STATES = ("pending", "notified", "reminded", "deferred", "applied", "skipped", "excluded")
CHOICES = ("step_up", "annual_lock", "downgrade", "none")


def iso(at: datetime | None) -> str | None:
    """An instant as ISO 8601 UTC with ``Z`` (None stays None)."""
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _percent(bp: int) -> float:
    """Hundredths of a percent as a number with two decimals (5128 -> 51.28: the nearest float prints so)."""
    return bp / 100


def terms_json(migration: PriceMigration) -> dict[str, Any]:
    """A migration's terms, for ``--json`` outputs."""
    return {
        "id": migration.id,
        "status": migration.status,
        "plan": migration.plan,
        "currency": migration.currency,
        "interval": migration.interval,
        "new_amount_minor": migration.new_amount_minor,
        "effective_at": iso(migration.effective_at),
        "notice_days": migration.notice_days,
        "grandfather_months": migration.grandfather_months,
        "offers": migration.offers,
        "reason": migration.reason,
        "guardrail_percent": migration.guardrail_percent,
        "created_at": iso(migration.created_at),
        "launched_at": iso(migration.launched_at),
        "paused_reason": migration.paused_reason,
    }


def _draft_source(session: Session, migration: PriceMigration, now: datetime) -> tuple[str, dict[str, Any]]:
    """Members joined to their subscription with the apply date of a launch now (``gone``: left the plan)."""
    sql = f"""
        SELECT m.*, s.id IS NULL AS gone, {apply_sql(session, "s.current_period_end")} AS est_applies_at,
               CAST(:now AS {"TIMESTAMPTZ" if _pg(session) else "TEXT"}) AS est_notice_at
        FROM price_migration_members m
        LEFT JOIN subscriptions s ON s.id = m.subscription_id AND {SUBSCRIPTION_FILTER} AND s.amount_minor < :new
        WHERE m.migration_id = :mid
    """
    params = {
        "mid": migration.id,
        "now": now,
        "plan": migration.plan,
        "currency": migration.currency,
        "interval": migration.interval,
        "new": migration.new_amount_minor,
        "false": False,
        **apply_params(migration, now),
    }
    return sql, params


def _launched_source(migration: PriceMigration) -> tuple[str, dict[str, Any]]:
    sql = """
        SELECT m.*, false AS gone, m.applies_at AS est_applies_at,
               COALESCE(m.notified_at, m.notice_at) AS est_notice_at
        FROM price_migration_members m WHERE m.migration_id = :mid
    """
    return sql, {"mid": migration.id}


def _pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _source(session: Session, migration: PriceMigration, now: datetime) -> tuple[str, dict[str, Any]]:
    if migration.status == "draft":
        return _draft_source(session, migration, now)
    return _launched_source(migration)


def preview(
    session: Session, migration_id: str, *, now: datetime, guardrail_rows: int | None = None
) -> dict[str, Any]:
    """The impact of a migration: cohorts, MRR before and after, who is above the guardrail.

    ``above_guardrail`` lists every such subscriber, largest increase first, or only the first
    ``guardrail_rows`` (a table shows a few); ``above_guardrail_count`` counts them all.
    """
    migration = get(session, migration_id)
    source, params = _source(session, migration, now)
    kept = ", ".join(f"'{state}'" for state in KEPT)
    groups = session.execute(
        statement(
            f"""
            SELECT current_amount_minor AS current, new_amount_minor AS new, increase_bp AS bp,
                   gone, state IN ({kept}) AS kept, count(*) AS n,
                   min(est_notice_at) AS first_notice, min(est_applies_at) AS first_applies
            FROM ({source}) AS members
            GROUP BY current_amount_minor, new_amount_minor, increase_bp, gone, state IN ({kept})
            ORDER BY current_amount_minor, new_amount_minor
            """
        ),
        params,
    ).all()
    summary = summarize(
        (
            Group(
                current_minor=row.current,
                new_minor=row.new,
                bp=row.bp,
                count=row.n,
                kept=bool(row.kept),
                gone=bool(row.gone),
                first_notice=_instant(row.first_notice),
                first_applies=_instant(row.first_applies),
            )
            for row in groups
        ),
        migration.interval,
    )
    m = PriceMigrationMember
    guarded = (m.migration_id == migration_id, m.above_guardrail, m.state.not_in(KEPT))
    query = (
        select(m.subscription_id, m.current_amount_minor, m.new_amount_minor, m.increase_bp)
        .where(*guarded)
        .order_by(m.increase_bp.desc(), m.subscription_id)
    )
    # Core, not ORM rows: this list can hold hundreds of thousands of subscribers.
    above = (
        session.connection().execute(query if guardrail_rows is None else query.limit(guardrail_rows)).all()
    )
    above_count = (
        len(above)
        if guardrail_rows is None or len(above) < guardrail_rows
        else session.scalar(select(func.count()).where(*guarded))
    )
    before, after = summary.mrr_before_minor, summary.mrr_after_minor
    return {
        **terms_json(migration),
        "estimated": migration.status == "draft",
        "as_of": iso(now),
        "subscribers": summary.subscribers,
        "excluded_or_skipped": summary.kept,
        "left_plan_since_planning": summary.gone,
        "mrr_before_minor": before,
        "mrr_after_minor": after,
        "mrr_change_minor": after - before,
        "cohorts": [
            {
                "current_amount_minor": c.current_minor,
                "interval": migration.interval,
                "count": c.count,
                "new_amount_minor": c.new_minor,
                "increase_minor": c.increase_minor,
                "increase_bp": c.bp,
                "increase_percent": _percent(c.bp),
                "first_notice_at": iso(c.first_notice),
                "first_applies_at": iso(c.first_applies),
            }
            for c in summary.cohorts
        ],
        "above_guardrail_count": above_count,
        "above_guardrail": [
            {
                "subscription_id": sub,
                "current_amount_minor": current,
                "new_amount_minor": new,
                "increase_minor": new - current,
                "increase_percent": _percent(bp),
            }
            for sub, current, new, bp in above
        ],
    }


def _instant(value: Any) -> datetime | None:
    """A timestamp from a raw column (SQLite returns text, PostgreSQL aware datetimes)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


CSV_COLUMNS = (
    "subscription_id",
    "customer_id",
    "state",
    "currency",
    "interval",
    "current_amount_minor",
    "new_amount_minor",
    "increase_minor",
    "increase_percent",
    "above_guardrail",
    "current_amount",
    "new_amount",
    "notice_at",
    "applies_at",
    "applied_at",
    "choice",
    "reason",
)


def member_rows(session: Session, migration_id: str, *, now: datetime) -> Iterator[tuple[Any, ...]]:
    """One tuple per member (``CSV_COLUMNS``), streamed in subscription id order, for finance.

    A million rows: the few distinct amounts and percentages are formatted once each.
    """
    migration = get(session, migration_id)
    source, params = _source(session, migration, now)
    digits = exponent(migration.currency)
    money = lru_cache(maxsize=4096)(lambda minor: f"{Decimal(minor).scaleb(-digits):.{digits}f}")
    percent = lru_cache(maxsize=4096)(lambda bp: f"{Decimal(bp) / 100:.2f}")
    stamp = lru_cache(maxsize=64)(lambda value: iso(_instant(value)))  # a draft's notices share one instant
    result = session.execute(
        statement(
            f"""
            SELECT subscription_id, customer_id, state, current_amount_minor, new_amount_minor, increase_minor,
                   increase_bp, above_guardrail, est_notice_at, est_applies_at, applied_at, choice, reason, gone
            FROM ({source}) AS members ORDER BY subscription_id
            """
        ),
        params,
        execution_options={"stream_results": True, "yield_per": 5000},
    )
    currency, interval = migration.currency, migration.interval
    for (
        sub,
        customer,
        state,
        current,
        new,
        up,
        bp,
        above,
        notice,
        applies,
        applied,
        choice,
        why,
        gone,
    ) in result:
        yield (
            sub,
            customer,
            "skipped" if gone else state,
            currency,
            interval,
            current,
            new,
            up,
            percent(bp),
            "yes" if above else "no",
            money(current),
            money(new),
            None if gone else stamp(notice),
            iso(_instant(applies)),
            iso(_instant(applied)),
            choice,
            "left the plan since planning" if gone else why,
        )


def status(session: Session, migration_id: str) -> dict[str, Any]:
    """Counts per member state and per choice, and why members were skipped or deferred."""
    migration = get(session, migration_id)
    m = PriceMigrationMember
    counts = dict.fromkeys(STATES, 0)
    for state, n in session.execute(
        select(m.state, func.count()).where(m.migration_id == migration_id).group_by(m.state)
    ):
        counts[state] = n
    choices = dict.fromkeys(CHOICES, 0)
    for choice, n in session.execute(
        select(m.choice, func.count())
        .where(m.migration_id == migration_id, m.choice.is_not(None))
        .group_by(m.choice)
    ):
        choices[choice] = n
    reasons = [
        {"state": state, "reason": reason or "", "count": n}
        for state, reason, n in session.execute(
            select(m.state, m.reason, func.count())
            .where(m.migration_id == migration_id, m.state.in_(("skipped", "deferred", "excluded")))
            .group_by(m.state, m.reason)
            .order_by(m.state, func.count().desc())
        )
    ]
    return {
        **terms_json(migration),
        "paused_at": iso(migration.paused_at),
        "canceled_at": iso(migration.canceled_at),
        "completed_at": iso(migration.completed_at),
        "subscribers": sum(counts.values()),
        "counts": counts,
        "choices": choices,
        "reasons": reasons,
    }


def list_migrations(session: Session) -> list[dict[str, Any]]:
    """Every migration, newest first, with its number of members."""
    m = PriceMigrationMember
    sizes = dict(session.execute(select(m.migration_id, func.count()).group_by(m.migration_id)).all())
    found = session.execute(
        select(PriceMigration).order_by(PriceMigration.created_at.desc(), PriceMigration.id)
    )
    return [{**terms_json(p), "subscribers": sizes.get(p.id, 0)} for p in found.scalars()]
