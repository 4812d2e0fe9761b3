"""``dunning queues`` and ``dunning report``: what ops look at (data in :mod:`dunning.ops`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


def queues_command(
    as_json: JsonOpt = False,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch", min=0.2, help="Redraw in place every SECONDS until Ctrl-C.", metavar="SECONDS"
        ),
    ] = None,
) -> None:
    """Per queue: ready, delayed, in progress, dead letters, oldest ready; scheduler backlog and lag; live workers."""
    from dunning.cli import _require_schema, _runtime, console, fail
    from dunning.ops.queues import queue_status
    from dunning.ops.queues_view import render_status

    if as_json and watch is not None:
        fail("--json and --watch do not go together")
    rt = _runtime()
    _require_schema(rt)
    import redis

    from dunning.broker.setup import redis_url

    client = redis.Redis.from_url(redis_url(rt.settings))
    try:
        if as_json:
            typer.echo(json.dumps(queue_status(rt, client).to_json(), indent=2))
            return
        if watch is None:
            console.print(render_status(queue_status(rt, client)))
            return
        import time

        from rich.live import Live

        try:
            with Live(render_status(queue_status(rt, client)), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(watch)
                    live.update(render_status(queue_status(rt, client)), refresh=True)
        except KeyboardInterrupt:
            pass
    finally:
        client.close()


def report_command(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only the last DURATION of business time, e.g. 30d, 12h, 2w."),
    ] = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="CSV on stdout: section, metric, key, value.")
    ] = False,
) -> None:
    """Recovery by decline class and by attempt, revenue recovered, churn, time to recover; lifecycle; price migrations."""
    from dunning.cli import _require_schema, _runtime, console, fail
    from dunning.domain.clock import parse_duration
    from dunning.ops.report_data import build_ops_report
    from dunning.ops.report_view import print_ops_report, print_report, report_csv, report_json

    if as_json and as_csv:
        fail("--json and --csv do not go together")
    window = None
    if since is not None:
        try:
            window = parse_duration(since)
        except ValueError as exc:
            fail(f"--since: {exc}")
    rt = _runtime()
    _require_schema(rt)
    report = build_ops_report(rt, since=window)
    if as_json:
        typer.echo(report_json(report))
    elif as_csv:
        typer.echo(report_csv(report), nl=False)
    else:
        if window is None:
            print_report(console, rt)  # the all-time summary, as before
        print_ops_report(console, report)
