"""Property tests: drive one case through random event sequences the way the shell does.

The simulator below is a pure, in-memory model of the workflow's shell (handlers, jobs, cases): it keeps the
case facts and the pending jobs (``Decision.jobs``, deduplicated on their key like
the job table's unique index, cleared by ``cancel_pending_jobs``; a new scheduled
retry replaces the one pending), advances the clock to the next due job (sometimes
late, as after an outage) or injects an event,
and turns every ``charge=True`` into a charge whose random outcome is fed straight
back through ``on_charge_result``. Invariants are checked as it goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dunning.domain.policy import DEFAULT_POLICY, PlanPolicy, policy_from_dict
from dunning.workflows.failed_payments.declines import DeclineClass, classify_decline
from dunning.workflows.failed_payments.policy import (
    TERMINAL,
    BillingAction,
    CaseFacts,
    CaseStatus,
    Decision,
    Job,
    JobKind,
    next_retry_at,
    on_charge_result,
    on_end_due,
    on_notice_due,
    on_payment_method_updated,
    on_repeat_failure,
    on_retry_due,
    on_subscription_canceled,
    on_suspend_due,
    open_case,
    recover,
)

KEY = "7"
T0 = datetime(2026, 3, 28, 18, 45, tzinfo=UTC)

SOFT = ("insufficient_funds", "processing_error", "generic_decline", "try_again_later")
UNRETRYABLE = ("stolen_card", "lost_card", "do_not_try_again", "expired_card", "authentication_required")
CODES = SOFT + UNRETRYABLE
#: Charge outcomes: None is success; soft codes are weighted up so cases live long enough to explore.
OUTCOMES = (None, *SOFT, *SOFT, *SOFT, *SOFT, *UNRETRYABLE)
OPENING_CODES = (*SOFT, *SOFT, *SOFT, *UNRETRYABLE)

_ALT = policy_from_dict(
    {
        "defaults": {
            "retry_days": [0.5, 1, 2, 3],
            "grace_days": 5,
            "reminder_days": [1, 2],
            "final_notice_days_before": 1,
            "end_after_days": 2,
            "min_retry_gap_hours": 30,
            "card_update_retries": 1,
        },
        "plans": {
            "pro": {"end_action": "downgrade", "downgrade_plan": "free"},
            "strict": {"card_update_retries": 0, "min_retry_gap_hours": 0},
            # No gap to absorb a duplicate plan: only "one scheduled retry pending" protects (e).
            "nogap": {"card_update_retries": 2, "min_retry_gap_hours": 0},
        },
    }
)
#: The default schedule with no immediate retries on card updates.
NO_BUDGET = policy_from_dict({"defaults": {"card_update_retries": 0}}).default
POLICIES = (
    DEFAULT_POLICY.default,
    NO_BUDGET,
    _ALT.default,
    _ALT.for_plan("pro"),
    _ALT.for_plan("strict"),
    _ALT.for_plan("nogap"),
)

HOURS = st.integers(0, 60).map(lambda h: timedelta(hours=h))
LONG = st.integers(2, 12).map(lambda d: timedelta(days=d))
DELAYS = st.one_of(HOURS, HOURS, LONG)
LATENESS = st.sampled_from((timedelta(0),) * 6 + (timedelta(hours=3), timedelta(days=2), timedelta(days=10)))
ACTIONS = ("advance",) * 8 + ("card",) * 3 + ("fail",) * 2 + ("paid", "canceled")
#: For (h): no early exits, more card changes, so unusable-card episodes happen often.
LIVENESS_ACTIONS = ("advance",) * 4 + ("card",) * 4 + ("fail",) * 2

MAX_JOB_RUNS = 400


def _scheduled_retry(job: Job) -> bool:
    return job.kind is JobKind.RETRY and not job.manual


@dataclass
class Sim:
    data: st.DataObject
    policy: PlanPolicy
    now: datetime
    facts: CaseFacts
    redelivery: bool = False
    check_planned: bool = False
    actions: tuple[str, ...] = ACTIONS
    delays: st.SearchStrategy[timedelta] = DELAYS
    pending: dict[str, Job] = field(default_factory=dict)
    seen_keys: set[str] = field(default_factory=set)
    card_bad: bool = False  # an unretryable decline not yet followed by a card update
    terminal_since: datetime | None = None
    scheduled_charges: list[datetime] = field(default_factory=list)
    manual_charges: list[datetime] = field(default_factory=list)
    last_charge: datetime | None = None
    billing: list[tuple[datetime, BillingAction]] = field(default_factory=list)
    job_runs: int = 0

    # -- the shell ---------------------------------------------------------

    @classmethod
    def open(cls, data: st.DataObject, policy: PlanPolicy, code: str, has_pm: bool, redelivery: bool) -> Sim:
        decision = open_case(policy, T0, case_key=KEY, decline_code=code, has_payment_method=has_pm)
        sim = cls(data=data, policy=policy, now=T0, facts=decision.facts, redelivery=redelivery)
        sim.card_bad = classify_decline(code) is not DeclineClass.SOFT
        sim.apply(decision)
        return sim

    def apply(self, decision: Decision) -> None:
        before = self.facts
        after = decision.facts
        # (g) once terminal, the status never changes (and nothing more is done to the subscription).
        if before.terminal:
            assert after.status is before.status, f"(g) {before.status} became {after.status}"
            assert decision.billing == (), f"(g) billing {decision.billing} after {before.status}"
            assert decision.charge is False, f"(a) charge requested after {before.status}"
        assert after.opened_at == before.opened_at
        for action in decision.billing:
            if action is BillingAction.SUSPEND:
                # (c) never before the end of grace.
                grace_end = after.opened_at + self.policy.grace
                assert self.now >= grace_end, f"(c) suspended at {self.now}, grace ends {grace_end}"
            self.billing.append((self.now, action))
        # (d) at most one suspension and one end per case.
        actions = [a for _, a in self.billing]
        assert actions.count(BillingAction.SUSPEND) <= 1, f"(d) {actions}"
        ends = actions.count(BillingAction.CANCEL) + actions.count(BillingAction.DOWNGRADE)
        assert ends <= 1, f"(d) {actions}"
        if decision.cancel_pending_jobs:
            self.pending.clear()
        planned = {j.key for j in decision.jobs if _scheduled_retry(j)}
        if planned:  # at most one scheduled retry pending: a new plan replaces the old one
            for key in [k for k, j in self.pending.items() if _scheduled_retry(j) and k not in planned]:
                del self.pending[key]
        for job in decision.jobs:
            if job.key not in self.seen_keys:  # the job table's unique key
                self.seen_keys.add(job.key)
                self.pending[job.key] = job
        self.facts = after
        if after.terminal and self.terminal_since is None:
            self.terminal_since = self.now

    def charge(self, *, manual: bool) -> None:
        facts = self.facts
        # (a) no charge once the case has reached a terminal status.
        assert self.terminal_since is None, (
            f"(a) charge at {self.now} after terminal at {self.terminal_since}"
        )
        assert facts.status not in TERMINAL
        assert facts.has_payment_method, "charge without a payment method"
        # (b) a card known bad is never charged until the customer updates it.
        assert not self.card_bad, f"(b) charged a card declined {facts.decline_code} without an update"
        if manual:
            self.manual_charges.append(self.now)
        else:
            assert not facts.needs_new_payment_method, "(b) scheduled charge while a new card is needed"
            assert facts.status is CaseStatus.OPEN, f"scheduled charge while {facts.status}"
            assert self.now < facts.opened_at + self.policy.grace, "scheduled charge after end of grace"
            # (f) consecutive scheduled charges keep the minimum gap ...
            if self.scheduled_charges:
                gap = self.now - self.scheduled_charges[-1]
                assert gap >= self.policy.min_retry_gap, f"(f) scheduled charges {gap} apart"
            # ... and so does a scheduled charge after a card-update charge (only those may be closer).
            if self.last_charge is not None:
                gap = self.now - self.last_charge
                assert gap >= self.policy.min_retry_gap, f"(f) scheduled charge {gap} after the last charge"
            self.scheduled_charges.append(self.now)
            # (e) never more scheduled charges than retry days.
            assert len(self.scheduled_charges) <= len(self.policy.retry_days), (
                f"(e) {len(self.scheduled_charges)} scheduled charges: {self.scheduled_charges}"
            )
        self.last_charge = self.now
        outcome = self.data.draw(st.sampled_from(OUTCOMES), label="charge outcome")
        self.facts = replace(facts, attempts_made=facts.attempts_made + 1)
        decision = on_charge_result(
            self.facts,
            self.policy,
            self.now,
            case_key=KEY,
            succeeded=outcome is None,
            decline_code=outcome,
            manual=manual,
        )
        if outcome is not None and classify_decline(outcome) is not DeclineClass.SOFT:
            self.card_bad = True
        self.apply(decision)

    def run(self, job: Job) -> None:
        del self.pending[job.key]
        self.execute(job)
        if self.redelivery and self.data.draw(st.integers(0, 9), label="redelivered") == 0:
            # At-least-once delivery: the same job runs again (the runner's guard should stop
            # this; the policy must not make it worse: no second charge, suspension or end).
            self.execute(job)

    def execute(self, job: Job) -> None:
        self.job_runs += 1
        assert self.job_runs < MAX_JOB_RUNS, "jobs keep rescheduling themselves"
        self.now = max(self.now, job.due_at)
        facts, policy, now = self.facts, self.policy, self.now
        if job.kind is JobKind.RETRY:
            manual = job.manual
            decision = on_retry_due(facts, policy, now, case_key=KEY, manual=manual)
            self.apply(decision)
            if decision.charge:
                self.charge(manual=manual)
        elif job.kind is JobKind.NOTICE:
            self.apply(on_notice_due(facts, policy, now, step=job.key.rsplit(":", 1)[-1]))
        elif job.kind is JobKind.SUSPEND:
            self.apply(on_suspend_due(facts, policy, now, case_key=KEY))
        elif job.kind is JobKind.END:
            self.apply(on_end_due(facts, policy, now))
        else:  # pragma: no cover - a new job kind needs a branch here
            raise AssertionError(job.kind)

    def next_job(self) -> Job | None:
        if not self.pending:
            return None
        return min(self.pending.values(), key=lambda j: j.due_at)

    def run_due(self, until: datetime) -> None:
        """Run every job due up to ``until``, in due order, each at its due time (or now, if later)."""
        while (job := self.next_job()) is not None and job.due_at <= until:
            self.run(job)
        self.now = max(self.now, until)

    # -- one random step ---------------------------------------------------

    def step(self) -> None:
        action = self.data.draw(st.sampled_from(self.actions), label="action")
        if action == "advance":
            job = self.next_job()
            if job is None:
                return
            late = self.data.draw(LATENESS, label="lateness")
            # The scheduler was down: at restart it runs everything due, in due order, late.
            self.now = max(self.now, job.due_at + late)
            self.run_due(self.now)
            return
        self.run_due(self.now + self.data.draw(self.delays, label="delay"))
        facts, policy, now = self.facts, self.policy, self.now
        if action == "paid":
            self.apply(recover(facts, now, reason="invoice.paid"))
        elif action == "canceled":
            self.apply(on_subscription_canceled(facts, now, reason="elsewhere"))
        elif action == "card":
            present = self.data.draw(st.booleans(), label="present")
            if present:
                self.card_bad = False
            self.apply(on_payment_method_updated(facts, policy, now, case_key=KEY, present=present))
        elif action == "fail":
            code = self.data.draw(st.sampled_from(CODES), label="repeat failure code")
            if not facts.terminal and classify_decline(code) is not DeclineClass.SOFT:
                self.card_bad = True
            self.apply(on_repeat_failure(facts, policy, now, decline_code=code))
        # A card update's immediate retry is due now: the shell dispatches it at once.
        self.run_due(self.now)
        if self.check_planned:
            self.assert_retry_planned()

    def assert_retry_planned(self) -> None:
        """(h) while in grace with a usable card and retry days left, the next retry is pending."""
        want = next_retry_at(self.facts, self.policy)
        if self.facts.status is not CaseStatus.OPEN or want is None:
            return
        planned = sorted(j.due_at for j in self.pending.values() if _scheduled_retry(j))
        assert planned == [want], f"(h) policy wants a retry at {want}, pending: {planned}"


def simulate(
    data: st.DataObject,
    policy: PlanPolicy,
    *,
    redelivery: bool = False,
    check_planned: bool = False,
    actions: tuple[str, ...] = ACTIONS,
    delays: st.SearchStrategy[timedelta] = DELAYS,
) -> Sim:
    code = data.draw(st.sampled_from(OPENING_CODES), label="opening decline")
    has_pm = data.draw(st.sampled_from((True, True, True, False)), label="has payment method")
    sim = Sim.open(data, policy, code, has_pm, redelivery)
    sim.check_planned = check_planned
    sim.actions = actions
    sim.delays = delays
    for _ in range(data.draw(st.integers(0, 30), label="steps")):
        sim.step()
    # Let the case run to its end: every pending job, in order.
    while (job := sim.next_job()) is not None:
        sim.run(job)
    return sim


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_terminal_is_final(sim: Sim) -> None:
    """(g), by brute force: from the final state every handler leaves the case alone."""
    final = sim.facts
    assert final.terminal, f"case left {final.status}"
    p, now = sim.policy, sim.now + timedelta(days=1)
    decisions = [
        recover(final, now, reason="late"),
        on_subscription_canceled(final, now, reason=None),
        on_payment_method_updated(final, p, now, case_key=KEY, present=True),
        on_repeat_failure(final, p, now, decline_code="stolen_card"),
        on_retry_due(final, p, now, case_key=KEY, manual=True),
        on_retry_due(final, p, now, case_key=KEY, manual=False),
        on_suspend_due(final, p, now, case_key=KEY),
        on_end_due(final, p, now),
        on_notice_due(final, p, now, step="final"),
    ]
    for d in decisions:
        assert d.facts.status is final.status, f"(g) {final.status} became {d.facts.status}"
        assert d.billing == ()
        assert d.jobs == ()
        assert d.notices == ()
        assert d.charge is False


@PROPERTY_SETTINGS
@given(data=st.data())
def test_default_policy_invariants(data: st.DataObject) -> None:
    sim = simulate(data, DEFAULT_POLICY.default)
    # Every case ends: nothing is left pending, grace always ends in a suspension or earlier exit.
    assert not sim.pending
    assert_terminal_is_final(sim)


@PROPERTY_SETTINGS
@given(data=st.data(), policy=st.sampled_from(POLICIES), redelivery=st.booleans())
def test_other_policies_invariants(data: st.DataObject, policy: PlanPolicy, redelivery: bool) -> None:
    # With redelivery, jobs sometimes run twice (at-least-once delivery; the runner's runs < claims
    # guard should stop it, but the policy must not make it worse: no second charge, suspension or
    # end). Only where min_retry_gap > 0: with a zero gap nothing in the policy can tell a re-run
    # scheduled retry from a fresh one, so the runner's guard is the only protection there.
    sim = simulate(data, policy, redelivery=redelivery and policy.min_retry_gap > timedelta(0))
    assert not sim.pending
    assert_terminal_is_final(sim)
    if sim.facts.status is CaseStatus.DOWNGRADED:
        assert policy.end_action == "downgrade"
    if sim.facts.status is CaseStatus.CANCELED:
        assert policy.end_action == "cancel"


@settings(
    PROPERTY_SETTINGS,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a known failure: no time spent shrinking
    report_multiple_bugs=False,
)
@given(data=st.data(), policy=st.sampled_from((NO_BUDGET, _ALT.for_plan("strict"))))
def test_a_usable_card_always_has_a_retry_planned(data: st.DataObject, policy: PlanPolicy) -> None:
    simulate(data, policy, check_planned=True, actions=LIVENESS_ACTIONS, delays=HOURS)


@settings(max_examples=300, deadline=None)
@given(
    at=st.datetimes(
        max_value=datetime(9000, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-3))]
        ),
    ),
    key=st.sampled_from(["7", "123456"]),
)
def test_times_in_keys_and_timeline_read_as_strftime_would(at: datetime, key: str) -> None:
    """Retry keys and timeline lines spell times without strftime (it is slow); they must not change."""
    d = open_case(
        DEFAULT_POLICY.for_plan(None),
        at,
        case_key=key,
        decline_code="insufficient_funds",
        has_payment_method=True,
    )
    cut = at + DEFAULT_POLICY.for_plan(None).grace
    assert d.timeline[0].endswith(f"access kept until {cut:%Y-%m-%d %H:%M}Z")
    (retry,) = (j for j in d.jobs if j.kind is JobKind.RETRY)
    assert retry.key == f"retry:{key}:s0:a0:{retry.due_at:%Y%m%dT%H%M%S}"
