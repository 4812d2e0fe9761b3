"""A launched price migration over simulated months, on real parts (issue 11, "What the workers do").

Redis, the SMTP test server, the sandbox billing server, SQLite and PostgreSQL.
Each test launches a small migration (:mod:`tests.support.prices`), sends the
events a billing system sends, moves the simulated clock, and reads what arrived
on the SMTP server, what the sandbox was asked and the timeline.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from tests.support.harness import START
from tests.support.prices import (
    REASON,
    change_plan_calls,
    launch,
    member,
    migration,
    price_mails,
    set_status,
    text_of,
)

from dunning.store.models import Job

pytestmark = pytest.mark.integration

NOTICE, REMINDER = "price_change_notice", "price_change_reminder"
RENEWAL = START + timedelta(days=30)  # every customer the harness makes renews then (monthly)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _customers(world: Any, *ids: int, tz: str = "UTC", locale: str = "en") -> list[str]:
    """cus_N with sub_N (pro, EUR 49.00 a month), known to the sandbox."""
    subs = []
    for n in ids:
        world.customer(f"cus_{n}", sub=f"sub_{n}", tz=tz, locale=locale)
        world.sandbox.state.add_subscription(
            f"sub_{n}", customer_id=f"cus_{n}", plan="pro", amount_minor=4900, currency="EUR"
        )
        subs.append(f"sub_{n}")
    return subs


def _upsert(world: Any, n: int = 1, **fields: Any) -> None:
    """A ``subscription.upserted`` for sub_N, occurring now by the wall clock, as the harness's own events do."""
    sub: dict[str, Any] = {
        "id": f"sub_{n}",
        "customer_id": f"cus_{n}",
        "plan": "pro",
        "status": "active",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        "current_period_end": _iso(RENEWAL),
    }
    sub.update(fields)
    world.client.subscription_upserted(sub)
    world.sent_events += 1
    world.settle()


def _until(world: Any, at: datetime, step: timedelta = timedelta(hours=12)) -> None:
    """Move the clock to ``at``; steps of a day jump over the 24 hours before a 10:00 renewal: keep 12 h there."""
    world.advance(at - world.rt.clock.now(), step=step)


def _price_lines(world: Any, sub: str = "sub_1") -> list[str]:
    return [line for line in world.timeline(sub) if line.startswith("price migration")]


def test_notice_and_reminder_go_once_and_the_new_price_applies_once_at_the_renewal(world: Any) -> None:
    h = world
    _customers(h, 1, tz="Asia/Tokyo")
    launch(h, ["sub_1"])

    [notice] = price_mails(h, NOTICE)
    text = text_of(notice)
    # Old price, new price, the date in the customer's zone (10:00 UTC is 19:00 in Tokyo).
    for shown in ("€49.00 a month", "€59.00 a month", "Wednesday, December 2, 2026", REASON):
        assert shown in text, shown
    # One signed link per offered choice, plus the account button.
    assert text.count("/l/") == 5
    for label in ("Choose the step-up:", "Switch to yearly billing:", "Move to basic:", "Keep my plan:"):
        assert label in text, label
    m = member(h)
    assert (m.state, m.notified_at, m.applies_at) == ("notified", START, RENEWAL)

    # A week before the renewal: the reminder, once.
    _until(h, RENEWAL - timedelta(days=7, hours=1))
    assert price_mails(h, REMINDER) == []
    _until(h, RENEWAL - timedelta(days=6))
    [reminder] = price_mails(h, REMINDER)
    assert "December 2, 2026" in reminder["Subject"]
    assert member(h).state == "reminded"
    assert change_plan_calls(h) == []

    # Within the 24 hours before the renewal: one change_plan, with the stable key.
    _until(h, RENEWAL - timedelta(hours=13))
    assert change_plan_calls(h) == []
    _until(h, RENEWAL + timedelta(days=3))
    [call] = change_plan_calls(h)
    assert (call.idempotency_key, call.status, call.replay) == ("price:pm_1:sub_1:apply", 200, False)
    billed = h.sandbox.state.subscription("sub_1")
    assert (billed.plan, billed.amount_minor, billed.currency) == ("pro", 5900, "EUR")
    assert billed.plan_effective_at == "2026-12-02T10:00:00Z"
    assert billed.interval is None  # the interval is not touched
    m = member(h)
    assert (m.state, m.applies_at) == ("applied", RENEWAL)
    assert m.applied_at is not None and RENEWAL - timedelta(hours=24) <= m.applied_at < RENEWAL
    assert migration(h).status == "completed"
    lines = _price_lines(h)
    assert any("notice queued" in line for line in lines)
    assert any("reminder queued" in line for line in lines)
    assert any("applied (choice none): pro at €59.00 from 2026-12-02" in line for line in lines)

    # The job runs again (a worker that died after the call, before its commit): same request, same key.
    with h.rt.sessions.begin() as s:
        s.execute(
            update(Job)
            .where(Job.key == "price:pm_1:sub_1:apply")
            .values(status="pending", due_at=h.rt.clock.now(), finished_at=None)
        )
    h.settle()
    calls = change_plan_calls(h)
    assert [c.replay for c in calls] == [False, True]
    assert {c.idempotency_key for c in calls} == {"price:pm_1:sub_1:apply"}
    # Months later: nothing more was sent or called.
    _until(h, RENEWAL + timedelta(days=45), step=timedelta(days=3))
    assert len(price_mails(h, NOTICE)) == 1 and len(price_mails(h, REMINDER)) == 1
    assert len(change_plan_calls(h)) == 2


def test_a_renewal_too_soon_is_passed_over_and_a_moved_renewal_is_followed(world: Any) -> None:
    h = world
    _customers(h, 1, 2)
    launch(h, ["sub_1", "sub_2"], notice_days=45)
    # Renewal on Dec 2 is 30 days after the notice: too soon for 45 days' notice, so Jan 2.
    assert member(h).applies_at == RENEWAL.replace(month=1, year=2027)
    # sub_2's renewal moves (the billing system says so): its application follows.
    moved = RENEWAL + timedelta(days=10)
    _upsert(h, 2, current_period_end=_iso(moved))
    assert member(h, "sub_2").applies_at == datetime(2027, 1, 12, 10, tzinfo=moved.tzinfo)
    assert any(
        "applies at 2027-01-12 10:00Z now (was 2027-01-02 10:00Z)" in line
        for line in _price_lines(h, "sub_2")
    )
    _until(h, datetime(2027, 1, 3, tzinfo=START.tzinfo))
    [call] = change_plan_calls(h, "sub_1")
    assert call.idempotency_key == "price:pm_1:sub_1:apply"
    assert h.sandbox.state.subscription("sub_1").plan_effective_at == "2027-01-02T10:00:00Z"
    assert change_plan_calls(h, "sub_2") == []  # not yet: its renewal is on the 12th
    _until(h, datetime(2027, 1, 13, tzinfo=START.tzinfo))
    [call] = change_plan_calls(h, "sub_2")
    assert h.sandbox.state.subscription("sub_2").plan_effective_at == "2027-01-12T10:00:00Z"
    # Each got exactly one reminder, 7 days before its own date.
    assert len(price_mails(h, REMINDER, "cus_1@example.com")) == 1
    assert len(price_mails(h, REMINDER, "cus_2@example.com")) == 1


def test_cancel_plan_change_and_currency_change_skip_with_the_reason(world: Any) -> None:
    h = world
    _customers(h, 1, 2, 3)
    launch(h, ["sub_1", "sub_2", "sub_3"], cancel_alert_percent=50)
    h.advance(timedelta(days=20), step=timedelta(days=1))  # outside the 14-day alert window
    h.cancel("sub_1")
    h.settle()
    _upsert(h, 2, plan="business", amount_minor=9900)
    _upsert(h, 3, status="active", cancel_at_period_end=True)
    _until(h, RENEWAL + timedelta(days=2), step=timedelta(days=1))
    reasons = {sub: (member(h, sub).state, member(h, sub).reason) for sub in ("sub_1", "sub_2", "sub_3")}
    assert reasons == {
        "sub_1": ("skipped", "canceled"),
        "sub_2": ("skipped", "plan changed"),
        "sub_3": ("skipped", "canceled"),
    }
    for n in (1, 2, 3):
        assert change_plan_calls(h, f"sub_{n}") == []
        assert price_mails(h, REMINDER, f"cus_{n}@example.com") == []  # skipped before the reminder
        assert any("skipped (" in line for line in _price_lines(h, f"sub_{n}"))
    with h.rt.sessions() as s:
        left = s.execute(select(Job.key, Job.status).where(Job.key.like("price:pm_1:%"))).all()
    assert {status for key, status in left if not key.endswith(":notice")} == {"canceled"}
    assert migration(h).status == "completed"


def test_an_open_dunning_case_defers_the_price_until_the_case_recovers(world: Any) -> None:
    h = world
    _customers(h, 1)
    launch(h, ["sub_1"])
    _until(h, RENEWAL - timedelta(days=4))
    h.fail("in_1", sub="sub_1", cid="cus_1")
    _until(h, RENEWAL + timedelta(days=2))
    m = member(h)
    assert (m.state, m.reason) == ("deferred", "dunning case open")
    assert change_plan_calls(h) == []
    assert any("deferred: a dunning case is open" in line for line in _price_lines(h))
    # Paid: the case closes as recovered; the price applies at the next renewal after it (Jan 2).
    h.paid("in_1")
    h.settle()
    _until(h, datetime(2027, 1, 1, 12, tzinfo=START.tzinfo), step=timedelta(days=1))
    assert change_plan_calls(h) == []
    _until(h, datetime(2027, 1, 3, tzinfo=START.tzinfo))
    [call] = change_plan_calls(h)
    assert call.idempotency_key == "price:pm_1:sub_1:apply"
    assert h.sandbox.state.subscription("sub_1").plan_effective_at == "2027-01-02T10:00:00Z"
    assert member(h).state == "applied"
    assert any("dunning case recovered" in line for line in _price_lines(h))


def test_a_paused_migration_waits_and_resumes_where_it_stood(world: Any) -> None:
    h = world
    _customers(h, 1)
    launch(h, ["sub_1"])
    set_status(h, "paused")
    _until(h, RENEWAL + timedelta(days=2), step=timedelta(days=1))
    # Neither the reminder nor the change went out while paused; the Dec 2 renewal passed.
    assert price_mails(h, REMINDER) == [] and change_plan_calls(h) == []
    assert member(h).state == "notified"
    set_status(h, "launched")
    _until(h, datetime(2027, 1, 3, tzinfo=START.tzinfo))
    assert len(price_mails(h, REMINDER)) == 1
    [call] = change_plan_calls(h)
    assert h.sandbox.state.subscription("sub_1").plan_effective_at == "2027-01-02T10:00:00Z"
    assert call.replay is False


def test_cancellations_soon_after_the_notice_pause_the_migration_with_an_alert(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = world
    subs = _customers(h, *range(1, 11))
    launch(h, subs, cancel_alert_percent=10)  # more than 1 in 10 within 14 days
    h.advance(timedelta(days=3), step=timedelta(days=1))
    with caplog.at_level(logging.WARNING, logger="dunning.price_migrations"):
        h.cancel("sub_1")
        h.settle()
        assert migration(h).status == "launched"  # 1 of 10 is not above 10 %
        h.cancel("sub_2")
        h.settle()
    paused = migration(h)
    assert paused.status == "paused"
    assert paused.paused_reason is not None and "2 of 10 notified subscribers (20.0%)" in paused.paused_reason
    assert any("auto-paused" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert member(h, "sub_2").reason == "canceled within 14 days of the notice"
    # The alert is on the metrics endpoint's collector.
    from dunning.metrics import DunningCollector

    families = {f.name: f for f in DunningCollector(h.rt, h.broker.client).collect()}
    samples = {
        tuple(s.labels.values()): s.value for s in families["dunning_price_migration_auto_paused"].samples
    }
    assert samples == {("pm_1",): 1.0}
    # The others wait: no reminder and no change while paused.
    _until(h, RENEWAL + timedelta(days=1), step=timedelta(days=1))
    assert change_plan_calls(h, "sub_3") == []
    assert price_mails(h, REMINDER, "cus_3@example.com") == []


def test_an_event_after_the_call_is_fixed_does_not_undo_it(world: Any) -> None:
    h = world
    _customers(h, 1)
    launch(h, ["sub_1"])
    _until(h, RENEWAL - timedelta(hours=13))
    # What the application's first transaction stores before it calls (the job is not due yet here).
    call = {
        "plan": "pro",
        "amount_minor": 5900,
        "currency": "EUR",
        "effective_at": RENEWAL.isoformat(),
        "interval": None,
        "interval_count": None,
    }
    with h.rt.sessions.begin() as s:
        s.execute(
            update(Job)
            .where(Job.key == "price:pm_1:sub_1:apply")
            .values(payload={"call": call, "choice": "none", "step_end": None})
        )
    # The billing system already shows the new amount: not a change that skips the member.
    _upsert(h, 1, amount_minor=5900)
    assert member(h).state == "reminded"
    _until(h, RENEWAL + timedelta(days=1))
    [sent] = change_plan_calls(h)
    assert (sent.idempotency_key, sent.replay) == ("price:pm_1:sub_1:apply", False)
    assert member(h).state == "applied"
