"""A launched price migration for the workers' tests, through the same calls as ``dunning prices``.

Planned and launched by :mod:`dunning.workflows.price_migrations.members` (one
``pending`` member per subscription, one ``price_notice`` job each, due now),
paused, resumed and canceled by :mod:`~dunning.workflows.price_migrations.controls`.
The workers take it from there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dunning.store.models import PriceMigration, PriceMigrationMember
from dunning.workflows.price_migrations import controls, members
from dunning.workflows.price_migrations.members import plan_migration
from dunning.workflows.price_migrations.terms import MigrationTerms

REASON = "New reporting features and a 24/7 support line"
OFFERS: list[dict[str, Any]] = [
    {"kind": "step_up", "percent": 10, "months": 3},
    {"kind": "annual_lock"},
    {"kind": "downgrade", "plan": "basic", "amount_minor": 3900},
]


def launch(
    world: Any,
    subscriptions: list[str],
    *,
    migration_id: str = "pm_1",
    new_amount_minor: int = 5900,
    notice_days: int = 30,
    grandfather_months: int = 0,
    effective_at: datetime | None = None,
    offers: list[dict[str, Any]] | None = None,
    cancel_alert_percent: int = 5,
) -> str:
    """Plan and launch (``dunning prices plan`` + ``launch``) a migration of plan ``pro``, EUR, monthly.

    ``subscriptions``: the subscriptions the test expects in it (every live ``pro`` one is).
    """
    now = world.rt.clock.now()
    terms = MigrationTerms(
        plan="pro",
        currency="EUR",
        interval="month",
        new_amount_minor=new_amount_minor,
        effective_at=effective_at or now,
        notice_days=notice_days,
        grandfather_months=grandfather_months,
        offers=tuple(OFFERS if offers is None else offers),
        reason=REASON,
        cancel_alert_percent=cancel_alert_percent,
    )
    with world.rt.sessions.begin() as s:
        plan_migration(s, terms, now=now, migration_id=migration_id)
        launched = members.launch(s, migration_id, now=now)
    assert launched.notices == len(subscriptions), launched
    world.settle()
    return migration_id


def member(world: Any, sub: str = "sub_1", migration_id: str = "pm_1") -> PriceMigrationMember:
    with world.rt.sessions() as s:
        found = s.get(PriceMigrationMember, (migration_id, sub))
        assert found is not None
        return found


def migration(world: Any, migration_id: str = "pm_1") -> PriceMigration:
    with world.rt.sessions() as s:
        found = s.get(PriceMigration, migration_id)
        assert found is not None
        return found


def set_status(world: Any, status: str, migration_id: str = "pm_1") -> None:
    """``dunning prices pause`` / ``resume`` / ``cancel``, as the commands run them."""
    control = {"paused": controls.pause, "launched": controls.resume, "canceled": controls.cancel}[status]
    with world.rt.sessions.begin() as s:
        changed, message = control(s, migration_id, now=world.rt.clock.now())
    assert changed, message


def change_plan_calls(world: Any, sub: str = "sub_1") -> list[Any]:
    """The ``change_plan`` requests the sandbox received for ``sub`` (replays included)."""
    return [c for c in world.sandbox.state.calls() if c.path == f"/subscriptions/{sub}/change_plan"]


def price_mails(world: Any, kind: str, to: str = "cus_1@example.com") -> list[Any]:
    return [m for m in world.smtp.messages if to in m.rcpt_tos and m["X-Dunning-Kind"] == kind]


def text_of(mail: Any) -> str:
    return str(mail.message.get_body(("plain",)).get_content())
