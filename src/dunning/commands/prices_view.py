"""Tables for ``dunning prices`` (the ``--json`` objects rendered for a person)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dunning.workflows.price_migrations.pricing import (
    add_months,
    describe_offer,
    format_minor,
    increase_bp,
    percent_text,
)

#: Subscribers above the guardrail shown in the table; ``--json`` and ``--csv`` list them all.
GUARDRAIL_ROWS = 20


def when(value: str | None) -> str:
    """``2027-02-15T10:00:00Z`` -> ``2027-02-15 10:00``; None -> ``-``."""
    return "-" if value is None else value[:16].replace("T", " ")


def _months(n: int) -> str:
    return f"{n} month" if n == 1 else f"{n} months"


def _terms_lines(found: dict[str, Any]) -> list[str]:
    from datetime import datetime

    cur = found["currency"]
    effective = datetime.fromisoformat(found["effective_at"].replace("Z", "+00:00"))
    not_before = add_months(effective, found["grandfather_months"])
    lines = [
        f"{found['plan']} {cur} {found['interval']}ly -> {format_minor(found['new_amount_minor'], cur)}, "
        f"effective {effective:%Y-%m-%d}"
        + (
            f" + {_months(found['grandfather_months'])} grandfathered (not before {not_before:%Y-%m-%d})"
            if found["grandfather_months"]
            else ""
        )
        + f"; {found['notice_days']} days' notice",
        f"reason: {found['reason']}",
    ]
    offers = [describe_offer(o, found["new_amount_minor"], cur) for o in found["offers"]]
    lines.append("offers: " + ("; ".join(offers) if offers else "none (the new price, or cancel)"))
    return lines


def print_preview(console: Console, found: dict[str, Any]) -> None:
    """The preview as a person reads it: terms, totals, cohorts, who is above the guardrail."""
    cur = found["currency"]
    money = lambda minor: format_minor(minor, cur)  # noqa: E731
    estimate = f" (estimates for a launch now, {when(found['as_of'])} UTC)" if found["estimated"] else ""
    console.print(
        f"Price migration {found['id']}: {found['status']}{estimate}", markup=False, highlight=False
    )
    for line in _terms_lines(found):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    aside = []
    if found["excluded_or_skipped"]:
        aside.append(f"{found['excluded_or_skipped']:,} excluded or skipped")
    if found["left_plan_since_planning"]:
        aside.append(
            f"{found['left_plan_since_planning']:,} left the plan since planning (launch skips them)"
        )
    console.print(
        f"Subscribers affected: {found['subscribers']:,}" + (f" ({'; '.join(aside)})" if aside else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    before, after = found["mrr_before_minor"], found["mrr_after_minor"]
    change = percent_text(increase_bp(before, after)) if before else "n/a"
    sign = "+" if after >= before else ""
    console.print(
        f"MRR of these subscribers (monthly equivalent): {money(before)} -> {money(after)} ({sign}{money(after - before)}, {change})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title="Cohorts (by current amount)", title_justify="left")
    for column, justify in (
        ("current", "right"),
        ("interval", "left"),
        ("subscribers", "right"),
        ("increase", "right"),
        ("%", "right"),
        ("first notice (UTC)", "left"),
        ("first applies (UTC)", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for c in found["cohorts"]:
        table.add_row(
            money(c["current_amount_minor"]),
            c["interval"],
            f"{c['count']:,}",
            money(c["increase_minor"]),
            percent_text(c["increase_bp"]),
            when(c["first_notice_at"]),
            when(c["first_applies_at"]),
        )
    console.print(table)
    above, count = found["above_guardrail"], found["above_guardrail_count"]
    if not count:
        console.print(f"Nobody is above the {found['guardrail_percent']} % guardrail.")
        return
    more = (
        f" (the first {GUARDRAIL_ROWS} below; all of them with --json or --csv)"
        if count > GUARDRAIL_ROWS
        else ""
    )
    console.print(
        f"Above the {found['guardrail_percent']} % guardrail: {count:,}{more}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    guard = Table()
    for column in ("subscription", "current", "new", "increase", "%"):
        guard.add_column(column, justify="left" if column == "subscription" else "right")
    for row in above[:GUARDRAIL_ROWS]:
        guard.add_row(
            escape(row["subscription_id"]),
            money(row["current_amount_minor"]),
            money(row["new_amount_minor"]),
            money(row["increase_minor"]),
            f"+{row['increase_percent']:.2f} %",
        )
    console.print(guard)
    console.print(
        "launch refuses until each is excluded (--exclude SUB) or the guardrail overridden (--override-guardrail)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def print_status(console: Console, found: dict[str, Any]) -> None:
    """Counts per state and per choice, with the reasons of the skipped and deferred."""
    paused = f" ({found['paused_reason']})" if found["status"] == "paused" and found["paused_reason"] else ""
    console.print(
        f"Price migration {found['id']}: {found['status']}{paused}, {found['subscribers']:,} subscribers",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for line in _terms_lines(found):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    table = Table(title="Subscribers by state", title_justify="left")
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, n in found["counts"].items():
        table.add_row(state, f"{n:,}")
    console.print(table)
    choices = Table(title="Choices", title_justify="left")
    choices.add_column("offer")
    choices.add_column("count", justify="right")
    for choice, n in found["choices"].items():
        choices.add_row(choice, f"{n:,}")
    console.print(choices)
    if found["reasons"]:
        reasons = Table(title="Why not changed", title_justify="left")
        for column in ("state", "reason", "count"):
            reasons.add_column(column, justify="right" if column == "count" else "left", overflow="fold")
        for row in found["reasons"]:
            reasons.add_row(row["state"], escape(row["reason"]), f"{row['count']:,}")
        console.print(reasons)


def print_list(console: Console, found: list[dict[str, Any]]) -> None:
    """One line per migration."""
    if not found:
        console.print("No price migrations yet (`dunning prices plan --help`).")
        return
    table = Table(title=f"Price migrations ({len(found)})", title_justify="left")
    for column in ("id", "status", "plan", "new price", "effective", "subscribers", "created (UTC)"):
        table.add_column(column, justify="right" if column == "subscribers" else "left")
    for m in found:
        table.add_row(
            m["id"],
            m["status"],
            escape(f"{m['plan']} {m['currency']} {m['interval']}ly"),
            format_minor(m["new_amount_minor"], m["currency"]),
            m["effective_at"][:10],
            f"{m['subscribers']:,}",
            when(m["created_at"]),
        )
    console.print(table)
