"""Lifecycle notices over simulated weeks on real parts: Redis, the SMTP test server, SQLite and PostgreSQL.

Each test sends the events a billing system sends (nothing else), moves the
simulated clock, and reads what arrived on the SMTP server and the timeline.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from dunning.store.models import Job

pytestmark = pytest.mark.integration

VISA = {"present": True, "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _subscription(h: Any, **fields: Any) -> None:
    """A ``subscription.upserted`` for sub_1 of cus_1, occurring at the simulated now."""
    now = h.rt.clock.now()
    sub: dict[str, Any] = {
        "id": "sub_1",
        "customer_id": "cus_1",
        "plan": "pro",
        "status": "active",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        "current_period_end": _iso(now + timedelta(days=30)),
    }
    sub.update(fields)
    h.client.subscription_upserted(sub, occurred_at=_iso(now))
    h.sent_events += 1
    h.settle()


def _payment_method(h: Any, pm: dict[str, Any], cid: str = "cus_1") -> None:
    h.client.payment_method_updated(customer_id=cid, payment_method=pm, occurred_at=_iso(h.rt.clock.now()))
    h.sent_events += 1
    h.settle()


def _mails(h: Any, kind: str, to: str = "cus_1@example.com") -> list[Any]:
    return [m for m in h.smtp.messages if to in m.rcpt_tos and m["X-Dunning-Kind"] == kind]


def _text(mail: Any) -> str:
    return str(mail.message.get_body(("plain",)).get_content())


def _lifecycle(h: Any, to: str = "cus_1@example.com") -> list[str]:
    kinds = {"payment_failed", "payment_reminder", "final_notice", "access_suspended"}
    return [k for k in h.notices(to) if k not in kinds]


def test_an_annual_subscriber_gets_the_configured_renewal_notices_with_amount_date_and_card(
    world: Any,
) -> None:
    h = world
    h.customer(sub=None, tz="America/Los_Angeles")
    renewal = h.rt.clock.now() + timedelta(days=40, hours=-8)  # 02:00 UTC: the day before, in Los Angeles
    _subscription(
        h, interval="year", amount_minor=49000, current_period_end=_iso(renewal), payment_method=VISA
    )
    assert _lifecycle(h) == []
    h.advance(timedelta(days=12), step=timedelta(hours=12))
    assert _lifecycle(h) == ["renewal_notice"]  # 30 days before
    h.advance(timedelta(days=24), step=timedelta(hours=12))
    assert _lifecycle(h) == ["renewal_notice", "renewal_notice"]  # and 7 days before
    h.advance(timedelta(days=6), step=timedelta(hours=12))
    assert _lifecycle(h) == ["renewal_notice", "renewal_notice"]  # nothing after the renewal
    mails = _mails(h, "renewal_notice")
    local_day = renewal.astimezone(__import__("zoneinfo").ZoneInfo("America/Los_Angeles")).day
    for mail in mails:
        text = _text(mail)
        assert "€490.00" in text
        assert "4242" in text
        assert str(local_day) in text
        assert "/l/" in text
    assert len({m["Message-ID"] for m in mails}) == 2


def test_a_subscription_learned_late_gets_only_the_latest_offset_at_once(world: Any) -> None:
    h = world
    h.customer(sub=None)
    _subscription(
        h,
        interval="year",
        amount_minor=49000,
        current_period_end=_iso(h.rt.clock.now() + timedelta(days=10)),
        payment_method=VISA,
    )
    h.advance(timedelta(hours=12), step=timedelta(hours=12))
    assert _lifecycle(h) == ["renewal_notice"]
    h.advance(timedelta(days=9), step=timedelta(hours=12))
    assert _lifecycle(h) == ["renewal_notice", "renewal_notice"]  # the 7-day one still comes


def test_no_renewal_notice_when_the_subscription_cancels_at_period_end(world: Any) -> None:
    h = world
    h.customer(sub=None)
    end = _iso(h.rt.clock.now() + timedelta(days=40))
    _subscription(h, interval="year", current_period_end=end, payment_method=VISA)
    _subscription(h, interval="year", current_period_end=end, payment_method=VISA, cancel_at_period_end=True)
    h.advance(timedelta(days=39), step=timedelta(days=1))
    assert _lifecycle(h) == []
    assert any("cancel at the end of its period" in line for line in h.timeline())


def test_trial_sequences_differ_with_and_without_a_card_and_end_with_the_outcome(world: Any) -> None:
    h = world
    h.customer("cus_1", sub=None)
    h.customer("cus_2", sub=None)
    trial_end = h.rt.clock.now() + timedelta(days=10)
    common = {"status": "trialing", "trial_end": _iso(trial_end), "current_period_end": _iso(trial_end)}
    _subscription(h, payment_method=VISA, **common)
    h.client.subscription_upserted(
        {
            "id": "sub_2",
            "customer_id": "cus_2",
            "plan": "pro",
            "amount_minor": 4900,
            "currency": "EUR",
            "interval": "month",
            "payment_method": {"present": False},
            **common,
        },
        occurred_at=_iso(h.rt.clock.now()),
    )
    h.sent_events += 1
    h.settle()
    h.advance(timedelta(days=10), step=timedelta(hours=12))
    assert _lifecycle(h, "cus_1@example.com") == ["trial_reminder"] * 3
    assert _lifecycle(h, "cus_2@example.com") == ["trial_reminder"] * 3
    with_card = _text(_mails(h, "trial_reminder", "cus_1@example.com")[0])
    without = _text(_mails(h, "trial_reminder", "cus_2@example.com")[0])
    assert "4242" in with_card and "4242" not in without
    assert with_card != without
    # The outcome: one converted (the billing system reports it active), one lapsed.
    after = h.rt.clock.now() + timedelta(days=30)
    _subscription(
        h, status="active", payment_method=VISA, trial_end=_iso(trial_end), current_period_end=_iso(after)
    )
    h.client.subscription_upserted(
        {
            "id": "sub_2",
            "customer_id": "cus_2",
            "plan": "pro",
            "status": "canceled",
            "amount_minor": 4900,
            "currency": "EUR",
            "interval": "month",
            "trial_end": _iso(trial_end),
            "current_period_end": _iso(trial_end),
        },
        occurred_at=_iso(h.rt.clock.now()),
    )
    h.sent_events += 1
    h.advance(timedelta(days=1), step=timedelta(hours=6))
    converted = _mails(h, "trial_ended", "cus_1@example.com")
    lapsed = _mails(h, "trial_ended", "cus_2@example.com")
    assert len(converted) == 1 and len(lapsed) == 1
    assert _text(converted[0]) != _text(lapsed[0])


def test_an_early_conversion_cancels_the_remaining_trial_reminders(world: Any) -> None:
    h = world
    h.customer(sub=None)
    trial_end = h.rt.clock.now() + timedelta(days=10)
    _subscription(
        h,
        status="trialing",
        trial_end=_iso(trial_end),
        current_period_end=_iso(trial_end),
        payment_method=VISA,
    )
    h.advance(timedelta(days=4), step=timedelta(hours=12))
    assert _lifecycle(h) == ["trial_reminder"]  # the 7-day one
    _subscription(
        h,
        status="active",
        trial_end=_iso(trial_end),
        current_period_end=_iso(trial_end + timedelta(days=30)),
        payment_method=VISA,
    )
    h.advance(timedelta(days=8), step=timedelta(hours=12))
    assert _lifecycle(h).count("trial_reminder") == 1
    with h.rt.sessions() as s:
        canceled = s.execute(
            select(Job.key).where(Job.kind == "lifecycle_notice", Job.status == "canceled")
        ).scalars()
        assert sum(":3d" in k or ":1d" in k for k in canceled) == 2
    assert any("trial_reminder canceled" in line and "over early" in line for line in h.timeline())


def test_a_card_update_mid_sequence_stops_pre_dunning_and_says_why(world: Any) -> None:
    h = world
    h.customer(sub=None)
    now = h.rt.clock.now()  # 2026-11-02: a card expiring at the end of December
    expiring = {"present": True, "brand": "visa", "last4": "1111", "exp_month": 12, "exp_year": 2026}
    _subscription(
        h, interval="year", current_period_end=_iso(now + timedelta(days=120)), payment_method=expiring
    )
    h.advance(timedelta(days=31), step=timedelta(days=1))
    assert _lifecycle(h) == ["card_expiring"]  # 30 days before the end of December
    _payment_method(h, {"present": True, "brand": "visa", "last4": "2222", "exp_month": 12, "exp_year": 2029})
    h.advance(timedelta(days=30), step=timedelta(days=1))
    assert _lifecycle(h) == ["card_expiring"]
    assert any("card_expiring canceled" in line and "2222" in line for line in h.timeline())


def test_a_customer_in_dunning_gets_no_annual_offer_until_the_case_is_over(world: Any) -> None:
    h = world
    h.customer(sub=None)
    # Three months of tenure are reached on day 7 or 8; the payment fails before that.
    started = _iso(h.rt.clock.now() - timedelta(days=85))
    _subscription(h, started_at=started, payment_method=VISA)
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    h.advance(timedelta(days=10), step=timedelta(hours=12))
    assert "annual_offer" not in h.notices()
    assert any("annual_offer" in line and "held" in line for line in h.timeline())
    h.paid()
    h.settle()
    h.advance(timedelta(hours=12), step=timedelta(hours=12))
    assert h.notices().count("annual_offer") == 1
    text = _text(_mails(h, "annual_offer")[0])
    assert "€88.20" in text  # 12 x €49.00 = €588.00, 15 % off: €499.80, a saving of €88.20


def test_a_yearly_subscriber_never_gets_the_annual_offer(world: Any) -> None:
    h = world
    h.customer(sub=None)
    _subscription(
        h,
        interval="year",
        started_at=_iso(h.rt.clock.now() - timedelta(days=400)),
        current_period_end=_iso(h.rt.clock.now() + timedelta(days=200)),
        payment_method=VISA,
    )
    h.advance(timedelta(days=5), step=timedelta(days=1))
    assert "annual_offer" not in h.notices()


def test_a_temporary_upgrade_gets_its_prompts_and_a_note_when_it_reverts(world: Any) -> None:
    h = world
    h.customer(sub=None)
    ends = h.rt.clock.now() + timedelta(days=14)
    _subscription(
        h,
        payment_method=VISA,
        current_period_end=_iso(h.rt.clock.now() + timedelta(days=30)),
        temporary_upgrade={"plan": "max", "ends_at": _iso(ends), "revert_to": "pro"},
    )
    h.advance(timedelta(days=15), step=timedelta(hours=12))
    assert _lifecycle(h) == ["upgrade_ending", "upgrade_ending", "upgrade_reverted"]


def test_duplicate_events_and_replays_never_send_a_notice_twice(world: Any) -> None:
    h = world
    h.customer(sub=None)
    end = _iso(h.rt.clock.now() + timedelta(days=20))
    for _ in range(3):
        _subscription(h, interval="year", current_period_end=end, payment_method=VISA)
    h.advance(timedelta(days=19), step=timedelta(days=1))
    # The 30-day offset was past when we learned of it: once at once, then the 7-day one.
    assert _lifecycle(h) == ["renewal_notice", "renewal_notice"]
    with h.rt.sessions() as s:
        keys = list(s.execute(select(Job.key).where(Job.kind == "lifecycle_notice")).scalars())
    assert len(keys) == len(set(keys))


def test_calendar_shows_what_the_workers_will_send_with_local_dates_and_reasons(world: Any) -> None:
    import json

    from typer.testing import CliRunner

    from dunning.cli import app

    h = world
    h.customer(sub=None, tz="Europe/Paris")
    now = h.rt.clock.now()
    _subscription(
        h,
        interval="year",
        amount_minor=49000,
        current_period_end=_iso(now + timedelta(days=45)),
        payment_method=VISA,
    )
    h.client.subscription_upserted(
        {
            "id": "sub_2",
            "customer_id": "cus_1",
            "plan": "pro",
            "status": "trialing",
            "amount_minor": 4900,
            "currency": "EUR",
            "interval": "month",
            "trial_end": _iso(now + timedelta(days=10)),
            "current_period_end": _iso(now + timedelta(days=10)),
        },
        occurred_at=_iso(now),
    )
    h.sent_events += 1
    h.settle()
    runner = CliRunner()
    annual = runner.invoke(app, ["calendar", "sub_1", "--json"])
    assert annual.exit_code == 0, annual.output
    entries = json.loads(annual.output)
    assert [(e["kind"], e["key"].rsplit(":", 1)[-1]) for e in entries] == [
        ("renewal_notice", "30d"),
        ("renewal_notice", "7d"),
    ]
    assert entries[0]["timezone"] == "Europe/Paris"
    assert entries[0]["due_local"].endswith("11:00")  # 10:00 UTC is 11:00 in Paris in December
    assert entries[0]["sends_local"] == entries[0]["due_local"]  # outside quiet hours (21:00-08:00)
    assert "renewals.offsets_days" in entries[0]["reason"]
    # The same planner the workers run: what the calendar lists is what the job table holds.
    with h.rt.sessions() as s:
        pending = set(
            s.execute(
                select(Job.key).where(
                    Job.kind == "lifecycle_notice", Job.subject == "sub_1", Job.status == "pending"
                )
            ).scalars()
        )
    assert pending == {f"lc:{e['key']}" for e in entries}
    trial = json.loads(runner.invoke(app, ["calendar", "sub_2", "--json", "--days", "30"]).output)
    # The card on file is the customer's (given with sub_1): the reminders confirm the first charge.
    assert [(e["kind"], e["variant"]) for e in trial] == [("trial_reminder", "card")] * 3
    both = json.loads(runner.invoke(app, ["calendar", "--customer", "cus_1", "--json"]).output)
    assert {e["subscription_id"] for e in both} == {"sub_1", "sub_2"}
    short = json.loads(runner.invoke(app, ["calendar", "sub_1", "--json", "--days", "20"]).output)
    assert [e["key"].rsplit(":", 1)[-1] for e in short] == ["30d"]  # 45 - 30 = 15 days out; 38 is beyond 20
    table = runner.invoke(app, ["calendar", "sub_1"])
    assert table.exit_code == 0 and "renewal_notice" in table.output
    unknown = runner.invoke(app, ["calendar", "sub_nope"])
    assert unknown.exit_code == 2 and "unknown subscription" in unknown.output


def test_impossible_dates_on_the_queue_are_parked_naming_the_field_and_lose_nothing(world: Any) -> None:
    from dunning.store.models import DeadLetter, Subscription

    h = world
    h.customer(sub=None)
    _subscription(
        h,
        interval="year",
        current_period_end=_iso(h.rt.clock.now() + timedelta(days=60)),
        payment_method=VISA,
    )
    now = h.rt.clock.now()
    h.send(
        {
            "id": "evt_bad_trial",
            "type": "subscription.upserted",
            "occurred_at": _iso(now),
            "data": {
                "subscription": {
                    "id": "sub_1",
                    "customer_id": "cus_1",
                    "plan": "pro",
                    "status": "trialing",
                    "amount_minor": 4900,
                    "currency": "EUR",
                    "interval": "month",
                    "trial_end": _iso(now - timedelta(days=1)),
                    "current_period_end": _iso(now + timedelta(days=30)),
                }
            },
        }
    )
    h.settle()
    with h.rt.sessions() as s:
        parked = s.execute(select(DeadLetter)).scalars().all()
        sub = s.get(Subscription, "sub_1")
        assert sub is not None and sub.interval == "year"  # nothing about the subscription lost
    assert [(p.field, "before the event" in p.reason) for p in parked] == [
        ("data.subscription.trial_end", True)
    ]
