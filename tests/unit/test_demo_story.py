"""The demo's seeded customer base: the failed-payment story is pinned, the lifecycle and price stories valid and complete.

Pure: the stories are built and turned into contract events (the demo's own
mapping, a Dramatiq stub broker, the sandbox billing state), no server runs.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.broker.names import EVENTS_QUEUE
from dunning.client import Client
from dunning.contract import parse_event
from dunning.devtools.demo import BY_HAND, _apply_to_sandbox, _send
from dunning.devtools.demo_lifecycle import build_lifecycle, group_size
from dunning.devtools.demo_lifecycle_run import renewed
from dunning.devtools.demo_prices import (
    CURRENT_MINOR,
    NEW_MINOR,
    build_prices,
    command_line,
    migration_options,
    price_group_size,
)
from dunning.devtools.demo_scenario import Action, build_scenario
from dunning.devtools.sandbox import SandboxServer
from dunning.workflows.price_migrations import terms as terms_module
from dunning.workflows.price_migrations.pricing import add_months, apply_at
from dunning.workflows.price_migrations.rules import APPLY_LEAD, REMINDER_BEFORE

START = datetime(2026, 12, 6, 9, tzinfo=UTC)
STEP = timedelta(hours=6)


def _fingerprint(actions: list[Action]) -> str:
    rows = [[a.at.isoformat(), a.kind, a.data] for a in actions]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def test_the_failed_payment_story_of_a_seed_is_unchanged() -> None:
    # The README's demo figures (120 cases, 76 recovered by retry, ...) come from this exact story.
    scenario = build_scenario(seed=7, subscriptions=300, days=46, start=START)
    assert (scenario.failures, len(scenario.actions)) == (120, 750)
    assert (
        _fingerprint(scenario.actions) == "9dda75a871feb8b9195de1e9cc15020c147c8aefb273dc5712b2e9bccec07430"
    )


def _events(actions: list[Action], sandbox: SandboxServer | None = None) -> list[Any]:
    """Every action as the demo sends it, parsed back with the contract (a refusal raises InvalidEvent)."""
    broker = StubBroker()
    broker.declare_queue(EVENTS_QUEUE)
    client, sandbox = Client(broker=broker), sandbox or SandboxServer(secret="test")
    for action in actions:
        if action.kind in BY_HAND and action.kind != "customer":
            continue  # the customer on the HTTP app, or the operator's commands: not events
        _apply_to_sandbox(sandbox, action)
        _send(client, sandbox, action)
    return [parse_event(Message.decode(raw).args[0]) for raw in list(broker.queues[EVENTS_QUEUE].queue)]


def _story(seed: int = 7, subscriptions: int = 300, days: int = 46, start: datetime = START) -> list[Action]:
    return build_lifecycle(seed=seed, subscriptions=subscriptions, days=days, start=start).actions


def _subs(events: list[Any]) -> dict[str, list[Any]]:
    """The subscription objects of each subscription's upserts, in the order sent."""
    out: dict[str, list[Any]] = {}
    for e in events:
        if e.type == "subscription.upserted":
            out.setdefault(e.data.subscription.id, []).append((e.occurred_at, e.data.subscription))
    return out


def test_every_lifecycle_action_is_a_valid_event_at_its_own_time_on_the_grid() -> None:
    actions = _story()
    events = _events(actions)
    assert len(events) == sum(a.kind != "accept_offer" for a in actions)
    for action, event in zip((a for a in actions if a.kind != "accept_offer"), events, strict=True):
        assert event.occurred_at == action.at
        assert (action.at - START) % STEP == timedelta(0) and action.at >= START
    assert [a.at for a in actions] == sorted(a.at for a in actions)


def test_lifecycle_ids_and_random_stream_are_apart_from_the_failed_payment_story() -> None:
    scenario = build_scenario(seed=7, subscriptions=300, days=46, start=START)
    lifecycle = _story()
    old = {a.data.get("id") for a in scenario.actions if a.kind in ("customer", "subscription")}
    new = {a.data["id"] for a in lifecycle if a.kind in ("customer", "subscription")}
    assert not old & new
    assert all(i.startswith(("cus_L", "sub_L")) for i in new)
    assert _fingerprint(_story()) == _fingerprint(lifecycle)  # seeded: the same story twice
    assert _fingerprint(_story(seed=8)) != _fingerprint(lifecycle)


def test_group_sizes_scale_with_the_demo() -> None:
    assert group_size(300) == 20
    assert group_size(10) == 2  # every outcome still occurs at least once
    assert group_size(3000) == 200
    story = build_lifecycle(seed=7, subscriptions=300, days=46, start=START)
    assert story.groups == {
        "annual": 20,
        "trials_card": 10,
        "trials_no_card": 10,
        "expiring_cards": 20,
        "temporary_upgrades": 20,
        "long_tenure": 20,
    }
    assert build_lifecycle(seed=7, subscriptions=10, days=46, start=START).groups["trials_card"] == 2
    customers = [a for a in story.actions if a.kind == "customer"]
    assert len(customers) == sum(story.groups.values()) == 100
    # All known from the first step: customers later in the story would cost the demo a wait each.
    assert {a.at for a in customers} == {START}


def test_the_story_has_every_kind_of_lifecycle_subscriber() -> None:
    actions = _story()
    end = START + timedelta(days=46)
    subs = _subs(_events(actions))
    first = {sid: versions[0][1] for sid, versions in subs.items()}
    # Yearly subscribers renewing inside the window, then a year later.
    yearly = [s for s in first.values() if s.interval == "year"]
    assert len(yearly) == 20
    for s in yearly:
        assert START < s.current_period_end < end
        (_, renewed), *_ = subs[s.id][1:]
        assert renewed.current_period_end == s.current_period_end + timedelta(days=365)
    # Trials ending inside the window, with and without a card; converted and lapsed.
    trials = {sid: v for sid, v in subs.items() if v[0][1].status == "trialing"}
    assert len(trials) == 20
    outcomes = Counter()
    for versions in trials.values():
        (began, trial), (at, outcome) = versions
        assert trial.started_at == began and at == trial.trial_end < end
        assert trial.trial_end - began in (timedelta(days=d) for d in (7, 14, 21))
        outcomes[(trial.payment_method.present, outcome.status)] += 1
    assert outcomes[(True, "active")] > 0 and outcomes[(True, "canceled")] > 0
    assert outcomes[(False, "canceled")] > 0
    added = {a.data["customer_id"] for a in actions if a.kind == "card_update"}
    no_card_converted = [
        v for v in trials.values() if not v[0][1].payment_method.present and v[1][1].status == "active"
    ]
    assert no_card_converted and all(v[0][1].customer_id in added for v in no_card_converted)
    # Temporary upgrades of 7 and 14 days; some made permanent, the others reverted.
    tastes = {sid: v for sid, v in subs.items() if any(s.temporary_upgrade for _, s in v)}
    assert len(tastes) == 20
    lengths, finals = set(), Counter()
    for versions in tastes.values():
        (seen, upgraded) = next((at, s) for at, s in versions if s.temporary_upgrade)
        lengths.add(upgraded.temporary_upgrade.ends_at - seen)
        finals[versions[2][1].plan] += 1
    assert lengths == {timedelta(days=7), timedelta(days=14)}
    assert finals["pro"] > 0 and finals["starter"] > 0
    # Long-tenure monthly subscribers (4 to 30 months), some of whom accept the annual offer.
    tenured = [s for s in first.values() if s.started_at and s.status == "active" and s.interval == "month"]
    assert len(tenured) == 20
    assert all(timedelta(days=120) <= START - s.started_at <= timedelta(days=900) for s in tenured)
    accepting = [a for a in actions if a.kind == "accept_offer"]
    assert 0 < len(accepting) < 20
    for a in accepting:
        assert a.at >= START + timedelta(days=1)
        assert a.at <= first[a.data["subscription_id"]].current_period_end - timedelta(days=2)


def test_expiring_cards_expire_before_the_renewal_and_half_are_updated_before_they_expire() -> None:
    actions = _story()
    subs = _subs(_events(actions))
    updates = {a.data["customer_id"]: a for a in actions if a.kind == "card_update"}
    expiring, updated = 0, 0
    for versions in subs.values():
        _, s = versions[0]
        pm = s.payment_method
        if s.status != "active" or not pm or not pm.present or pm.exp_year > START.year + 1:
            continue
        expiring += 1
        expires = datetime(pm.exp_year + pm.exp_month // 12, pm.exp_month % 12 + 1, 1, tzinfo=UTC)
        assert START + timedelta(days=9) <= expires < s.current_period_end
        update = updates.get(s.customer_id)
        if update is not None:
            updated += 1
            assert expires - timedelta(days=30) < update.at < expires
            assert update.data["payment_method"]["exp_year"] == pm.exp_year + 3
            # The renewal says nothing of the card: the update stays the newest payment-method fact.
            assert all(later.payment_method is None for _, later in versions[1:])
    assert (expiring, updated) == (20, 10)


def test_an_accepted_annual_switch_renews_as_yearly_billing() -> None:
    actions = _story()
    sandbox = SandboxServer(secret="test")
    accepted = next(a.data["subscription_id"] for a in actions if a.kind == "accept_offer")
    renewal = next(a for a in actions if a.kind == "renewal" and a.data["id"] == accepted)
    # What the annual_switch job asks of the billing system.
    before = [a for a in actions if a.at < renewal.at]
    _events(before, sandbox)
    body = json.dumps(
        {
            "plan": renewal.data["plan"],
            "amount_minor": renewal.data["amount_minor"] * 12 * 85 // 100,
            "currency": renewal.data["currency"],
            "effective_at": renewal.at.isoformat(),
            "interval": "year",
            "interval_count": 1,
        }
    ).encode()
    assert sandbox.state.act_on_subscription(accepted, "change_plan", body).status == 200
    (event,) = [e for e in _events([renewal], sandbox) if e.data.subscription.id == accepted]
    sub = event.data.subscription
    assert (sub.interval, sub.amount_minor) == ("year", renewal.data["amount_minor"] * 12 * 85 // 100)
    assert sub.current_period_end == renewal.at + timedelta(days=365)
    # Without the switch, the same renewal stays monthly.
    (plain,) = _events([renewal])
    assert plain.data.subscription.interval == "month"


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    subscriptions=st.integers(10, 600),
    days=st.integers(1, 120),
    start=st.datetimes(datetime(2026, 1, 1), datetime(2030, 12, 31)).map(
        lambda d: d.replace(minute=0, second=0, microsecond=0, tzinfo=UTC)
    ),
)
def test_any_seed_size_window_and_start_gives_valid_events(
    seed: int, subscriptions: int, days: int, start: datetime
) -> None:
    actions = build_lifecycle(seed=seed, subscriptions=subscriptions, days=days, start=start).actions
    events = _events(actions)  # raises InvalidEvent naming the field on any refusal
    assert len(events) == sum(a.kind != "accept_offer" for a in actions)
    assert all(a.at >= start and (a.at - start) % STEP == timedelta(0) for a in actions)


def test_the_demo_policy_prices_the_upgrade_and_keeps_its_dunning_rules() -> None:
    import tomllib

    from dunning.devtools.demo_scenario import DEMO_POLICY
    from dunning.domain.policy import policy_from_dict

    policy = policy_from_dict(tomllib.loads(DEMO_POLICY))
    lifecycle = policy.lifecycle_for("starter")
    assert (lifecycle.monthly_price("pro", "USD"), lifecycle.monthly_price("starter", "EUR")) == (4900, 900)
    assert policy.version == "demo-1"
    assert policy.for_plan("pro").end_action == "downgrade"


# -- the price migration ---------------------------------------------------------------------------


def _prices(seed: int = 7, subscriptions: int = 300, days: int = 46, start: datetime = START) -> list[Action]:
    return build_prices(seed=seed, subscriptions=subscriptions, days=days, start=start).actions


def test_the_price_story_has_its_own_ids_and_stream_and_valid_events_on_the_grid() -> None:
    scenario = build_scenario(seed=7, subscriptions=300, days=46, start=START).actions
    lifecycle, prices = _story(), _prices()
    ids = {a.data["id"] for a in prices if a.kind in ("customer", "subscription")}
    assert all(i.startswith(("cus_P", "sub_P")) for i in ids) and len(ids) == 2 * 15
    others = {a.data.get("id") for a in scenario + lifecycle if a.kind in ("customer", "subscription")}
    assert not ids & others
    events = _events(prices)  # raises InvalidEvent naming the field on any refusal
    assert len(events) == sum(a.kind not in BY_HAND or a.kind == "customer" for a in prices)
    assert all(a.at >= START and (a.at - START) % STEP == timedelta(0) for a in prices)
    assert [a.at for a in prices] == sorted(a.at for a in prices)
    assert _fingerprint(_prices()) == _fingerprint(prices) != _fingerprint(_prices(seed=8))
    # The other stories are those the README's figures come from, price story or not.
    assert _fingerprint(_story()) == _fingerprint(lifecycle)


def test_the_price_group_scales_and_has_every_answer_to_the_notice() -> None:
    assert (price_group_size(300), price_group_size(10), price_group_size(1000)) == (15, 4, 50)
    big = build_prices(seed=7, subscriptions=300, days=46, start=START)
    assert Counter(big.roles.values()) == {"none": 11, "step_up": 2, "downgrade": 1, "cancel": 1}
    small = build_prices(seed=7, subscriptions=10, days=46, start=START)
    assert Counter(small.roles.values()) == {"none": 1, "step_up": 1, "downgrade": 1, "cancel": 1}
    [launch] = [a for a in big.actions if a.kind == "price_launch"]
    assert launch.at == START and launch.data == migration_options(START)
    choices = {a.data["subscription_id"]: a.data["offer"] for a in big.actions if a.kind == "price_choice"}
    assert choices == {sid: role for sid, role in big.roles.items() if role in ("step_up", "downgrade")}
    [cancel] = [a for a in big.actions if a.kind == "cancel"]
    assert big.roles[cancel.data["subscription_id"]] == "cancel"
    # Every customer and subscription is known from the first step, when the operator plans.
    assert {a.at for a in big.actions if a.kind in ("customer", "subscription")} == {START}


def test_the_migration_is_what_dunning_prices_plan_accepts() -> None:
    options = migration_options(START)
    terms = terms_module.from_options(options, now=START)
    assert (terms.plan, terms.currency, terms.interval) == ("legacy", "EUR", "month")
    assert terms.new_amount_minor == NEW_MINOR == CURRENT_MINOR * 120 // 100  # +20 %, below the guardrail
    assert terms.guardrail_percent == 50 and terms.grandfather_months == 0
    assert terms.notice_days == 14 and terms.short_notice  # below the policy's 30: given explicitly
    assert terms.effective_at == datetime(2026, 12, 7, tzinfo=UTC)
    assert [o["kind"] for o in terms.offers] == ["step_up", "downgrade"]
    line = command_line(options)
    assert line.startswith("dunning prices plan --plan legacy --currency EUR --new-amount 2400 ")
    assert "--notice-days 14" in line and line.count("--offer ") == 2 and '--reason "' in line


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    subscriptions=st.integers(10, 600),
    start=st.datetimes(datetime(2026, 1, 1), datetime(2030, 12, 31)).map(
        lambda d: d.replace(minute=0, second=0, microsecond=0, tzinfo=UTC)
    ),
)
def test_within_46_days_every_price_applies_and_the_answers_come_in_time(
    seed: int, subscriptions: int, start: datetime
) -> None:
    story = build_prices(seed=seed, subscriptions=subscriptions, days=46, start=start)
    terms = terms_module.from_options(migration_options(start), now=start)
    end = start + timedelta(days=46)
    # Quiet hours may hold a notice back for up to a day: the latest the notice rule can count from.
    late_notice = start + timedelta(days=1)
    subs = {a.data["id"]: a.data for a in story.actions if a.kind == "subscription"}
    for sid, role in story.roles.items():
        first = datetime.fromisoformat(subs[sid]["current_period_end"])
        applies = [
            apply_at(first, "month", 1, terms.effective_at, 0, notice, 14) for notice in (start, late_notice)
        ]
        renewals = [a.at for a in story.actions if a.kind == "renewal" and a.data["id"] == sid]
        if role == "cancel":
            [cancel] = [a.at for a in story.actions if a.kind == "cancel"]
            # After the 14 days the auto-pause watches, before the price's call is recorded.
            assert late_notice + timedelta(days=14) < cancel < min(applies) - APPLY_LEAD
            assert renewals == [r for r in renewals if r < cancel]
            continue
        assert max(applies) - APPLY_LEAD < end  # the change_plan is made inside the story
        assert min(applies) - REMINDER_BEFORE > late_notice  # and a reminder goes before it
        assert renewals == [add_months(first, k) for k in range(len(renewals))] and renewals[0] == first
        choice = [
            a.at for a in story.actions if a.kind == "price_choice" and a.data["subscription_id"] == sid
        ]
        if role == "none":
            assert choice == []
        else:
            [at] = choice
            assert start + timedelta(days=1) <= at < min(applies) - APPLY_LEAD


def test_a_renewal_after_a_price_change_reports_the_new_plan_and_price() -> None:
    story = build_prices(seed=7, subscriptions=300, days=46, start=START)
    sid = next(sid for sid, role in story.roles.items() if role == "downgrade")
    first, second = [a for a in story.actions if a.kind == "renewal" and a.data["id"] == sid][:2]
    sandbox = SandboxServer(secret="test")
    _events([a for a in story.actions if a.at <= START], sandbox)
    body = {"plan": "starter", "amount_minor": 900, "currency": "EUR", "effective_at": second.at.isoformat()}
    assert sandbox.state.act_on_subscription(sid, "change_plan", json.dumps(body).encode()).status == 200
    # Before the renewal the change is effective at, the billing system still bills the old price.
    assert renewed(sandbox, first.at, first.data) == first.data
    sub = renewed(sandbox, second.at, second.data)
    assert (sub["plan"], sub["amount_minor"], sub["interval"]) == ("starter", 900, "month")
    assert sub["current_period_end"] == second.data["current_period_end"]


def test_the_price_block_of_the_summary() -> None:
    from io import StringIO

    from rich.console import Console

    from dunning.devtools.demo_prices_run import PriceSummary, print_prices

    summary = PriceSummary(
        id="pm_20261206_abc123",
        terms={
            "status": "launched",
            "plan": "legacy",
            "currency": "EUR",
            "interval": "month",
            "new_amount_minor": 2400,
            "notice_days": 14,
            "offers": [{"kind": "step_up", "percent": 10, "months": 3}, {"kind": "downgrade"}],
        },
        members=15,
        counts={"pending": 0, "notified": 1, "reminded": 1, "deferred": 0, "applied": 11, "skipped": 2},
        choices={"step_up": 2, "annual_lock": 0, "downgrade": 1, "none": 0},
        skipped=Counter({"canceled": 1, "plan changed": 1}),
        emails=Counter({"price_change_notice": 15, "price_change_reminder": 14, "price_choice_confirmed": 3}),
        changes=11,
        keys=11,
        replays=1,
        double_changes=0,
    )
    out = StringIO()
    print_prices(Console(file=out, width=300), summary, CURRENT_MINOR)
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "price migration pm_20261206_abc123 (launched): legacy EUR monthly €20.00 -> €24.00, 14 days' notice"
    )
    assert lines[1] == (
        "  15 members: 15 notified, 14 reminded, 11 applied, 2 skipped (1 canceled, 1 plan changed), 2 still to apply"
    )
    # Only the offers this migration makes (no annual_lock), and "none" (keep the plan at the new price).
    assert lines[2] == "  choices: step_up 2, downgrade 1, none 0 (3 confirmation emails)*"
    assert lines[3] == "  billing sandbox: 11 change_plan calls for it (11 keys, 1 replay), 0 double changes"
