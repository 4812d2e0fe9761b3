"""``dunning report`` on a real run (both databases): recovery by decline class and attempt, churn, times."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _cli(h: Any, *args: str) -> str:
    from typer.testing import CliRunner

    from dunning.cli import app
    from dunning.runtime import own_runtime

    s = h.rt.settings
    env = {
        "DUNNING_DATABASE_URL": s.database_url,
        "DUNNING_REDIS_URL": s.redis_url,
        "DUNNING_CLOCK": "simulated",
        "DUNNING_HOME": str(s.home),
    }
    with own_runtime():  # the world's workers and heartbeats keep using theirs
        result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_report_counts_recovery_churn_and_time_to_recover(world) -> None:
    h = world
    for n in (1, 2, 3):
        h.customer(f"cus_{n}", sub=f"sub_{n}")
    h.fail("in_1", sub="sub_1", cid="cus_1", code="insufficient_funds", succeed_on_attempt=0)
    h.fail("in_2", sub="sub_2", cid="cus_2", code="insufficient_funds", succeed_on_attempt=2)
    h.fail("in_3", sub="sub_3", cid="cus_3", code="stolen_card", succeed_on_attempt=0, amount=1000)
    h.settle()
    h.advance(timedelta(days=22))
    assert [h.case(i).status for i in ("in_1", "in_2", "in_3")] == ["canceled", "recovered", "canceled"]

    out = json.loads(_cli(h, "report", "--json"))
    r = out["recovery"]
    assert (r["opened"], r["recovered"], r["churned"]) == (3, 1, 2)
    assert r["by_class"] == {
        "hard": {"opened": 1, "recovered": 0, "rate": 0.0},
        "soft": {"opened": 2, "recovered": 1, "rate": 0.5},
    }
    # Two soft cases charged at attempts 1 and 2, one of them paid at 2; the other ran out its five.
    assert {n: (v["made"], v["succeeded"]) for n, v in r["by_attempt"].items()} == {
        "1": (2, 0),
        "2": (2, 1),
        "3": (1, 0),
        "4": (1, 0),
        "5": (1, 0),
    }
    assert r["recovered_minor"] == {"EUR": 4900} and r["at_risk_minor"] == {}
    case = h.case("in_2")
    hours = (case.closed_at - case.opened_at).total_seconds() / 3600
    assert r["recover_hours_median"] == r["recover_hours_p90"] == hours > 0
    assert out["lifecycle"]["notices_sent"]["payment_failed"] == 3

    # The window is business time: the cases were opened 22 days ago.
    assert json.loads(_cli(h, "report", "--since", "1d", "--json"))["recovery"]["opened"] == 0
    assert json.loads(_cli(h, "report", "--since", "30d", "--json"))["recovery"]["opened"] == 3

    rows = list(csv.reader(io.StringIO(_cli(h, "report", "--csv"))))
    assert rows[0] == ["section", "metric", "key", "value"]
    assert ["recovery_by_class", "recovered", "soft", "1"] in rows
    assert ["revenue_recovered", "minor_units", "EUR", "4900"] in rows
    text = _cli(h, "report")
    assert "Recovery by decline class" in text and "Charges by attempt number" in text


def test_price_migration_acceptance_per_migration(world) -> None:
    from dunning.ops.report_data import build_ops_report
    from dunning.store.db import transaction
    from dunning.store.models import PriceMigration, PriceMigrationMember

    h = world
    now = h.rt.clock.now()
    members = [
        ("s1", "applied", "step_up", None),
        ("s2", "applied", "none", None),
        ("s3", "applied", None, None),
        ("s4", "skipped", None, "canceled within 14 days of the notice"),
        ("s5", "notified", None, None),
        ("s6", "pending", None, None),  # never notified: not counted
    ]
    with transaction(h.rt.sessions) as s:
        s.add(
            PriceMigration(
                id="pm-1",
                status="launched",
                plan="pro",
                currency="EUR",
                interval="month",
                new_amount_minor=5900,
                effective_at=now,
                notice_days=30,
                grandfather_months=0,
                offers=[],
                reason="costs",
                guardrail_percent=30,
                cancel_alert_percent=5,
                cancel_alert_days=14,
                created_at=now,
            )
        )
        s.flush()
        for sub, state, choice, reason in members:
            s.add(
                PriceMigrationMember(
                    migration_id="pm-1",
                    subscription_id=sub,
                    customer_id="c",
                    current_amount_minor=4900,
                    new_amount_minor=5900,
                    increase_minor=1000,
                    increase_bp=2040,
                    above_guardrail=False,
                    state=state,
                    choice=choice,
                    reason=reason,
                    notified_at=None if state == "pending" else now,
                )
            )
    [m] = build_ops_report(h.rt).migrations
    assert (m.id, m.notified, m.accepted, m.declined, m.defaulted, m.open) == ("pm-1", 5, 2, 1, 1, 1)
    assert m.choices == {"step_up": 1, "none": 1}
