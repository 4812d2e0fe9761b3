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
dlq_app = typer.Typer(help="Dead letters: refused messages and parked jobs.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(clock_app, name="clock")
app.add_typer(dlq_app, name="dlq")

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
    rt = _runtime()
    _require_schema(rt)
    from dunning.broker.setup import redis_url

    # Children inherit the resolved URL, so they all share one (embedded) Redis.
    os.environ["DUNNING_REDIS_URL"] = redis_url(rt.settings)
    # Dramatiq forks its worker processes from this one: connections opened for the checks
    # above must not be inherited (two processes on one PostgreSQL socket corrupt each other).
    from dunning.runtime import set_runtime

    rt.close()
    set_runtime(None)
    args = [actors_module(), "--processes", str(processes), "--threads", str(threads)]
    if queues:
        args += ["--queues", *queues]
    sys.exit(dramatiq_main(make_argument_parser().parse_args(args)))


@app.command()
def scheduler(
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between polls when idle.")] = 0.5,
    batch: Annotated[int, typer.Option(min=1, help="Jobs claimed per pass.")] = 500,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Claim due jobs from the database and enqueue them (safe to run several)."""
    import signal
    import threading

    from dunning.broker.setup import setup_broker
    from dunning.engine.scheduler import run_forever

    _logging(verbose)
    rt = _runtime()
    _require_schema(rt)
    broker = setup_broker(rt.settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.getLogger("dunning").info("scheduler started (poll %.2fs, batch %d)", poll, batch)
    run_forever(rt, broker, poll_s=poll, batch=batch, stop=stop)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """HTTP ingest (POST /events), customer links (/l/...), ops page (/) and /healthz."""
    import uvicorn

    from dunning.http.app import create_app

    rt = _runtime()
    _require_schema(rt)
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
def queues() -> None:
    """Queue depths, delayed and dead messages, and the job schedule."""
    from dunning.ops import queue_snapshot

    rt = _runtime()
    _require_schema(rt)
    from dunning.broker.setup import redis_url

    snap = queue_snapshot(rt, redis_url(rt.settings))
    table = Table(title="Broker queues")
    for col in ("queue", "ready", "delayed", "dead (broker)"):
        table.add_column(col, justify="right" if col != "queue" else "left")
    for q in snap.queues:
        table.add_row(q.name, str(q.ready), str(q.delayed), str(q.dead))
    console.print(table)
    jobs = Table(title=f"Scheduled jobs (business time {snap.now:%Y-%m-%d %H:%M}Z)")
    for col in ("state", "count"):
        jobs.add_column(col)
    for state, n in snap.jobs.items():
        jobs.add_row(state, str(n))
    console.print(jobs)
    if snap.oldest_due_age_s is not None:
        console.print(f"oldest due job waiting: {snap.oldest_due_age_s:.0f}s")
    console.print(f"dead letters to review: {snap.dead_letters} (see `dunning dlq list`)")


@dlq_app.command("list")
def dlq_list(all_: Annotated[bool, typer.Option("--all", help="Include requeued ones.")] = False) -> None:
    """List refused messages (m<id>) and parked jobs (j<id>) with their reasons."""
    from dunning.store.dead_letters import list_parked

    rt = _runtime()
    _require_schema(rt)
    items = list_parked(rt, include_requeued=all_)
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
    from dunning.store.dead_letters import get_parked

    rt = _runtime()
    _require_schema(rt)
    try:
        item = get_parked(rt, _ref(ref))
    except KeyError:
        fail(f"no dead letter {ref!r}")
    console.print_json(data={k: str(v) if k == "at" else v for k, v in item.__dict__.items()})


def _ref(ref: str) -> str:
    if len(ref) < 2 or ref[0] not in "mj" or not ref[1:].isdigit():
        fail(f"REF: expected m<number> or j<number> (as shown by `dunning dlq list`), got {ref!r}")
    return ref


@dlq_app.command("requeue")
def dlq_requeue(refs: Annotated[list[str], typer.Argument(help="m<id>/j<id>, or 'all'.")]) -> None:
    """Send dead letters back for another try (after fixing the cause)."""
    from dramatiq import Message

    from dunning.store.dead_letters import CannotRequeue, list_parked, requeue

    rt = _runtime()
    _require_schema(rt)
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
            console.print(requeue(rt, ref, send))
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
) -> None:
    """Delete dead letters for good."""
    from dunning.store.dead_letters import purge

    if not ref and not all_:
        fail("give a REF or --all")
    rt = _runtime()
    _require_schema(rt)
    n = purge(rt, None if all_ else _ref(ref or ""))
    console.print(f"purged {n}")


@app.command()
def report() -> None:
    """Cases by outcome, revenue recovered, emails by kind."""
    from dunning.ops import print_report

    rt = _runtime()
    _require_schema(rt)
    print_report(console, rt)


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
    from dunning.commands.prices import prices_app

    app.command("calendar")(calendar_command)
    app.add_typer(prices_app, name="prices")


_register()


def main() -> None:
    """Console-script entry point."""
    from dunning.logs import install

    # Before any command logs anything; Dramatiq's worker processes, forked later, inherit it.
    install()
    app()


if __name__ == "__main__":
    main()
