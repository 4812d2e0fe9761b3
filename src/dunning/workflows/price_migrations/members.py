"""Plan and launch a price migration with a few set-based statements (SQLite and PostgreSQL).

Whatever the number of subscribers, planning is one ``INSERT ... SELECT`` from
``subscriptions`` and launching is a handful of ``UPDATE``\\ s and one ``INSERT ... SELECT``
into ``jobs``: no statement per subscription. The money and date rules are those of
:mod:`.pricing`, written in SQL by :mod:`.sql` (increase in hundredths of a percent, half up,
capped; the first renewal on or after the earliest instant); the tests compare both.

Who is a member: a subscription on the migration's plan, currency and interval, billed
every single period (a quarterly subscription has another price), ``active``, ``past_due``
or ``trialing``, not ending at its period end, and paying less than the new amount
(a migration only raises prices). Members are a snapshot: launch re-reads each member's
subscription, skips those that left the plan and takes the current amounts.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from dunning.engine.jobs import wall_now
from dunning.errors import Refused
from dunning.store.models import PriceMigration, PriceMigrationMember, Subscription
from dunning.workflows.price_migrations.sql import (
    SUBSCRIPTION_FILTER,
    apply_params,
    apply_sql,
    bp_sql,
    statement,
)
from dunning.workflows.price_migrations.terms import MigrationTerms

#: Subscription statuses a migration takes in (the billing system charges them, or will).
LIVE = ("active", "past_due", "trialing")
NOTICE_KIND = "price_notice"
JOBS_QUEUE = "dunning"
#: Longest subscription id whose job keys (``price:MIG:SUB:reminder``) fit the 255 of ``jobs.key``.
MAX_SUB_ID = 200


@dataclass(frozen=True)
class Planned:
    """A new draft: its id, how many subscribers it holds, how many of them are above the guardrail."""

    id: str
    members: int
    above_guardrail: int
    not_raised: int  # live subscriptions of the plan already paying the new amount or more


@dataclass(frozen=True)
class Launched:
    """What a launch did: notices queued, and the members it set aside."""

    id: str
    notices: int
    excluded: int
    overridden: int
    skipped: int


def new_id(now: datetime) -> str:
    """A migration id an operator can read and type: ``pm_20261206_3fa9c1``."""
    return f"pm_{now:%Y%m%d}_{secrets.token_hex(3)}"


def get(session: Session, migration_id: str) -> PriceMigration:
    """The migration, or :class:`Refused` on ``ID``."""
    migration = session.get(PriceMigration, migration_id)
    if migration is None:
        raise Refused("ID", f"no price migration {migration_id!r} (see `dunning prices list`)")
    return migration


# -- plan --------------------------------------------------------------------------------------


def check_terms(session: Session, terms: MigrationTerms) -> None:
    """Refuse terms the data contradicts: a plan nobody is on, a migration already running for it."""
    found = session.execute(
        select(Subscription.currency, Subscription.interval, func.count())
        .where(
            Subscription.plan == terms.plan, Subscription.status.in_(LIVE), Subscription.interval_count == 1
        )
        .group_by(Subscription.currency, Subscription.interval)
    ).all()
    if not found:
        raise Refused(
            "plan", f"unknown plan {terms.plan!r}: no active, past_due or trialing subscription is on it"
        )
    currencies = sorted({row.currency for row in found})
    if terms.currency not in currencies:
        raise Refused(
            "currency",
            f"no subscription on plan {terms.plan!r} is in {terms.currency} (it has {', '.join(currencies)})",
        )
    intervals = sorted({row.interval for row in found if row.currency == terms.currency})
    if terms.interval not in intervals:
        raise Refused(
            "interval",
            f"no {terms.currency} subscription on plan {terms.plan!r} is billed every {terms.interval} "
            f"(they are billed every {', '.join(intervals)})",
        )
    running = running_for(session, terms)
    if running:
        raise Refused(
            "plan",
            f"migration {running} is already running for {terms.plan} {terms.currency} {terms.interval}ly",
        )


def running_for(session: Session, terms: MigrationTerms | PriceMigration) -> str | None:
    """The launched or paused migration of the same plan, currency and interval, if any.

    One at a time: two would notify the same subscribers twice and race to apply.
    """
    return session.scalar(
        select(PriceMigration.id).where(
            PriceMigration.plan == terms.plan,
            PriceMigration.currency == terms.currency,
            PriceMigration.interval == terms.interval,
            PriceMigration.status.in_(("launched", "paused")),
        )
    )


def plan_migration(
    session: Session, terms: MigrationTerms, *, now: datetime, migration_id: str | None = None
) -> Planned:
    """Create a draft migration and its members (one ``INSERT ... SELECT``); refuse without writing."""
    check_terms(session, terms)
    mid = migration_id or new_id(now)
    session.add(
        PriceMigration(
            id=mid,
            status="draft",
            plan=terms.plan,
            currency=terms.currency,
            interval=terms.interval,
            new_amount_minor=terms.new_amount_minor,
            effective_at=terms.effective_at,
            notice_days=terms.notice_days,
            grandfather_months=terms.grandfather_months,
            offers=[dict(o) for o in terms.offers],
            reason=terms.reason,
            guardrail_percent=terms.guardrail_percent,
            cancel_alert_percent=terms.cancel_alert_percent,
            cancel_alert_days=terms.cancel_alert_days,
            created_at=now,
        )
    )
    session.flush()
    bp = bp_sql("s.amount_minor", ":new")
    session.execute(
        statement(
            f"""
            INSERT INTO price_migration_members (
                migration_id, subscription_id, customer_id, current_amount_minor, new_amount_minor,
                increase_minor, increase_bp, above_guardrail, state, applies_at)
            SELECT :mid, s.id, s.customer_id, s.amount_minor, :new, :new - s.amount_minor,
                   {bp}, {bp} > :guardrail_bp, 'pending', {apply_sql(session, "s.current_period_end")}
            FROM subscriptions s
            WHERE {SUBSCRIPTION_FILTER} AND s.amount_minor < :new
            """
        ),
        {**_terms_params(terms, mid), **apply_params(terms, now)},
    )
    m = PriceMigrationMember
    total = session.scalar(select(func.count()).where(m.migration_id == mid)) or 0
    above = session.scalar(select(func.count()).where(m.migration_id == mid, m.above_guardrail)) or 0
    not_raised = session.scalar(
        statement(
            f"SELECT count(*) FROM subscriptions s WHERE {SUBSCRIPTION_FILTER} AND s.amount_minor >= :new"
        ),
        _terms_params(terms, mid),
    )
    return Planned(id=mid, members=int(total), above_guardrail=int(above), not_raised=int(not_raised or 0))


def _terms_params(terms: MigrationTerms | PriceMigration, mid: str) -> dict[str, Any]:
    new = terms.new_amount_minor
    return {
        "mid": mid,
        "plan": terms.plan,
        "currency": terms.currency,
        "interval": terms.interval,
        "new": new,
        "guardrail_bp": terms.guardrail_percent * 100,
        "false": False,
    }


# -- launch ------------------------------------------------------------------------------------


def launch(
    session: Session,
    migration_id: str,
    *,
    now: datetime,
    exclude: Collection[str] = (),
    override: bool = False,
) -> Launched:
    """Launch a draft: re-read members, set aside the excluded, queue one notice job per member.

    Refuses (raising, so the caller's transaction writes nothing) a migration that is not a
    draft, an excluded id that is not a member, subscribers above the guardrail neither
    excluded nor overridden, and a migration left with nobody to notify.
    """
    migration = get(session, migration_id)
    if migration.status != "draft":
        raise Refused("ID", f"migration {migration_id} is {migration.status}: only a draft can be launched")
    running = running_for(session, migration)
    if running:
        raise Refused(
            "ID",
            f"migration {running} is already running for {migration.plan} {migration.currency} "
            f"{migration.interval}ly: cancel it or wait until it completes",
        )
    members = PriceMigrationMember
    exclude = sorted(set(exclude))
    known = _count_in(session, migration_id, exclude)
    if known < len(exclude):
        stranger = next(s for s in exclude if not _is_member(session, migration_id, s))
        raise Refused("exclude", f"{stranger} is not a subscriber of migration {migration_id}")
    # Fast refusal on the planned figures, before the statements that touch every member.
    if not override:
        _refuse_above_guardrail(session, migration, exclude)
    # Set aside first: an excluded subscriber keeps the planned facts and gets no dates.
    excluded = 0
    if exclude:
        excluded = session.execute(
            statement(
                """
                UPDATE price_migration_members
                SET state = 'excluded', reason = 'excluded at launch', applies_at = NULL
                WHERE migration_id = :mid AND state = 'pending' AND subscription_id IN :subs
                """
            ).bindparams(bindparam("subs", expanding=True)),
            {"mid": migration_id, "subs": list(exclude)},
        ).rowcount
    params = {**_terms_params(migration, migration_id), **apply_params(migration, now), "now": now}
    bp = bp_sql("s.amount_minor", ":new")
    # Every member takes its subscription's facts of now; one whose subscription left the plan
    # (or now pays the new amount or more) keeps notice_at NULL and is skipped just below.
    session.execute(
        statement(
            f"""
            UPDATE price_migration_members SET
                current_amount_minor = s.amount_minor, customer_id = s.customer_id,
                increase_minor = :new - s.amount_minor, increase_bp = {bp}, above_guardrail = {bp} > :guardrail_bp,
                notice_at = :now, applies_at = {apply_sql(session, "s.current_period_end")}
            FROM subscriptions s
            WHERE price_migration_members.migration_id = :mid AND price_migration_members.state = 'pending'
              AND s.id = price_migration_members.subscription_id AND {SUBSCRIPTION_FILTER} AND s.amount_minor < :new
            """
        ),
        params,
    )
    skipped = session.execute(
        statement(
            f"""
            UPDATE price_migration_members SET state = 'skipped', notice_at = NULL, applies_at = NULL, reason = CASE
                WHEN length(subscription_id) > {MAX_SUB_ID} THEN 'subscription id too long for a job key'
                WHEN notice_at IS NULL THEN 'left the plan, or pays the new amount already, before launch'
                END
            WHERE migration_id = :mid AND state = 'pending'
              AND (notice_at IS NULL OR length(subscription_id) > {MAX_SUB_ID})
            """
        ),
        {"mid": migration_id},
    ).rowcount
    if not override:
        _refuse_above_guardrail(session, migration, exclude)
    pending = session.scalar(
        select(func.count()).where(members.migration_id == migration_id, members.state == "pending")
    )
    if not pending:
        raise Refused("ID", f"migration {migration_id} has no subscriber to notify: nothing to launch")
    overridden = 0
    if override:
        overridden = _timeline(
            session,
            migration_id,
            now,
            "above_guardrail AND state = 'pending'",
            f"increase above the {migration.guardrail_percent} % guardrail, launched with --override-guardrail",
        )
    _timeline(session, migration_id, now, "state = 'excluded'", "excluded at launch: keeps the current price")
    payload = json.dumps({"migration_id": migration_id})
    postgres = session.get_bind().dialect.name == "postgresql"
    notices = session.execute(
        statement(
            f"""
            INSERT INTO jobs (key, kind, queue, subject, due_at, payload, status, claims, runs, crashes, alone, created_at)
            SELECT 'price:' || :mid || ':' || m.subscription_id || :suffix, :kind, :queue, m.subscription_id,
                   :now, {"CAST(:payload AS JSON)" if postgres else ":payload"}, 'pending', 0, 0, 0, :false, :wall
            FROM price_migration_members m
            WHERE m.migration_id = :mid AND m.state = 'pending'
            ON CONFLICT (key) DO NOTHING
            """
        ),
        {
            "mid": migration_id,
            "kind": NOTICE_KIND,
            "suffix": ":notice",  # as a parameter: text() would read it as one
            "queue": JOBS_QUEUE,
            "now": now,
            "payload": payload,
            "false": False,
            "wall": wall_now(),
        },
    ).rowcount
    migration.status = "launched"
    migration.launched_at = now
    return Launched(
        id=migration_id,
        notices=int(notices),
        excluded=int(excluded),
        overridden=overridden,
        skipped=int(skipped),
    )


def _count_in(session: Session, migration_id: str, subs: list[str]) -> int:
    if not subs:
        return 0
    return int(
        session.scalar(
            select(func.count()).where(
                PriceMigrationMember.migration_id == migration_id,
                PriceMigrationMember.subscription_id.in_(subs),
            )
        )
        or 0
    )


def _is_member(session: Session, migration_id: str, sub: str) -> bool:
    return session.get(PriceMigrationMember, (migration_id, sub)) is not None


def _refuse_above_guardrail(session: Session, migration: PriceMigration, exclude: list[str]) -> None:
    m = PriceMigrationMember
    query = select(func.count(), func.max(m.increase_bp)).where(
        m.migration_id == migration.id, m.state == "pending", m.above_guardrail
    )
    if exclude:
        query = query.where(m.subscription_id.not_in(exclude))
    count, top = session.execute(query).one()
    if count:
        who = "subscriber is" if count == 1 else "subscribers are"
        raise Refused(
            "guardrail",
            f"{count} {who} above the {migration.guardrail_percent} % guardrail (up to +{top // 100}.{top % 100:02d} %): "
            f"exclude them with --exclude or launch with --override-guardrail (see `dunning prices preview {migration.id}`)",
        )


def _timeline(session: Session, migration_id: str, now: datetime, where: str, detail: str) -> int:
    """One timeline line per member matching ``where`` (set-based); returns how many."""
    return int(
        session.execute(
            statement(
                f"""
                INSERT INTO timeline (subscription_id, case_id, at, kind, detail)
                SELECT subscription_id, NULL, :now, 'price', :detail
                FROM price_migration_members WHERE migration_id = :mid AND {where}
                """
            ),
            {"mid": migration_id, "now": now, "detail": f"price migration {migration_id}: {detail}"},
        ).rowcount
    )
