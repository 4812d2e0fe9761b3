"""``dunning demo``: the whole product on embedded parts and a simulated clock.

Starts a private Redis, the sandbox billing API, the scheduler and real
Dramatiq worker processes; plays a seeded customer base through weeks of
simulated time (failed payments from :mod:`.demo_scenario`, lifecycle
subscribers from :mod:`.demo_lifecycle`, customers accepting the annual offer
through the HTTP app, one small price migration from :mod:`.demo_prices`);
writes every email as ``.eml`` with an ``index.html`` (and a gallery of every
kind in every language, :mod:`.gallery`); prints the report; stops everything
it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from dunning.client import Client
from dunning.devtools.demo_lifecycle import build_lifecycle
from dunning.devtools.demo_lifecycle_run import (
    OfferTaker,
    lifecycle_summary,
    print_lifecycle,
    register,
    renewed,
)
from dunning.devtools.demo_prices import CURRENT_MINOR, build_prices, command_line, migration_options
from dunning.devtools.demo_prices_run import PriceDesk, price_summary, print_prices
from dunning.devtools.demo_scenario import DEMO_POLICY, Action, build_scenario
from dunning.devtools.embedded_redis import RedisProcess
from dunning.devtools.sandbox import SandboxServer
from dunning.engine.jobs import outstanding
from dunning.runtime import Runtime, Tuning, build_runtime
from dunning.settings import load_settings
from dunning.store.migrate import upgrade
from dunning.store.models import Case, DeadLetter, Job, Outbox, ProcessedEvent

STEP = timedelta(hours=6)
STALL_S = 90.0
#: What customers and the operator do by hand (the HTTP app, the prices commands), not billing events.
BY_HAND = ("customer", "accept_offer", "price_choice", "price_launch")


class DemoError(RuntimeError):
    """The demo could not finish; the message says where it stopped."""


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "dunning", *args],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so we can stop the worker's whole process group
    )


def _stop(procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """Stop each process's whole group: all asked at once, so their shutdowns overlap."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait(what: str, done: Callable[[], bool], procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + STALL_S
    delay = 0.005
    while not done():
        for proc in procs:
            if proc.poll() is not None:
                raise DemoError(f"a {what} wait found a process exited ({proc.args[3]}); see {logs}")
        if time.monotonic() > deadline:
            raise DemoError(f"stalled for {STALL_S:.0f}s waiting for {what}; see the logs in {logs}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def _send(client: Client, sandbox: SandboxServer, action: Action) -> None:
    at = action.at.isoformat().replace("+00:00", "Z")
    d = action.data
    if action.kind == "customer":
        client.customer_upserted(d, occurred_at=at)
    elif action.kind == "subscription":
        client.subscription_upserted(d, occurred_at=at)
    elif action.kind == "renewal":
        client.subscription_upserted(renewed(sandbox, action.at, d), occurred_at=at)
    elif action.kind == "fail":
        client.payment_failed(occurred_at=at, **d)
    elif action.kind == "card_update":
        client.payment_method_updated(occurred_at=at, **d)
    elif action.kind == "paid":
        client.invoice_paid(occurred_at=at, **d)
    elif action.kind == "cancel":
        client.subscription_canceled(occurred_at=at, **d)


def _apply_to_sandbox(sandbox: SandboxServer, action: Action) -> None:
    """The billing system's own side of what happens (the sandbox is the billing system)."""
    d = action.data
    if action.kind in ("subscription", "renewal"):
        register(sandbox, d)
    elif action.kind == "fail":
        sandbox.state.add_invoice(
            d["invoice_id"],
            subscription_id=d["subscription_id"],
            customer_id=d["customer_id"],
            amount_minor=d["amount_minor"],
            currency=d["currency"],
            decline_code=d["decline_code"],
        )
    elif action.kind == "card_update":
        sandbox.state.update_payment_method(d["customer_id"], present=True)
    elif action.kind == "paid":
        sandbox.state.mark_paid(d["invoice_id"])


def run_demo(
    console: Console, *, subscriptions: int, days: int, seed: int, processes: int, directory: Path
) -> int:
    """Run the demo; returns the process exit code."""
    directory = directory.resolve()
    for stale in ("dunning.db", "dunning.db-wal", "dunning.db-shm", "outbox", "logs"):
        path = directory / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (directory / "policy.toml").write_text(DEMO_POLICY)
    started = time.monotonic()
    redis_proc = RedisProcess(directory / "redis")
    sandbox = SandboxServer(secret="demo-billing-secret", seed=seed)
    procs: list[subprocess.Popen[bytes]] = []
    rt: Runtime | None = None
    try:
        with console.status("starting Redis, the sandbox billing API, the scheduler and workers..."):
            redis_url = redis_proc.start()
            billing_url = sandbox.start()
            env = {
                **os.environ,
                "DUNNING_HOME": str(directory),
                "DUNNING_DATABASE_URL": f"sqlite:///{directory / 'dunning.db'}",
                "DUNNING_REDIS_URL": redis_url,
                "DUNNING_BILLING_URL": billing_url,
                "DUNNING_BILLING_SECRET": "demo-billing-secret",
                "DUNNING_CLOCK": "simulated",
                "DUNNING_POLICY": str(directory / "policy.toml"),
                "DUNNING_LINK_SECRET": "demo-link-secret",
                "DUNNING_TUNING_BACKOFF_BASE_S": "0.2",
                "DUNNING_TUNING_QUEUE_LEASE_S": "30",
                # Each simulated step is a chain of queues (events, jobs, mail); consumers idle since the
                # last step would each wait up to Dramatiq's 1 s backoff before picking up their part.
                "DUNNING_BROKER_IDLE_POLL_MS": "50",
            }
            env.pop("DUNNING_SMTP_URL", None)
            settings = load_settings(env)
            rt = build_runtime(settings, tuning=Tuning.from_env(env))
            upgrade(rt.engine)
            start = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
            rt.clock.set(start)  # type: ignore[attr-defined]
            procs.append(
                _spawn(["scheduler", "--poll", "0.02", "--batch", "1000"], env, logs / "scheduler.log")
            )
            procs.append(
                _spawn(["worker", "--processes", str(processes), "--threads", "4"], env, logs / "worker.log")
            )
            client = Client(redis_url)
            offers = OfferTaker(rt, client.broker)
            desk = PriceDesk(rt, offers.app)
        scenario = build_scenario(seed=seed, subscriptions=subscriptions, days=days, start=start)
        # Its own random stream and ids: the failed-payment story above is the same with or without it.
        story = build_lifecycle(seed=seed, subscriptions=subscriptions, days=days, start=start)
        prices = build_prices(seed=seed, subscriptions=subscriptions, days=days, start=start)
        actions = sorted(scenario.actions + story.actions + prices.actions, key=lambda a: a.at)
        console.print(
            f"[bold]dunning demo[/bold]: {subscriptions} subscriptions, {scenario.failures} failed renewals, "
            f"{days} simulated days from {start:%Y-%m-%d}; {processes} worker processes; data in {directory}"
        )
        g = story.groups
        console.print(
            f"and {sum(g.values())} lifecycle subscribers: {g['annual']} yearly renewing, "
            f"{g['trials_card']} trials with a card and {g['trials_no_card']} without, "
            f"{g['expiring_cards']} expiring cards, {g['temporary_upgrades']} temporary upgrades, "
            f"{g['long_tenure']} long-tenure monthly"
        )
        console.print(
            f"and {len(prices.roles)} monthly subscribers on a legacy plan, whose price the operator raises"
            f" at once (then `dunning prices launch ID`):\n  {command_line(migration_options(start))}",
            markup=False,
            highlight=False,
        )
        hands = {
            "accept_offer": lambda a: offers.accept(a.data["subscription_id"]),
            "price_choice": lambda a: desk.choose(a.data["subscription_id"], a.data["offer"]),
        }
        _play(
            console, rt, client, sandbox, hands, desk, actions, start=start, days=days, procs=procs, logs=logs
        )
        from dunning.devtools.gallery import write_gallery
        from dunning.mail.files import FileSender
        from dunning.ops import print_report

        index = FileSender(settings.outbox_dir).write_index() if settings.outbox_dir.exists() else None
        gallery = write_gallery(rt.renderer, settings.outbox_dir / "gallery")
        print_report(console, rt)
        print_lifecycle(console, lifecycle_summary(rt, sandbox))
        double_changes = 0
        if desk.migration_id is not None:
            priced = price_summary(rt, sandbox, desk.migration_id)
            print_prices(console, priced, CURRENT_MINOR)
            double_changes = priced.double_changes
        stats = sandbox.state.stats()
        charges = sum(stats["charges"].values())
        console.print(
            f"billing sandbox: {stats['calls']} calls, {charges} successful charges, "
            f"[bold]{stats['double_charges']} double charges[/bold], {stats['replays']} idempotent replays"
            + (
                f", {stats['paid_elsewhere_requests']} "
                + ("retry" if stats["paid_elsewhere_requests"] == 1 else "retries")
                + " refused because the invoice had just been paid elsewhere (before its invoice.paid"
                " event arrived)"
                if stats["paid_elsewhere_requests"]
                else ""
            )
        )
        with rt.sessions() as s:
            dead = s.execute(select(func.count()).select_from(DeadLetter)).scalar_one()
            dead += s.execute(select(func.count()).select_from(Job).where(Job.status == "dead")).scalar_one()
        console.print(f"dead letters: {dead}")
        if index:
            console.print(f"emails: {index}  (open it in a browser; .eml files beside it)")
        console.print(f"every email in every language: {gallery}")
        console.print(f"finished in {time.monotonic() - started:.1f}s")
        return 0 if stats["double_charges"] == 0 and double_changes == 0 else 1
    except DemoError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 1
    finally:
        with console.status("stopping everything the demo started..."):
            _stop(procs)
            sandbox.stop()
            redis_proc.stop()
            if rt is not None:
                rt.close()


def _by_hand(
    hands: dict[str, Callable[[Action], bool]], batch: list[Action], queue: list[Action], now: datetime
) -> None:
    """Customers answer an email (annual offer, price notice); one whose email has not gone out tries next step."""
    for action in (a for a in batch if a.kind in hands):
        try:
            done = hands[action.kind](action)
        except RuntimeError as exc:
            raise DemoError(str(exc)) from None
        if not done:
            queue.append(Action(now + STEP, action.kind, action.data))
            queue.sort(key=lambda a: a.at)


def _play(
    console: Console,
    rt: Runtime,
    client: Client,
    sandbox: SandboxServer,
    hands: dict[str, Callable[[Action], bool]],
    desk: PriceDesk,
    actions: list[Action],
    *,
    start: datetime,
    days: int,
    procs: list[subprocess.Popen[bytes]],
    logs: Path,
) -> None:
    end = start + timedelta(days=days)
    sent = 0
    queue = list(actions)
    now = start

    def counts() -> tuple[int, int, int]:
        with rt.sessions() as s:
            processed = s.execute(select(func.count()).select_from(ProcessedEvent)).scalar_one()
            parked = s.execute(select(func.count()).select_from(DeadLetter)).scalar_one()
            opened = s.execute(
                select(func.count()).select_from(Case).where(Case.status.in_(("open", "suspended")))
            ).scalar_one()
            return processed + parked, opened, 0

    def idle() -> bool:
        done, _, _ = counts()
        if done < sent:
            return False
        with rt.sessions() as s:
            return outstanding(s, now=now) == 0

    def anything_due(until: datetime) -> bool:
        # Claimed jobs too: the scheduler may claim a job the moment the clock moves, before the
        # worker runs it; a step that did not wait for it would let it run at a later step.
        with rt.sessions() as s:
            return outstanding(s, now=until) > 0

    with Progress(
        TextColumn("[bold]day {task.fields[day]:>2}[/bold]"),
        BarColumn(),
        TextColumn("{task.fields[open]} cases open · {task.fields[emails]} emails sent"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("demo", total=days * 4, day=0, open=0, emails=0)
        step = 0
        while now < end:
            batch = []
            while queue and queue[0].at <= now:
                batch.append(queue.pop(0))
            # Customers first: other events name them, and consumers run in parallel.
            customers = [a for a in batch if a.kind == "customer"]
            for action in customers:
                _send(client, sandbox, action)
            sent += len(customers)
            if customers:
                _wait("customers", idle, procs, logs)
            _by_hand(hands, batch, queue, now)
            events = [a for a in batch if a.kind not in BY_HAND]
            for action in events:
                _apply_to_sandbox(sandbox, action)
                _send(client, sandbox, action)
            sent += len(events)
            if batch or anything_due(now):
                _wait(f"day {(now - start).days} to settle", idle, procs, logs)
            # The operator's commands, once the subscriptions they select are stored.
            for action in (a for a in batch if a.kind == "price_launch"):
                try:
                    desk.launch(action.data)
                except RuntimeError as exc:
                    raise DemoError(str(exc)) from None
                _wait("the price notices", idle, procs, logs)
            now = rt.clock.advance(STEP)  # type: ignore[attr-defined]
            step += 1
            if step % 2 == 0 or now >= end:
                _, opened, _ = counts()
                with rt.sessions() as s:
                    emails = s.execute(
                        select(func.count()).select_from(Outbox).where(Outbox.status == "sent")
                    ).scalar_one()
                progress.update(task, completed=step, day=(now - start).days, open=opened, emails=emails)
        _wait("the last jobs", idle, procs, logs)
