"""``dunning dlq``: list (filtered), show, requeue, purge, and the audit of who requeued or purged."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

dlq_app = typer.Typer(help="Dead letters: refused messages and parked jobs.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]
ByOpt = Annotated[
    str | None, typer.Option("--by", help="Who does this, for the audit (default: the OS user).")
]


def _duration(option: str, text: str | None) -> timedelta | None:
    from dunning.cli import fail
    from dunning.domain.clock import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def _by(by: str | None) -> str:
    from dunning.ops.audit import default_operator

    return by.strip() if by and by.strip() else default_operator()


@dlq_app.command("list")
def dlq_list(
    all_: Annotated[bool, typer.Option("--all", help="Include requeued ones.")] = False,
    queue: Annotated[str | None, typer.Option("--queue", help="Only this queue.")] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Only this actor (or, for parked jobs, job kind).")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Reason contains this (any case).")] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Parked more than e.g. 2h, 3d ago.")
    ] = None,
    newer_than: Annotated[
        str | None, typer.Option("--newer-than", help="Parked less than e.g. 2h, 3d ago.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """List refused messages (m<id>) and parked jobs (j<id>) with their reasons."""
    from dunning.cli import _require_schema, _runtime, console
    from dunning.ops.dlq import DlqFilter, find, parked_json

    filt = DlqFilter(
        queue, actor, reason, _duration("--older-than", older_than), _duration("--newer-than", newer_than)
    )
    rt = _runtime()
    _require_schema(rt)
    items = find(rt, filt, include_requeued=all_, limit=limit)
    if as_json:
        typer.echo(json.dumps([parked_json(p) for p in items], indent=2))
        return
    table = Table(title=f"Dead letters ({len(items)})")
    for col in ("ref", "when", "queue", "what", "field", "reason"):
        table.add_column(col, overflow="fold")
    for p in items:
        # Queue, actor and reason can carry a producer's text: printed as is, never as markup.
        table.add_row(
            p.ref,
            f"{p.at:%Y-%m-%d %H:%M:%S}",
            *(escape(v) for v in (p.queue, p.what, p.field or "", p.reason)),
        )
    console.print(table)


@dlq_app.command("show")
def dlq_show(ref: Annotated[str, typer.Argument(help="m<id> or j<id> from `dlq list`.")]) -> None:
    """Show one dead letter with its payload."""
    from dunning.cli import _require_schema, _runtime, console, fail
    from dunning.store.dead_letters import get_parked

    rt = _runtime()
    _require_schema(rt)
    try:
        item = get_parked(rt, _ref(ref))
    except KeyError:
        fail(f"no dead letter {ref!r}")
    console.print_json(data={k: str(v) if k == "at" else v for k, v in item.__dict__.items()})


def _ref(ref: str) -> str:
    from dunning.cli import fail

    if len(ref) < 2 or ref[0] not in "mj" or not ref[1:].isdigit():
        fail(f"REF: expected m<number> or j<number> (as shown by `dunning dlq list`), got {ref!r}")
    return ref


@dlq_app.command("requeue")
def dlq_requeue(
    refs: Annotated[list[str], typer.Argument(help="m<id>/j<id>, or 'all'.")], by: ByOpt = None
) -> None:
    """Send dead letters back for another try (after fixing the cause); recorded in the audit."""
    from dramatiq import Message

    from dunning.cli import _require_schema, _runtime, console, fail
    from dunning.ops.dlq import requeue_audited
    from dunning.store.dead_letters import CannotRequeue, list_parked

    rt = _runtime()
    _require_schema(rt)
    who = _by(by)
    brokers: list[Any] = []

    def send(queue: str, actor: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        if not brokers:  # connected on first use: a refusal needs no broker
            from dunning.broker.setup import setup_broker

            brokers.append(setup_broker(rt.settings))
        brokers[0].enqueue(
            Message(queue_name=queue, actor_name=actor, args=tuple(args), kwargs=kwargs, options={})
        )

    every = refs == ["all"]
    targets = [p.ref for p in list_parked(rt, limit=100_000)] if every else [_ref(r) for r in refs]
    for ref in targets:
        try:
            console.print(requeue_audited(rt, ref, send, by=who))
        except KeyError:
            fail(f"no dead letter {ref!r} to requeue")
        except CannotRequeue as exc:
            if not every:
                fail(str(exc))
            console.print(f"skipped: {exc}", markup=False, highlight=False)


@dlq_app.command("purge")
def dlq_purge(
    ref: Annotated[str | None, typer.Argument(help="One m<id>/j<id>; omit with --all.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Purge every dead letter.")] = False,
    by: ByOpt = None,
) -> None:
    """Delete dead letters for good; recorded in the audit."""
    from dunning.cli import _require_schema, _runtime, console, fail
    from dunning.ops.dlq import purge_audited

    if not ref and not all_:
        fail("give a REF or --all")
    rt = _runtime()
    _require_schema(rt)
    n = purge_audited(rt, None if all_ else _ref(ref or ""), by=_by(by))
    console.print(f"purged {n}")


@dlq_app.command("audit")
def dlq_audit(
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Who requeued, purged, paused or resumed what, and when (wall time)."""
    from dunning.cli import _require_schema, _runtime, console
    from dunning.ops.audit import list_audit

    rt = _runtime()
    _require_schema(rt)
    entries = list_audit(rt, limit=limit)
    if as_json:
        typer.echo(json.dumps([e.to_json() for e in entries], indent=2))
        return
    table = Table(title=f"Ops audit ({len(entries)})")
    for col in ("when", "by", "action", "target", "detail"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}", *(escape(v or "") for v in (e.by, e.action, e.target, e.detail))
        )
    console.print(table)
