"""Properties of the lifecycle planner over random subscriptions, policies, fact changes and clocks.

- No notice is due after the event it announces; a notice not yet sent is never due before ``now``.
- Keys are unique within one plan, depend on the facts only (never on ``now``), and a moved date
  makes new keys.
- No hidden state: a model engine that reconciles on every fact change and runs each job when it is
  due (re-planning first, as the workers do) always holds exactly the planner's answer for the final
  facts, and every job that comes due without a fact change in between is still wanted.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from dunning.domain.lifecycle_policy import DEFAULT_LIFECYCLE, LifecyclePolicy
from dunning.domain.policy import policy_from_dict
from dunning.workflows.lifecycle.facts import Card, SubscriptionFacts, Upgrade
from dunning.workflows.lifecycle.planned import add_months, day
from dunning.workflows.lifecycle.planner import PlannedNotice, plan_notices

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = ["trialing", "active", "past_due", "unpaid", "canceled", "incomplete", "paused"]
INTERVALS = ["day", "week", "month", "year"]
# Kinds sent some days before a time they announce (the others announce their own due time).
SERIES = {"renewal_notice", "card_expiring", "trial_reminder", "upgrade_ending"}

PROPERTIES = settings(max_examples=200, deadline=None)


def moment(lo_days: int = -400, hi_days: int = 800) -> st.SearchStrategy[datetime]:
    return st.integers(lo_days * 1440, hi_days * 1440).map(lambda m: T0 + timedelta(minutes=m))


cards = st.none() | st.builds(
    Card,
    brand=st.sampled_from(["visa", None]),
    last4=st.sampled_from(["4242", None]),
    exp_month=st.integers(1, 12),
    exp_year=st.integers(2025, 2029),
)


def _upgrade(ends_at: datetime, taste_minutes: int) -> Upgrade:
    return Upgrade(
        plan="pro", ends_at=ends_at, revert_to="basic", seen_at=ends_at - timedelta(minutes=taste_minutes)
    )


upgrades = st.none() | st.builds(_upgrade, moment(), st.integers(0, 30 * 1440))

# Biased towards the facts that make notices (active or trialing, monthly or yearly, no flags), so most
# examples plan something; every other value still comes up.
statuses = st.sampled_from(["active", "active", "active", "trialing", "trialing", *STATUSES])
intervals = st.sampled_from(["month", "month", "year", "year", *INTERVALS])
mostly_false = st.sampled_from([False, False, False, True])

subscriptions = st.builds(
    SubscriptionFacts,
    id=st.sampled_from(["sub_1", "sub:2"]),
    customer_id=st.just("cus_1"),
    plan=st.sampled_from(["basic", "pro"]),
    status=statuses,
    amount_minor=st.integers(0, 10**6),
    currency=st.sampled_from(["EUR", "USD"]),
    interval=intervals,
    interval_count=st.sampled_from([1, 1, 1, 2, 3]),
    current_period_end=moment(),
    trial_end=st.none() | moment(),
    cancel_at_period_end=mostly_false,
    started_at=st.none() | moment(),
    first_seen_at=moment(),
    upgrade=upgrades,
    card=cards,
    open_case=mostly_false,
    last_annual_offer_at=st.none() | moment(),
    sent_keys=st.just(frozenset()),
)

offsets = st.lists(st.integers(1, 90), unique=True, max_size=4)
policy_documents = st.fixed_dictionaries(
    {
        "renewals": st.fixed_dictionaries(
            {
                "offsets_days": offsets,
                "intervals": st.lists(st.sampled_from(INTERVALS), unique=True, min_size=1),
            }
        ),
        "card_expiry": st.fixed_dictionaries({"offsets_days": offsets}),
        "annual_offer": st.fixed_dictionaries(
            {
                "enabled": st.sampled_from([True, True, False]),
                "tenure_months": st.integers(0, 12),
                "every_days": st.integers(1, 365),
            },
            optional={"discount_percent": st.integers(1, 50)},
        ),
        "trials": st.fixed_dictionaries({"offsets_days": offsets, "outcome_delay_hours": st.integers(0, 48)}),
        "temporary_upgrades": st.fixed_dictionaries(
            {"offsets_days": offsets, "long_taste_days": st.integers(1, 20)}
        ),
        "prices": st.just({"pro": {"EUR": 4900}, "basic": {"EUR": 1900}}),
    }
)
policies = st.just(DEFAULT_LIFECYCLE) | policy_documents.map(lambda d: policy_from_dict(d).lifecycle)


@st.composite
def with_history(draw: st.DrawFn) -> tuple[SubscriptionFacts, LifecyclePolicy, datetime]:
    """A subscription, a policy, a clock, and some of the notices an earlier plan wanted marked sent."""
    sub = draw(subscriptions)
    policy = draw(policies)
    now = draw(moment())
    earlier = now - timedelta(minutes=draw(st.integers(0, 200 * 1440)))
    candidates = sorted(n.key for n in plan_notices(sub, policy, earlier))
    sent = draw(st.lists(st.sampled_from(candidates), unique=True) if candidates else st.just([]))
    return replace(sub, sent_keys=frozenset(sent)), policy, now


def _announced_day(n: PlannedNotice) -> str:
    return day(n.announced_at)


@PROPERTIES
@given(with_history())
def test_no_notice_is_due_after_what_it_announces(
    case: tuple[SubscriptionFacts, LifecyclePolicy, datetime],
) -> None:
    sub, policy, now = case
    for n in plan_notices(sub, policy, now):
        assert n.due_at <= n.announced_at, n
        if n.key not in sub.sent_keys:
            assert n.due_at >= now, n  # never a notice due in the past that was not sent
            if n.kind in SERIES:
                assert n.due_at < n.announced_at, n  # announced ahead of time, not at the moment itself
        assert n.reason and "\n" not in n.reason
        assert n.subscription_id == sub.id and n.customer_id == sub.customer_id
        assert all(v is None or isinstance(v, str | int) for v in n.facts.values())


@PROPERTIES
@given(with_history())
def test_keys_are_unique_and_name_the_announced_fact(
    case: tuple[SubscriptionFacts, LifecyclePolicy, datetime],
) -> None:
    sub, policy, now = case
    planned = plan_notices(sub, policy, now)
    assert len({n.key for n in planned}) == len(planned)
    for n in planned:
        assert len(n.key) <= 200
        assert n.key.startswith(f"{n.kind}:{sub.id}:")
        if n.kind in SERIES and n.kind != "card_expiring":
            assert f":{_announced_day(n)}:" in n.key
        if n.kind == "card_expiring":
            assert sub.card is not None
            assert f":{sub.card.exp_year:04d}-{sub.card.exp_month:02d}:" in n.key


@PROPERTIES
@given(with_history(), moment())
def test_keys_do_not_depend_on_the_clock(
    case: tuple[SubscriptionFacts, LifecyclePolicy, datetime], other: datetime
) -> None:
    sub, policy, now = case
    first = plan_notices(sub, policy, now)
    assert first == plan_notices(sub, policy, now)  # deterministic
    later = {n.key: n for n in plan_notices(sub, policy, other)}
    for n in first:
        if n.key in later:
            m = later[n.key]
            assert (m.kind, m.facts) == (n.kind, n.facts)
            if n.kind in SERIES:
                assert (m.announced_at, m.variant) == (n.announced_at, n.variant)


SERIES_OFFSETS = {
    "renewal_notice": lambda p: p.renewals.offsets_days,
    "card_expiring": lambda p: p.card_expiry.offsets_days,
    "trial_reminder": lambda p: p.trials.offsets_days,
    "upgrade_ending": lambda p: p.upgrades.offsets_days,
}


@PROPERTIES
@given(with_history(), st.lists(moment(), min_size=1, max_size=6))
def test_one_key_per_announced_fact_whatever_the_clock(
    case: tuple[SubscriptionFacts, LifecyclePolicy, datetime], clocks: list[datetime]
) -> None:
    sub, policy, now = case
    by_kind: dict[str, set[str]] = {}
    for clock in [now, *clocks]:
        for n in plan_notices(sub, policy, clock):
            by_kind.setdefault(n.kind, set()).add(n.key)
    for kind, found in by_kind.items():
        if kind in SERIES:
            prefixes = {k.rsplit(":", 1)[0] for k in found}
            assert len(prefixes) == 1, found  # one announced fact, whatever the clock
            assert {int(k.rsplit(":", 1)[1].removesuffix("d")) for k in found} <= set(
                SERIES_OFFSETS[kind](policy)
            )
        else:
            assert len(found) == 1, found


FAR_PAST = T0 - timedelta(days=2000)  # every offset of every fact still ahead


def _keys(sub: SubscriptionFacts, policy: LifecyclePolicy, kinds: set[str]) -> set[str]:
    return {n.key for n in plan_notices(sub, policy, FAR_PAST) if n.kind in kinds}


@PROPERTIES
@given(subscriptions, policies, st.integers(1, 400).flatmap(lambda d: st.sampled_from([d, -d])))
def test_a_moved_date_makes_new_keys(
    sub: SubscriptionFacts, policy: LifecyclePolicy, shift_days: int
) -> None:
    sub = replace(sub, first_seen_at=FAR_PAST, started_at=None, last_annual_offer_at=None)
    shift = timedelta(days=shift_days)
    renewal = {"renewal_notice"}
    assert _keys(sub, policy, renewal).isdisjoint(
        _keys(replace(sub, current_period_end=sub.current_period_end + shift), policy, renewal)
    )
    if sub.trial_end is not None:
        trial = {"trial_reminder", "trial_ended"}
        assert _keys(sub, policy, trial).isdisjoint(
            _keys(replace(sub, trial_end=sub.trial_end + shift), policy, trial)
        )
    if sub.upgrade is not None:
        taste = {"upgrade_ending", "upgrade_reverted"}
        moved = replace(sub.upgrade, ends_at=sub.upgrade.ends_at + shift, seen_at=sub.upgrade.seen_at + shift)
        assert _keys(sub, policy, taste).isdisjoint(_keys(replace(sub, upgrade=moved), policy, taste))
    if sub.card is not None and sub.card.exp_month is not None and sub.card.exp_year is not None:
        expiry = add_months(
            datetime(sub.card.exp_year, sub.card.exp_month, 1, tzinfo=UTC), shift_days % 24 + 1
        )
        card = replace(sub.card, exp_month=expiry.month, exp_year=expiry.year)
        cards_kind = {"card_expiring"}
        assert _keys(sub, policy, cards_kind).isdisjoint(_keys(replace(sub, card=card), policy, cards_kind))
    started = replace(sub, started_at=T0)
    offer = {"annual_offer"}
    assert _keys(started, policy, offer).isdisjoint(
        _keys(replace(started, started_at=T0 + shift), policy, offer)
    )


# ---------------------------------------------------------------------------
# A model engine: reconcile on every fact change, re-plan when a job is due
# ---------------------------------------------------------------------------


class ModelEngine:
    """What the workers do, in memory: pending jobs by key, an outbox, and the planner."""

    def __init__(self, facts: SubscriptionFacts, policy: LifecyclePolicy, clock: datetime) -> None:
        self.facts = facts
        self.policy = policy
        self.clock = clock
        self.pending: dict[str, datetime] = {}
        self.outbox: dict[str, datetime] = {}
        self.last_offer: datetime | None = None
        self.reconcile()

    def view(self) -> SubscriptionFacts:
        """The facts as the store gives them to the planner (sent keys and last offer from the outbox)."""
        return replace(self.facts, sent_keys=frozenset(self.outbox), last_annual_offer_at=self.last_offer)

    def wanted(self) -> dict[str, PlannedNotice]:
        return {n.key: n for n in plan_notices(self.view(), self.policy, self.clock)}

    def reconcile(self) -> None:
        """Insert missing jobs, move the due time of pending ones, cancel the unwanted; run what is due."""
        self.pending = {k: n.due_at for k, n in self.wanted().items() if k not in self.outbox}
        self.run_until(self.clock)

    def run_until(self, until: datetime) -> None:
        while self.pending:
            key, due = min(self.pending.items(), key=lambda item: (item[1], item[0]))
            if due > until:
                break
            self.clock = max(self.clock, due)
            notice = self.wanted().get(key)
            # No fact changed since the last reconcile: the job must still be wanted, and due.
            assert notice is not None, (key, self.clock)
            assert notice.due_at <= self.clock, (notice, self.clock)
            assert self.clock <= notice.announced_at, (notice, self.clock)
            self.outbox[key] = self.clock
            if notice.kind == "annual_offer":
                self.last_offer = self.clock
            self.reconcile()  # the outbox row is a new fact (sent keys, last offer)
        self.clock = max(self.clock, until)

    def change(self, facts: SubscriptionFacts) -> None:
        self.facts = facts
        self.reconcile()

    def check(self) -> None:
        """The jobs held equal the planner's answer from scratch, for the facts and clock as they are."""
        expected = {k: n.due_at for k, n in self.wanted().items() if k not in self.outbox}
        assert self.pending == expected


changes = st.one_of(
    st.tuples(st.just("period"), st.integers(-40, 400)),
    st.tuples(st.just("renew"), st.none()),
    st.tuples(st.just("status"), st.sampled_from(STATUSES)),
    st.tuples(st.just("cancel_at_period_end"), st.booleans()),
    st.tuples(st.just("card"), cards),
    st.tuples(st.just("open_case"), st.booleans()),
    st.tuples(st.just("upgrade"), st.none() | st.integers(0, 30 * 1440)),
    st.tuples(st.just("trial_end"), st.integers(-10, 30)),
)


def apply(facts: SubscriptionFacts, change: tuple[str, Any], clock: datetime) -> SubscriptionFacts:
    what, value = change
    if what == "period":
        return replace(facts, current_period_end=facts.current_period_end + timedelta(days=value))
    if what == "renew":
        step = {"day": 1, "week": 7, "month": 30, "year": 365}[facts.interval] * facts.interval_count
        return replace(facts, current_period_end=facts.current_period_end + timedelta(days=step))
    if what == "upgrade":
        if value is None:
            return replace(facts, upgrade=None)
        return replace(facts, upgrade=_upgrade(clock + timedelta(minutes=value), value))
    if what == "trial_end":
        base = facts.trial_end or clock
        return replace(facts, trial_end=base + timedelta(days=value))
    return replace(facts, **{what: value})


def minutes(lo_days: int, hi_days: int) -> st.SearchStrategy[timedelta]:
    return st.integers(lo_days * 1440, hi_days * 1440).map(lambda m: timedelta(minutes=m))


@st.composite
def new_subscriptions(draw: st.DrawFn) -> SubscriptionFacts:
    """A subscription as first seen: its dates ahead of (or, for started_at, before) that moment."""
    sub = draw(subscriptions)
    seen = sub.first_seen_at
    card = draw(cards)
    if card is not None:
        card = replace(card, exp_year=seen.year + draw(st.integers(0, 2)))
    taste = draw(st.none() | minutes(0, 30))
    sub = replace(
        sub,
        current_period_end=seen + draw(minutes(0, 400)),
        trial_end=draw(st.none() | minutes(0, 30).map(lambda d: seen + d)),
        started_at=draw(st.none() | minutes(0, 400).map(lambda d: seen - d)),
        card=card,
        upgrade=None if taste is None else _upgrade(seen + taste, int(taste.total_seconds() // 60)),
        last_annual_offer_at=None,
    )
    # Most examples start from a typical case of one kind; the fact changes then disturb it.
    paying = {"status": "active", "interval_count": 1, "cancel_at_period_end": False, "open_case": False}
    scenario = draw(st.sampled_from(["annual", "monthly", "trial", "upgrade", "expiring", "any"]))
    if scenario == "annual":
        sub = replace(sub, **paying, interval="year")
    elif scenario == "monthly":
        sub = replace(sub, **paying, interval="month", amount_minor=draw(st.integers(1, 10**5)))
    elif scenario == "trial":
        sub = replace(
            sub, status="trialing", cancel_at_period_end=False, trial_end=seen + draw(minutes(2, 30))
        )
    elif scenario == "upgrade":
        days = draw(st.integers(1, 20))
        sub = replace(sub, **paying, upgrade=_upgrade(seen + timedelta(days=days), days * 1440))
    elif scenario == "expiring":
        expiry = add_months(seen, draw(st.integers(0, 11)))
        card = Card(brand="visa", last4="4242", exp_month=expiry.month, exp_year=expiry.year)
        sub = replace(
            sub, **paying, interval="year", card=card, current_period_end=seen + timedelta(days=380)
        )
    return sub


@PROPERTIES
@given(
    new_subscriptions(),
    policies,
    st.lists(st.tuples(st.integers(0, 120 * 1440), changes), max_size=8),
    st.integers(60 * 1440, 400 * 1440),  # then time runs on, so most series get to send
)
def test_no_hidden_state_the_engine_holds_what_the_planner_says(
    sub: SubscriptionFacts,
    policy: LifecyclePolicy,
    steps: list[tuple[int, tuple[str, Any]]],
    tail_minutes: int,
) -> None:
    engine = ModelEngine(sub, policy, sub.first_seen_at)
    engine.check()
    for wait, change in steps:
        engine.run_until(engine.clock + timedelta(minutes=wait))
        engine.check()  # time passing alone never changes what is wanted beyond what was sent
        engine.change(apply(engine.facts, change, engine.clock))
        engine.check()
    engine.run_until(engine.clock + timedelta(minutes=tail_minutes))
    engine.check()
    # Every notice went out at or after its due time and never after what it announced (checked on
    # send); and the outbox never holds a key the planner would plan again as new.
    final = plan_notices(engine.view(), policy, engine.clock)
    assert all(n.key in engine.outbox or n.due_at >= engine.clock for n in final)
    for kind in sorted({key.split(":", 1)[0] for key in engine.outbox}):
        event(f"sent {kind}")  # shown with --hypothesis-show-statistics: the model engine does send
