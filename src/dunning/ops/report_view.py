"""Rendering ``dunning report``: Rich tables, JSON and CSV of :mod:`dunning.ops.report_data`."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from dunning.ops.report_data import OpsReport
    from dunning.runtime import Runtime


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _hours(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} h" if value < 48 else f"{value / 24:.1f} d"


def report_json(report: OpsReport) -> str:
    """``dunning report --json``."""
    return json.dumps(report.to_json(), indent=2, sort_keys=False)


def report_csv(report: OpsReport) -> str:
    """``dunning report --csv``: one row per number (section, metric, key, value)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("section", "metric", "key", "value"))
    for section, metric, key, value in report.rows():
        writer.writerow((section, metric, key, "" if value is None else value))
    return buf.getvalue()


def print_ops_report(console: Console, report: OpsReport) -> None:
    """Recovery by decline class and by attempt, revenue, churn, time to recover; lifecycle; migrations."""
    r = report.recovery
    window = f"since {report.since:%Y-%m-%d %H:%M}Z" if report.since else "all time"
    t = Table(title=f"Recovery ({window})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("cases opened", str(r.opened))
    t.add_row("recovered", f"{r.recovered} ({_pct(r.recovered / r.opened if r.opened else None)})")
    t.add_row(
        "involuntary churn (canceled for non-payment)",
        f"{r.churned} ({_pct(r.churned / r.opened if r.opened else None)})",
    )
    t.add_row("revenue recovered", _money(r.recovered_minor))
    t.add_row("revenue still at risk", _money(r.at_risk_minor))
    t.add_row(
        "time to recover (median / p90)", f"{_hours(r.recover_hours_median)} / {_hours(r.recover_hours_p90)}"
    )
    console.print(t)
    c = Table(title="Recovery by decline class (first decline)")
    for col in ("class", "opened", "recovered", "rate"):
        c.add_column(col, justify="left" if col == "class" else "right")
    for cls, v in r.by_class.items():
        c.add_row(
            cls,
            str(v["opened"]),
            str(v["recovered"]),
            _pct(v["recovered"] / v["opened"] if v["opened"] else None),
        )
    console.print(c)
    a = Table(title="Charges by attempt number")
    for col in ("attempt", "made", "succeeded", "rate"):
        a.add_column(col, justify="right")
    for n, v in r.by_attempt.items():
        a.add_row(
            str(n),
            str(v["made"]),
            str(v["succeeded"]),
            _pct(v["succeeded"] / v["made"] if v["made"] else None),
        )
    console.print(a)
    life = report.lifecycle
    lt = Table(title="Notices and lifecycle")
    lt.add_column("metric")
    lt.add_column("value", justify="right")
    for kind, n in life.notices_sent.items():
        lt.add_row(f"{kind} sent", str(n))
    conv = life.trials_converted / life.trials_ended if life.trials_ended else None
    lt.add_row("trials ended / converted", f"{life.trials_ended} / {life.trials_converted} ({_pct(conv)})")
    take = life.annual_switches / life.annual_offers_sent if life.annual_offers_sent else None
    lt.add_row(
        "annual offers sent / switched", f"{life.annual_offers_sent} / {life.annual_switches} ({_pct(take)})"
    )
    console.print(lt)
    if report.migrations:
        mt = Table(title="Price migrations: what the notified members did")
        for col in ("migration", "status", "notified", "accepted", "declined", "defaulted", "open"):
            mt.add_column(col, justify="left" if col in ("migration", "status") else "right")
        for m in report.migrations:
            mt.add_row(
                m.id, m.status, *(str(x) for x in (m.notified, m.accepted, m.declined, m.defaulted, m.open))
            )
        console.print(mt)


def _money(amounts: dict[str, int]) -> str:
    from dunning.mail.render import format_money

    if not amounts or not any(amounts.values()):
        return "0"
    return ", ".join(format_money(v, cur, "en") for cur, v in sorted(amounts.items()) if v)


def print_report(console: Console, rt: Runtime) -> None:
    """Print the business report."""
    from dunning.report import build_report

    r = build_report(rt)
    t = Table(title=f"Dunning report ({rt.clock.now():%Y-%m-%d %H:%M}Z)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("cases opened", r.cases_opened),
        ("recovered by retry", r.by_outcome.get("retry", 0)),
        ("recovered by card update", r.by_outcome.get("card_update", 0)),
        ("recovered, paid elsewhere", r.by_outcome.get("paid", 0)),
        ("ever suspended", r.ever_suspended),
        ("canceled for non-payment", r.by_outcome.get("canceled", 0)),
        ("downgraded", r.by_outcome.get("downgraded", 0)),
        ("closed (subscription canceled)", r.by_outcome.get("subscription_canceled", 0)),
        ("still open / suspended", r.by_status.get("open", 0) + r.by_status.get("suspended", 0)),
        ("recovery rate", f"{r.recovery_rate:.0%}"),
        ("revenue recovered", _money(r.recovered_minor)),
        ("revenue still at risk", _money(r.at_risk_minor)),
        (
            "charge attempts (ok / declined / unknown)",
            f"{r.charges.get('succeeded', 0)} / {r.charges.get('failed', 0)} / {r.charges.get('unknown', 0) + r.charges.get('pending', 0)}",
        ),
    ]
    for name, value in rows:
        t.add_row(name, str(value))
    console.print(t)
    e = Table(title="Emails sent")
    e.add_column("kind")
    e.add_column("sent", justify="right")
    for kind, n in sorted(r.emails.items()):
        e.add_row(kind, str(n))
    e.add_row("[dim]dropped (no longer true)[/dim]", str(r.email_status.get("skipped", 0)))
    e.add_row(
        "[dim]failed / waiting[/dim]",
        f"{r.email_status.get('failed', 0)} / {r.email_status.get('pending', 0) + r.email_status.get('sending', 0)}",
    )
    console.print(e)
