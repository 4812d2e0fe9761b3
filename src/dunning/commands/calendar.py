"""``dunning calendar``: the notices a subscription will get, from the planner the workers run."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


def calendar_command(
    subscription: Annotated[str | None, typer.Argument(help="A subscription id.")] = None,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Every subscription of this customer.")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=3660, help="How far ahead to look.")] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """The notices a subscription will get in the next N days as the facts stand now, and why."""
    from dunning.cli import _require_schema, _runtime, console, fail
    from dunning.workflows.lifecycle.calendar_view import upcoming

    if (subscription is None) == (customer is None):
        fail("give a subscription id, or --customer CUS (not both)")
    rt = _runtime()
    _require_schema(rt)
    with rt.sessions() as session:
        found, entries = upcoming(rt, session, subscription=subscription, customer=customer, days=days)
    if not found:
        fail(
            f"unknown subscription {subscription!r}"
            if subscription
            else f"customer {customer!r} has no subscriptions"
        )
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    _print(console, entries, days)


def _print(console: Console, entries: list[dict[str, Any]], days: int) -> None:
    if not entries:
        console.print(f"No notices in the next {days} days.")
        return
    table = Table(title=f"Notices in the next {days} days")
    # Kinds and ids stay whole (people grep them); the reason wraps on a narrow terminal.
    table.add_column("when (customer's time)", overflow="fold")
    for column in ("subscription", "kind"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=16)
    for entry in entries:
        table.add_row(
            f"{entry['due_local']} {entry['timezone']}"
            + (" (now)" if entry["now"] else "")
            + (
                f", sent {entry['sends_local'][-5:]} after quiet hours"
                if entry["sends_local"] != entry["due_local"]
                else ""
            ),
            entry["subscription_id"],
            entry["kind"] + (f" ({entry['variant']})" if entry["variant"] else ""),
            entry["reason"],
        )
    console.print(table)
