"""``dunning emails bounces``: the addresses the mail server refused for good, which get no email.

:func:`bounces_command` is one command of the ``emails`` sub-app (wired in
:func:`dunning.cli._register`). An address leaves the list when a ``customer.upserted``
changes that customer's email (:func:`dunning.engine.recipients.email_changed`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


def bounces_command(json_: JsonOpt = False) -> None:
    """List bouncing addresses: nothing is sent to them until the customer's email changes."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from dunning.cli import _require_schema, _runtime
    from dunning.engine.recipients import list_bounces

    rt = _runtime()
    _require_schema(rt)
    with rt.sessions() as session:
        rows = list_bounces(session)
    if json_:
        items = [
            {
                "address": r.address,
                "customer_id": r.customer_id,
                "code": r.code,
                "kind": r.kind,
                "message_id": r.message_id,
                "bounced_at": r.bounced_at.isoformat(),
                "detail": r.detail,
            }
            for r in rows
        ]
        typer.echo(json.dumps({"bounces": items, "count": len(items)}, ensure_ascii=False))
        return
    console = Console(highlight=False)
    if not rows:
        console.print("No bouncing addresses.")
        return
    table = Table("address", "customer", "SMTP", "email", "since (UTC)", box=None)
    for r in rows:
        table.add_row(
            escape(r.address),
            escape(r.customer_id),
            str(r.code or "5xx"),
            escape(r.kind),
            f"{r.bounced_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)
    console.print(f"{len(rows)} bouncing address(es); each is cleared when its customer's email changes.")
