"""The ``dunning`` command line (contract §4)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="Dunning and renewal workers: payment retries, grace periods and customer notices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
clock_app = typer.Typer(help="The simulated clock (DUNNING_CLOCK=simulated).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(clock_app, name="clock")

console = Console()
err = Console(stderr=True, soft_wrap=True)  # one line per error, whatever the width


def actors_module() -> str:
    """Where the actors are: ``dunning.workers`` in an installed wheel, ``workers`` in a checkout."""
    import importlib.util

    return "dunning.workers" if importlib.util.find_spec("dunning.workers") else "workers"


def fail(message: str, code: int = 2) -> NoReturn:
    """Exit non-zero with a one-line reason."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _runtime() -> Any:
    from dunning.domain.policy import PolicyError
    from dunning.runtime import get_runtime

    try:
        return get_runtime()
    except PolicyError as exc:
        fail(f"policy file: {exc}")
    except ValueError as exc:
        fail(str(exc))


def _require_schema(rt: Any) -> None:
    from sqlalchemy.exc import OperationalError

    from dunning.store.migrate import current_revision, head_revision

    try:
        current = current_revision(rt.engine)
    except OperationalError as exc:
        fail(f"cannot reach the database ({type(exc.orig).__name__}); check DUNNING_DATABASE_URL")
    if current != head_revision():
        fail(
            f"database schema is at {current or 'nothing'}, expected {head_revision()}: run `dunning db upgrade`"
        )


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Create or migrate the schema (Alembic)."""
    from dunning.store.migrate import current_revision, upgrade

    rt = _runtime()
    before = current_revision(rt.engine)
    upgrade(rt.engine, revision)
    console.print(
        f"schema: {before or 'empty'} -> {current_revision(rt.engine)} ({rt.engine.url.render_as_string()})"
    )


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision."""
    from dunning.store.migrate import current_revision, head_revision

    rt = _runtime()
    console.print(f"current: {current_revision(rt.engine) or 'empty'}; newest: {head_revision()}")


@clock_app.command("show")
def clock_show() -> None:
    """Print the time every process sees."""
    rt = _runtime()
    kind = rt.settings.clock
    console.print(f"{rt.clock.now().isoformat()} ({kind})")


@clock_app.command("advance")
def clock_advance(duration: Annotated[str, typer.Argument(help="e.g. 90s, 6h, 3d, 1d12h, 2w")]) -> None:
    """Move the simulated clock forward; due work runs at the next scheduler pass."""
    from dunning.domain.clock import parse_duration

    try:
        delta = parse_duration(duration)
    except ValueError as exc:
        fail(str(exc))
    rt = _runtime()
    if rt.settings.clock != "simulated":
        fail("the clock is the system clock; set DUNNING_CLOCK=simulated to move it")
    _require_schema(rt)
    console.print(f"simulated clock now {rt.clock.advance(delta).isoformat()}")


@app.command()
def worker(
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="Threads per process.")] = 8,
    queues: Annotated[list[str] | None, typer.Option("--queue", "-Q", help="Only these queues.")] = None,
) -> None:
    """Run Dramatiq workers for all actors (billing_events, dunning, mail)."""
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from dunning.broker.names import ALL_QUEUES

    unknown = set(queues or ()) - set(ALL_QUEUES)
    if unknown:
        fail(f"--queue: unknown queue {sorted(unknown)[0]!r}; queues are {', '.join(ALL_QUEUES)}")
    from dunning.broker.setup import redis_url
    from dunning.commands.emails import serving_runtime

    rt = serving_runtime()

    # Children inherit the resolved URL, so they all share one (embedded) Redis.
    os.environ["DUNNING_REDIS_URL"] = redis_url(rt.settings)
    # Dramatiq forks its worker processes from this one: connections opened for the checks
    # above must not be inherited (two processes on one PostgreSQL socket corrupt each other).
    from dunning.runtime import set_runtime

    rt.close()
    set_runtime(None)
    from dunning.broker.middleware.heap import ENV_FLAG

    os.environ[ENV_FLAG] = "1"  # the worker processes freeze their start-up heap once booted
    args = [actors_module(), "--processes", str(processes), "--threads", str(threads)]
    if queues:
        args += ["--queues", *queues]
    sys.exit(dramatiq_main(make_argument_parser().parse_args(args)))


@app.command()
def scheduler(
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between polls when idle.")] = 0.5,
    batch: Annotated[int, typer.Option(min=1, help="Jobs claimed per pass.")] = 500,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what one pass would enqueue, claim nothing, exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: a JSON array.")] = False,
) -> None:
    """Claim due jobs from the database and enqueue them (safe to run several)."""
    import signal
    import threading

    from dunning.broker.setup import setup_broker
    from dunning.engine.scheduler import run_forever

    rt = _runtime()
    _require_schema(rt)
    if dry_run:
        _dry_run(rt, batch, as_json)
        return
    _logging(verbose)
    broker = setup_broker(rt.settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.getLogger("dunning").info("scheduler started (poll %.2fs, batch %d)", poll, batch)
    run_forever(rt, broker, poll_s=poll, batch=batch, stop=stop)


def _dry_run(rt: Any, batch: int, as_json: bool) -> None:
    import json

    from dunning.ops.preview import preview

    would = preview(rt, batch=batch)
    if as_json:
        typer.echo(json.dumps([w.to_json() for w in would], indent=2))
        return
    table = Table(title=f"A scheduler pass now would enqueue {len(would)} (nothing claimed)")
    for col in ("job", "kind", "queue", "due", "why", "key"):
        table.add_column(col, overflow="fold")
    for w in would:
        table.add_row(str(w.job_id), w.kind, w.queue, f"{w.due_at:%Y-%m-%d %H:%M}", w.why, escape(w.key))
    console.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """HTTP ingest (POST /events), customer links (/l/...), ops page (/) and /healthz."""
    import uvicorn

    from dunning.commands.emails import serving_runtime
    from dunning.http.app import create_app

    rt = serving_runtime()
    import redis

    from dunning import telemetry
    from dunning.broker.setup import redis_url

    # Ingest refusals are counted in Redis with the workers' metrics (dunning.telemetry).
    telemetry.install(redis.Redis.from_url(redis_url(rt.settings)))
    uvicorn.run(create_app(rt), host=host, port=port, log_level="info")


@app.command()
def sandbox(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of the simulated outcomes.")] = 7,
) -> None:
    """Run the sandbox billing API (contract §2) for local rehearsal."""
    import signal
    import threading

    from dunning.devtools.sandbox import SandboxServer
    from dunning.settings import load_settings

    settings = load_settings()
    server = SandboxServer(secret=settings.billing_secret, seed=seed, host=host, port=port)
    url = server.start()
    console.print(f"sandbox billing API on {url} (secret from DUNNING_BILLING_SECRET); Ctrl-C to stop")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


@app.command()
def demo(
    subscriptions: Annotated[int, typer.Option(min=10, max=20_000, help="Simulated subscriptions.")] = 300,
    days: Annotated[int, typer.Option(min=1, max=365, help="Simulated days.")] = 46,
    seed: Annotated[int, typer.Option(help="Random seed of the customer base.")] = 7,
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    directory: Annotated[Path, typer.Option(help="Where the demo writes its database and emails.")] = Path(
        ".dunning/demo"
    ),
) -> None:
    """Run everything embedded on a simulated customer base and print a summary."""
    from dunning.devtools.demo import run_demo

    sys.exit(
        run_demo(
            console,
            subscriptions=subscriptions,
            days=days,
            seed=seed,
            processes=processes,
            directory=directory,
        )
    )


def _register() -> None:
    from dunning.commands.calendar import calendar_command
    from dunning.commands.controls import pause_command, resume_command
    from dunning.commands.dlq import dlq_app
    from dunning.commands.emails import emails_app
    from dunning.commands.emails_bounces import bounces_command
    from dunning.commands.ops_view import queues_command, report_command
    from dunning.commands.prices import prices_app

    app.command("queues")(queues_command)
    app.add_typer(dlq_app, name="dlq")
    app.command("report")(report_command)
    app.command("pause")(pause_command)
    app.command("resume")(resume_command)
    app.command("calendar")(calendar_command)
    app.add_typer(prices_app, name="prices")
    emails_app.command("bounces")(bounces_command)
    app.add_typer(emails_app, name="emails")


_register()


def main() -> None:
    """Console-script entry point."""
    from dunning.logs import install

    # Before any command logs anything; Dramatiq's worker processes, forked later, inherit it.
    install()
    app()


if __name__ == "__main__":
    main()
