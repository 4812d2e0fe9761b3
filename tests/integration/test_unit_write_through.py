"""Rows the unit writes itself (``Unit.write_through``): written once, by the unit, and only the rest by the ORM.

An object all of whose changes the unit wrote is clean afterwards (the commit's
flush has nothing to do and sends nothing); one with other changes too keeps
those for the session's flush, which writes only them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select

from dunning.store.db import make_engine, make_sessionmaker
from dunning.store.migrate import upgrade
from dunning.store.models import Customer, Subscription
from dunning.store.unit import install, unit_of

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, tzinfo=UTC)
T1 = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
PM = ("pm_source_at", "pm_present", "pm_brand", "pm_last4", "pm_exp_month", "pm_exp_year")


@pytest.fixture
def sessions(db_url: str):
    engine = make_engine(db_url)
    upgrade(engine)
    factory = make_sessionmaker(engine)
    install(factory, lease_s=60)
    with factory() as s, s.begin():
        for n in (1, 2):
            s.add(Customer(id=f"cus_{n}", email=f"c{n}@example.com", updated_at=T0))
            s.add(
                Subscription(
                    id=f"sub_{n}",
                    customer_id=f"cus_{n}",
                    plan="pro",
                    status="active",
                    amount_minor=4900,
                    currency="EUR",
                    interval="month",
                    current_period_end=T0,
                    updated_at=T0,
                )
            )
    statements: list[str] = []
    event.listen(
        engine, "before_cursor_execute", lambda conn, cur, sql, params, ctx, many: statements.append(sql)
    )
    yield factory, statements
    engine.dispose()


def test_objects_whose_changes_the_unit_wrote_are_clean_and_the_rest_is_flushed(sessions) -> None:
    factory, statements = sessions
    with factory() as s, s.begin():
        subs = s.execute(select(Subscription).order_by(Subscription.id)).scalars().all()
        customers = s.execute(select(Customer).order_by(Customer.id)).scalars().all()
        unit = unit_of(s)
        for sub in subs:
            unit.write_through(sub, ("plan", "status", "current_period_end", "updated_at"))
            sub.plan, sub.status, sub.current_period_end, sub.updated_at = "max", "trialing", T1, T1
        unit.write_through(customers[0], PM)
        customers[0].pm_present, customers[0].pm_brand, customers[0].pm_source_at = True, "visa", T1
        unit.write_through(customers[1], PM)
        customers[1].pm_last4 = "4242"
        customers[1].name = "Not the unit's to write"  # the session's flush writes this one
        unit.flush(s)
        assert set(s.dirty) == {customers[1]}
        assert not s.is_modified(customers[0]) and not any(s.is_modified(sub) for sub in subs)
        statements.clear()
    # The commit flushed only the one column nobody told the unit about.
    updates = [sql for sql in statements if sql.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 1 and "customers" in updates[0] and "name" in updates[0]
    assert "pm_last4" not in updates[0]
    with factory() as s:
        subs = s.execute(select(Subscription).order_by(Subscription.id)).scalars().all()
        assert [(x.plan, x.status, x.current_period_end, x.updated_at) for x in subs] == [
            ("max", "trialing", T1, T1)
        ] * 2
        c1, c2 = s.execute(select(Customer).order_by(Customer.id)).scalars().all()
        assert (c1.pm_present, c1.pm_brand, c1.pm_source_at, c1.name) == (True, "visa", T1, None)
        assert (c2.pm_last4, c2.name) == ("4242", "Not the unit's to write")
