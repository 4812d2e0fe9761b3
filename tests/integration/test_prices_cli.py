"""``dunning prices`` on SQLite and PostgreSQL: plan, preview (table, --json, --csv), launch with its
guardrail, status, list, pause, resume, cancel; the set-based SQL gives the answers of the pure maths;
every refusal is one line naming the field, exit 2, and writes nothing."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from typer.testing import CliRunner

import dunning.runtime as runtime_module
from dunning.cli import app
from dunning.runtime import build_runtime, set_runtime
from dunning.settings import load_settings
from dunning.store.db import make_engine, make_sessionmaker, transaction
from dunning.store.migrate import upgrade
from dunning.store.models import (
    Customer,
    Job,
    PriceMigration,
    PriceMigrationMember,
    Subscription,
    TimelineEntry,
)
from dunning.workflows.price_migrations.pricing import BP_CAP, above_guardrail, apply_at, increase

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
EFFECTIVE = datetime(2026, 12, 15, tzinfo=UTC)

Invoke = Callable[..., Any]


class PricesDb:
    """A database with the schema and a simulated clock at START, and the CLI pointed at it."""

    def __init__(self, url: str, invoke: Invoke) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self.invoke = invoke

    def ok(self, *args: str) -> Any:
        result = self.invoke(*args)
        assert result.exit_code == 0, result.output
        return result

    def refused(self, needle: str, *args: str) -> str:
        result = self.invoke(*args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: ") and needle in lines[0], lines
        return lines[0]

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def subscriptions(self, *rows: dict[str, Any]) -> None:
        defaults = {
            "plan": "pro",
            "status": "active",
            "amount_minor": 4900,
            "currency": "EUR",
            "interval": "month",
            "interval_count": 1,
            "current_period_end": START + timedelta(days=10),
            "cancel_at_period_end": False,
            "access": "active",
            "updated_at": START,
        }
        subs = [{**defaults, "customer_id": "cus_" + row["id"], **row} for row in rows]
        customers = [
            {"id": s["customer_id"], "email": f"{s['customer_id']}@example.com", "updated_at": START}
            for s in subs
        ]
        with transaction(self.sessions) as s:
            s.execute(insert(Customer), customers)
            s.execute(insert(Subscription), subs)

    def members(self, migration_id: str) -> dict[str, PriceMigrationMember]:
        with self.sessions() as s:
            rows = s.execute(
                select(PriceMigrationMember).where(PriceMigrationMember.migration_id == migration_id)
            )
            return {m.subscription_id: m for m in rows.scalars()}

    def jobs(self) -> list[Job]:
        with self.sessions() as s:
            return list(s.execute(select(Job).order_by(Job.key)).scalars())

    def subscription(self, sub: str) -> Subscription:
        with self.sessions() as s:
            found = s.get(Subscription, sub)
            assert found is not None
            return found

    def set_clock(self, when: datetime) -> None:
        rt = build_runtime(load_settings())
        try:
            rt.clock.set(when)  # type: ignore[attr-defined]
        finally:
            rt.close()


@pytest.fixture(name="db")
def prices_db(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PricesDb]:
    monkeypatch.setenv("DUNNING_DATABASE_URL", db_url)
    monkeypatch.setenv("DUNNING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DUNNING_CLOCK", "simulated")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("DUNNING_POLICY", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        set_runtime(None)  # each invocation builds its runtime from the environment, like a new process
        try:
            return runner.invoke(app, list(args))
        finally:
            if runtime_module._runtime is not None:
                runtime_module._runtime.close()
            set_runtime(None)

    w = PricesDb(db_url, invoke)
    upgrade(w.engine)
    w.set_clock(START)
    yield w
    w.engine.dispose()


def plan_args(*extra: str) -> list[str]:
    return [
        "prices",
        "plan",
        "--plan",
        "pro",
        "--currency",
        "EUR",
        "--new-amount",
        "5900",
        "--effective",
        EFFECTIVE.date().isoformat(),
        "--grandfather-months",
        "1",
        "--offer",
        "step-up:20:6",
        "--reason",
        "Our costs rose.",
        *extra,
    ]


def expected_applies(
    sub: Subscription, notice_at: datetime, *, grandfather: int = 1, days: int = 30
) -> datetime:
    return apply_at(
        sub.current_period_end, sub.interval, sub.interval_count, EFFECTIVE, grandfather, notice_at, days
    )


# -- the whole story ---------------------------------------------------------------------------


def test_plan_preview_launch_status_cancel(db: PricesDb) -> None:
    db.subscriptions(
        {"id": "a1", "current_period_end": START + timedelta(days=3)},
        {"id": "a2", "current_period_end": START + timedelta(days=12, hours=5)},
        {"id": "a3", "current_period_end": START + timedelta(days=20)},
        {"id": "a4", "current_period_end": datetime(2027, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)},
        {"id": "a5", "current_period_end": START + timedelta(days=29)},
        {"id": "b1", "amount_minor": 3900, "status": "past_due"},
        {"id": "b2", "amount_minor": 3900, "status": "trialing"},
        {"id": "c1", "amount_minor": 1900},
        # Left out: at the new price, canceled, ending, yearly, quarterly, other currency, other plan.
        {"id": "d1", "amount_minor": 5900},
        {"id": "e1", "status": "canceled"},
        {"id": "f1", "cancel_at_period_end": True},
        {"id": "g1", "interval": "year", "amount_minor": 49000},
        {"id": "h1", "interval_count": 3, "amount_minor": 14700},
        {"id": "i1", "currency": "USD"},
        {"id": "j1", "plan": "basic", "amount_minor": 1900},
    )
    planned = db.ok(*plan_args("--json"))
    assert json.loads(planned.stdout).keys() == {"id"}
    mid = json.loads(planned.stdout)["id"]
    members = {"a1", "a2", "a3", "a4", "a5", "b1", "b2", "c1"}
    assert set(db.members(mid)) == members

    # Preview of the draft: estimates for a launch now (START).
    found = db.json("prices", "preview", mid)
    assert (found["id"], found["status"], found["estimated"], found["subscribers"]) == (mid, "draft", True, 8)
    applies = {sub: expected_applies(db.subscription(sub), START) for sub in members}
    first = lambda subs: min(applies[s] for s in subs).isoformat().replace("+00:00", "Z")  # noqa: E731
    assert found["cohorts"] == [
        {
            "current_amount_minor": 1900,
            "interval": "month",
            "count": 1,
            "new_amount_minor": 5900,
            "increase_minor": 4000,
            "increase_bp": 21053,
            "increase_percent": 210.53,
            "first_notice_at": "2026-11-02T10:00:00Z",
            "first_applies_at": first({"c1"}),
        },
        {
            "current_amount_minor": 3900,
            "interval": "month",
            "count": 2,
            "new_amount_minor": 5900,
            "increase_minor": 2000,
            "increase_bp": 5128,
            "increase_percent": 51.28,
            "first_notice_at": "2026-11-02T10:00:00Z",
            "first_applies_at": first({"b1", "b2"}),
        },
        {
            "current_amount_minor": 4900,
            "interval": "month",
            "count": 5,
            "new_amount_minor": 5900,
            "increase_minor": 1000,
            "increase_bp": 2041,
            "increase_percent": 20.41,
            "first_notice_at": "2026-11-02T10:00:00Z",
            "first_applies_at": first({"a1", "a2", "a3", "a4", "a5"}),
        },
    ]
    assert (found["mrr_before_minor"], found["mrr_after_minor"]) == (1900 + 2 * 3900 + 5 * 4900, 8 * 5900)
    assert [(r["subscription_id"], r["increase_percent"]) for r in found["above_guardrail"]] == [
        ("c1", 210.53),
        ("b1", 51.28),
        ("b2", 51.28),
    ]
    # Nobody's price rises before effective + grandfathering, nor with less than 30 days' notice.
    assert all(
        a >= datetime(2027, 1, 15, tzinfo=UTC) and a >= START + timedelta(days=30) for a in applies.values()
    )
    assert applies["a4"] == datetime(2027, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)

    rows = list(csv.DictReader(io.StringIO(db.ok("prices", "preview", mid, "--csv").stdout)))
    assert [r["subscription_id"] for r in rows] == sorted(members)
    for row in rows:
        assert row["applies_at"] == applies[row["subscription_id"]].isoformat().replace("+00:00", "Z")
        assert row["state"] == "pending" and row["new_amount"] == "59.00"
    assert next(r for r in rows if r["subscription_id"] == "c1")["above_guardrail"] == "yes"

    table = db.ok("prices", "preview", mid).stdout
    assert (
        "Subscribers affected: 8" in table and "+210.53 %" in table and "Above the 50 % guardrail: 3" in table
    )

    # Launch: refused while anyone above the guardrail is neither excluded nor overridden; nothing written.
    db.refused("guardrail: 3 subscribers are above the 50 % guardrail", "prices", "launch", mid)
    db.refused("guardrail: 2 subscribers are above", "prices", "launch", mid, "--exclude", "c1")
    assert db.jobs() == []
    assert {m.state for m in db.members(mid).values()} == {"pending"}
    rival = json.loads(db.ok(*plan_args("--json")).stdout)["id"]  # two drafts may coexist
    db.set_clock(START + timedelta(days=1))
    launched = db.ok("prices", "launch", mid, "--exclude", "c1", "--exclude", "b1", "--exclude", "b2")
    assert "5 notices queued" in launched.stdout and "3 excluded" in launched.stdout
    notice_at = START + timedelta(days=1)
    jobs = db.jobs()
    assert [j.key for j in jobs] == [f"price:{mid}:{s}:notice" for s in ("a1", "a2", "a3", "a4", "a5")]
    for job in jobs:
        assert (job.kind, job.queue, job.status, job.due_at) == (
            "price_notice",
            "dunning",
            "pending",
            notice_at,
        )
        assert job.subject == job.key.split(":")[2] and job.payload == {"migration_id": mid}
    after = db.members(mid)
    for sub, m in after.items():
        if sub in {"c1", "b1", "b2"}:
            assert (m.state, m.reason, m.notice_at) == ("excluded", "excluded at launch", None)
        else:
            assert (m.state, m.notice_at) == ("pending", notice_at)
            assert m.applies_at == expected_applies(db.subscription(sub), notice_at)
    with db.sessions() as s:
        lines = s.execute(select(TimelineEntry.subscription_id, TimelineEntry.detail)).all()
    assert sorted(sub for sub, _ in lines) == ["b1", "b2", "c1"]
    assert all("excluded at launch" in detail for _, detail in lines)

    status = db.json("prices", "status", mid)
    assert status["status"] == "launched"
    assert status["counts"] == {
        "pending": 5,
        "notified": 0,
        "reminded": 0,
        "deferred": 0,
        "applied": 0,
        "skipped": 0,
        "excluded": 3,
    }
    assert status["choices"] == {"step_up": 0, "annual_lock": 0, "downgrade": 0, "none": 0}
    after_launch = db.json("prices", "preview", mid)
    assert (after_launch["estimated"], after_launch["subscribers"], after_launch["excluded_or_skipped"]) == (
        False,
        5,
        3,
    )
    assert after_launch["mrr_after_minor"] == 5 * 5900 + 1900 + 2 * 3900
    assert after_launch["above_guardrail"] == []
    db.refused(f"migration {mid} is launched: only a draft can be launched", "prices", "launch", mid)
    db.refused("already running for pro EUR monthly", *plan_args())
    db.refused(f"ID: migration {mid} is already running for pro EUR monthly", "prices", "launch", rival)

    assert "paused" in db.ok("prices", "pause", mid).stdout
    assert "already paused" in db.ok("prices", "pause", mid).stdout
    paused = db.json("prices", "status", mid)
    assert (paused["status"], paused["paused_reason"]) == ("paused", "paused by an operator")
    assert "resumed" in db.ok("prices", "resume", mid).stdout
    assert "not paused" in db.ok("prices", "resume", mid).stdout

    # The workers (simulated) applied a1's price and notified a2: cancel leaves a1, cancels the rest.
    with transaction(db.sessions) as s:
        for sub, state in (("a1", "applied"), ("a2", "notified")):
            s.execute(
                update(PriceMigrationMember)
                .where(PriceMigrationMember.subscription_id == sub)
                .values(state=state)
            )
        s.execute(update(Job).where(Job.subject.in_(["a1", "a2"])).values(status="done"))
    canceled = db.ok("prices", "cancel", mid).stdout
    assert "1 price already applied stays applied; only what was not applied is canceled" in canceled
    assert "4 subscribers keep their current price (3 pending jobs canceled)" in canceled
    assert "1 of them had been told of the new price" in canceled
    states = {sub: m.state for sub, m in db.members(mid).items()}
    assert states == {"a1": "applied", "a2": "skipped", "a3": "skipped", "a4": "skipped", "a5": "skipped"} | {
        s: "excluded" for s in ("b1", "b2", "c1")
    }
    assert {j.subject: j.status for j in db.jobs()} == {"a1": "done", "a2": "done"} | {
        s: "canceled" for s in ("a3", "a4", "a5")
    }
    with db.sessions() as s:
        told = s.execute(
            select(TimelineEntry.subscription_id, TimelineEntry.detail).where(
                TimelineEntry.subscription_id == "a2"
            )
        ).all()
    assert told == [("a2", f"price migration {mid} canceled: the price stays")]
    db.refused(f"migration {mid} is canceled: it cannot be resumed", "prices", "resume", mid)
    assert "already canceled" in db.ok("prices", "cancel", mid).stdout
    listed = db.json("prices", "list")
    assert sorted((m["id"], m["status"], m["subscribers"]) for m in listed) == sorted(
        [(mid, "canceled", 8), (rival, "draft", 8)]
    )
    final = db.json("prices", "status", mid)
    assert final["counts"]["applied"] == 1 and final["counts"]["skipped"] == 4
    assert {"state": "skipped", "reason": "migration canceled", "count": 4} in final["reasons"]


# -- the SQL and the pure maths agree ----------------------------------------------------------


def _random_subscriptions(rng: random.Random, n: int) -> list[dict[str, Any]]:
    month_ends = [
        datetime(2027, 1, 31, 9, 30, tzinfo=UTC),
        datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 12, 31, 0, 0, tzinfo=UTC),
        datetime(2027, 3, 30, 12, 0, tzinfo=UTC),
    ]
    rows = []
    for i in range(n):
        interval = "year" if i % 4 == 0 else "month"
        end = (
            rng.choice(month_ends)
            if i % 7 == 0
            else START
            + timedelta(seconds=rng.randint(-40 * 86400, 400 * 86400), microseconds=rng.randint(0, 999999))
        )
        rows.append(
            {
                "id": f"s{i:04d}",
                "interval": interval,
                "amount_minor": rng.choice([0, 1, 999, 3900, 4900, 5899, 5900, 7000])
                * (12 if interval == "year" else 1),
                "current_period_end": end,
                "status": rng.choice(["active", "active", "past_due", "trialing", "unpaid"]),
            }
        )
    return rows


@pytest.mark.parametrize("interval", ["month", "year"])
def test_members_match_the_pure_maths_at_plan_and_at_launch(db: PricesDb, interval: str) -> None:
    rng = random.Random(20261206)
    db.subscriptions(*_random_subscriptions(rng, 240))
    new = 5900 * (12 if interval == "year" else 1)
    mid = json.loads(
        db.ok(
            "prices", "plan", "--plan", "pro", "--currency", "EUR", "--interval", interval, "--new-amount", str(new),
            "--effective", "2027-01-31", "--grandfather-months", "2", "--notice-days", "45", "--guardrail-percent", "30",
            "--reason", "r", "--json",
        ).stdout
    )["id"]  # fmt: skip
    effective = datetime(2027, 1, 31, tzinfo=UTC)

    def check(notice_at: datetime) -> dict[str, PriceMigrationMember]:
        members = db.members(mid)
        with db.sessions() as s:
            subs = {sub.id: sub for sub in s.execute(select(Subscription)).scalars()}
        wanted = {
            sub.id
            for sub in subs.values()
            if sub.interval == interval
            and sub.plan == "pro"
            and sub.status in ("active", "past_due", "trialing")
            and sub.amount_minor < new
        }
        assert {k for k, m in members.items() if m.state == "pending"} == wanted
        for sub_id in wanted:
            m, sub = members[sub_id], subs[sub_id]
            minor, bp = increase(sub.amount_minor, new)
            assert (m.current_amount_minor, m.increase_minor, m.increase_bp) == (sub.amount_minor, minor, bp)
            assert m.above_guardrail == above_guardrail(bp, 30)
            assert m.applies_at == apply_at(
                sub.current_period_end, interval, 1, effective, 2, notice_at, 45
            ), sub_id
        return members

    planned = check(START)
    assert any(m.increase_bp == BP_CAP for m in planned.values())  # the free ones
    # Facts change before launch: an amount, a cancellation, a plan change, a moved renewal.
    pending = sorted(planned)
    changed, canceled, moved_plan, moved_date = pending[:4]
    with transaction(db.sessions) as s:
        s.execute(update(Subscription).where(Subscription.id == changed).values(amount_minor=1))
        s.execute(update(Subscription).where(Subscription.id == canceled).values(status="canceled"))
        s.execute(update(Subscription).where(Subscription.id == moved_plan).values(plan="max"))
        s.execute(
            update(Subscription)
            .where(Subscription.id == moved_date)
            .values(current_period_end=datetime(2027, 5, 31, 8, 0, tzinfo=UTC))
        )
    db.set_clock(START + timedelta(days=9, hours=3))
    db.ok("prices", "launch", mid, "--override-guardrail")
    launched = check(START + timedelta(days=9, hours=3))
    for gone in (canceled, moved_plan):
        assert launched[gone].state == "skipped" and "left the plan" in (launched[gone].reason or "")
    assert launched[changed].current_amount_minor == 1
    pending_now = {k for k, m in launched.items() if m.state == "pending"}
    assert {j.subject for j in db.jobs()} == pending_now
    assert all(j.key == f"price:{mid}:{j.subject}:notice" for j in db.jobs())


# -- refusals: one line naming the field, nothing written --------------------------------------


def test_bad_input_is_one_line_naming_the_field_and_writes_nothing(db: PricesDb, tmp_path: Path) -> None:
    db.subscriptions({"id": "a1"}, {"id": "a2", "amount_minor": 3900})
    refusals = [
        ("--new-amount: must be above zero", ["--new-amount", "0"]),
        ("--new-amount: expected a whole number of minor units, got '59.00'", ["--new-amount", "59.00"]),
        ("--effective: 2026-11-01 is in the past (today is 2026-11-02 UTC)", ["--effective", "2026-11-01"]),
        ("--offer: unknown offer 'freebie'", ["--offer", "freebie"]),
        ("--notice-days: 6 days is too short", ["--notice-days", "6"]),
        ("--interval: expected month or year, got 'week'", ["--interval", "week"]),
        ("--plan: unknown plan 'gold'", ["--plan", "gold"]),
        ("--currency: no subscription on plan 'pro' is in JPY (it has EUR)", ["--currency", "JPY"]),
    ]
    for needle, change in refusals:
        args = plan_args()
        at = args.index(change[0]) if change[0] in args else len(args)
        args[at : at + 2] = change
        db.refused(needle, *args)
    yearly = [a.replace("step-up:20:6", "step-up:20:12") for a in plan_args("--interval", "year")]
    db.refused("--interval: no EUR subscription on plan 'pro' is billed every year", *yearly)
    db.refused("--reason: required", "prices", "plan", "--plan", "pro", "--currency", "EUR", "--new-amount", "1", "--effective", "2027-01-01")  # fmt: skip
    db.refused("--file: give the terms in the file or as options, not both (--plan given)", *plan_args("--file", "x.toml"))  # fmt: skip
    db.refused("--file: cannot read", "prices", "plan", "--file", str(tmp_path / "missing.toml"))
    terms = tmp_path / "migration.toml"
    terms.write_text(
        'plan = "pro"\ncurrency = "EUR"\nnew_amount = 5900\neffective = 2027-01-01\nreason = "r"\nnotice = 30\n'
    )
    db.refused(f"{terms}: notice: unknown key", "prices", "plan", "--file", str(terms))
    for command in ("preview", "launch", "status", "pause", "resume", "cancel"):
        db.refused("ID: no price migration 'pm_nope'", "prices", command, "pm_nope")
        db.refused("ID: required", "prices", command)
    db.refused("--csv: give --json or --csv, not both", "prices", "preview", "pm_nope", "--json", "--csv")
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(PriceMigration)) == 0
    # A draft: refusals that need one, each leaving it as it was.
    terms.write_text(
        'plan = "pro"\ncurrency = "EUR"\nnew_amount = 5900\neffective = 2027-01-01\nreason = "r"\n'
    )
    mid = db.ok("prices", "plan", "--file", str(terms)).stdout.strip()
    db.refused(
        f"--exclude: zz is not a subscriber of migration {mid}", "prices", "launch", mid, "--exclude", "zz"
    )
    db.refused(
        f"ID: migration {mid} is draft: only a launched migration can be paused", "prices", "pause", mid
    )
    db.refused(
        f"ID: migration {mid} is draft: only a paused migration can be resumed", "prices", "resume", mid
    )
    # Everyone left the plan after planning: launch finds nobody to notify, and writes nothing.
    with transaction(db.sessions) as s:
        s.execute(update(Subscription).values(status="canceled"))
    db.refused(
        f"ID: migration {mid} has no subscriber to notify", "prices", "launch", mid, "--override-guardrail"
    )
    with db.sessions() as s:
        assert s.get(PriceMigration, mid).status == "draft"  # type: ignore[union-attr]
    assert {m.state for m in db.members(mid).values()} == {"pending"}
    assert all(m.notice_at is None for m in db.members(mid).values())
    assert db.jobs() == []
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(TimelineEntry)) == 0


def test_every_prices_command_answers_help(db: PricesDb) -> None:
    for command in ("plan", "preview", "launch", "status", "list", "pause", "resume", "cancel"):
        result = db.ok("prices", command, "--help")
        assert "Usage" in result.output
    assert "--override-guardrail" in db.ok("prices", "launch", "--help").output


def test_on_subscriptions_that_came_through_the_events(world: Any) -> None:
    """The running product's own data (customers and subscriptions ingested from events)."""
    for i, amount in enumerate([3900, 4900, 4900, 5900]):
        world.customer(f"cus_{i}", sub=f"sub_{i}", amount=amount)  # renewals at START + 30 days
    runner = CliRunner()  # the harness's runtime (its database and simulated clock) is the CLI's
    planned = runner.invoke(app, plan_args("--json"))
    assert planned.exit_code == 0, planned.output
    mid = json.loads(planned.stdout)["id"]
    shown = runner.invoke(app, ["prices", "preview", mid, "--json"])
    assert shown.exit_code == 0, shown.output
    found = json.loads(shown.stdout)
    # Renewals on the 2nd: Dec 2 and Jan 2 come before effective + 1 month (Jan 15): Feb 2.
    assert [(c["current_amount_minor"], c["count"], c["first_applies_at"]) for c in found["cohorts"]] == [
        (3900, 1, "2027-02-02T10:00:00Z"),
        (4900, 2, "2027-02-02T10:00:00Z"),
    ]
    assert (found["mrr_before_minor"], found["mrr_after_minor"]) == (3900 + 2 * 4900, 3 * 5900)
    assert [r["subscription_id"] for r in found["above_guardrail"]] == ["sub_0"]


def test_the_table_shows_the_first_20_above_the_guardrail_json_and_csv_all(db: PricesDb) -> None:
    db.subscriptions(*({"id": f"g{i:02d}", "amount_minor": 1000 + i} for i in range(25)), {"id": "ok"})
    mid = json.loads(db.ok(*plan_args("--json")).stdout)["id"]
    table = db.ok("prices", "preview", mid).stdout
    assert "Above the 50 % guardrail: 25 (the first 20 below; all of them with --json or --csv)" in table
    assert "g00" in table and "g19" in table and "g20" not in table  # largest increases first
    found = db.json("prices", "preview", mid)
    assert found["above_guardrail_count"] == 25
    assert [r["subscription_id"] for r in found["above_guardrail"]] == [f"g{i:02d}" for i in range(25)]
    rows = list(csv.DictReader(io.StringIO(db.ok("prices", "preview", mid, "--csv").stdout)))
    assert sum(r["above_guardrail"] == "yes" for r in rows) == 25 and len(rows) == 26
