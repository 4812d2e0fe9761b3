"""Ingest of ``subscription.upserted`` (the lifecycle planner and reconcile) against the same no-ops.

    uv run python -m benchmarks.lifecycle_ingest --threads 32 --events 10000 --noop-messages 30000

Same stack and method as :mod:`benchmarks.ingest` (PostgreSQL, a seeded
customer base with history, real ``dunning worker`` processes on the events
queue, events pre-built and pipelined onto Redis): each event changes an
existing subscription so that the planner has work to do: a third become
yearly with a renewal 20-60 days out (renewal notices), a third start a trial
ending in 5-15 days (trial reminders), a third are monthly with a card
expiring before the renewal and a temporary upgrade (pre-dunning and upgrade
prompts). Done = the events' ids in ``processed_events``. A second timed run
(``--quiet-events``) sends monthly renewals of subscriptions seen once before:
the planner and the reconcile run, and nothing new is planned. The summary line
compares both steady rates with the product's no-op and the plain Dramatiq no-op
measured in the same run, and gives the events per transaction (group commits).
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis

from benchmarks import _profile
from benchmarks._common import (
    Stack,
    build_raw_messages,
    fmt_rate,
    iso,
    loadavg,
    push_raw,
    record,
    say,
    seed_customers,
    stack,
    steady_rate,
    wait_for_count,
)
from benchmarks.ingest import (
    EVENTS_QUEUE,
    INGEST_ACTOR,
    PLAIN_NOOP_ACTOR,
    PLAIN_NOOP_QUEUE,
    ServerStatements,
    Workers,
    cpu_delta,
    cpu_snapshot,
    run_noop,
    sql_kind,
)


def subscription_event(
    run: str, i: int, customer: int, rng: random.Random, *, quiet: bool = False
) -> dict[str, Any]:
    """A ``subscription.upserted`` that gives the planner something to plan.

    ``quiet``: a monthly renewal instead (the period moves on a month; card far from
    expiry, no trial, no upgrade), the commonest upsert in a real billing system. The
    first one of a subscription plans its annual-switch offer (at the tenure threshold);
    a later one plans nothing new.
    """
    now = datetime.now(UTC)
    sub: dict[str, Any] = {
        "id": f"sub_{customer:07d}",
        "customer_id": f"cus_{customer:07d}",
        "plan": "pro",
        "status": "active",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        "current_period_end": iso(now + timedelta(days=rng.randint(20, 60))),
    }
    shape = i % 3
    if quiet:
        sub["current_period_end"] = iso(now + timedelta(days=rng.randint(28, 31)))
    elif shape == 0:
        sub.update(interval="year", amount_minor=49000)
    elif shape == 1:
        end = iso(now + timedelta(days=rng.randint(5, 15)))
        sub.update(status="trialing", trial_end=end, current_period_end=end)
    else:
        sub["payment_method"] = {
            "present": True,
            "brand": "visa",
            "last4": "4242",
            "exp_month": now.month,
            "exp_year": now.year,
        }
        sub["temporary_upgrade"] = {
            "plan": "max",
            "ends_at": iso(now + timedelta(days=rng.randint(5, 14))),
            "revert_to": "pro",
        }
    return {
        "id": f"evt_sub_{run}_{i}",
        "type": "subscription.upserted",
        "occurred_at": iso(now),
        "data": {"subscription": sub},
    }


def processed(conn: psycopg.Connection, run: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM processed_events WHERE id LIKE %s", (f"evt_sub_{run}_%",)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _next_xid(conn: psycopg.Connection) -> int:
    """The next transaction id PostgreSQL will assign (taking none): the write transactions so far.

    Every group commit writes, so it takes one id; the poller's counts take none. Unlike
    ``pg_stat_database.xact_commit``, it does not lag (a backend reports its statistics up
    to seconds after its transactions).
    """
    row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return int(row[0])


def push(
    st: Stack,
    client: redis.Redis,
    conn: psycopg.Connection,
    run: str,
    n: int,
    customers: int,
    rng: random.Random,
    timeout: float,
    workers: Workers | None = None,
    quiet: bool = False,
    picks: list[int] | None = None,
) -> dict[str, Any]:
    # Distinct customers per run: each event is a real change (a repeat of the same facts plans nothing new).
    picks = picks or rng.sample(range(customers), n)
    msgs = build_raw_messages(
        EVENTS_QUEUE,
        INGEST_ACTOR,
        [(subscription_event(run, i, c, rng, quiet=quiet),) for i, c in enumerate(picks)],
    )
    before = cpu_snapshot(st, workers) if workers else None
    client.config_resetstat()
    xid = _next_xid(conn)
    t0 = time.perf_counter()
    push_raw(client, EVENTS_QUEUE, msgs)
    curve = wait_for_count(lambda: processed(conn, run), n, timeout=timeout, poll=0.1, t0=t0)
    cpu = cpu_delta(before, cpu_snapshot(st, workers)) if workers and before else None
    commands = client.info("commandstats")
    writes = _next_xid(conn) - xid
    elapsed = curve[-1][0]
    out: dict[str, Any] = {
        "events": n,
        "elapsed_s": round(elapsed, 3),
        "rate_e2e": round(n / elapsed, 1),
        "rate_steady": round(steady_rate(curve, n), 1),
        "cpu_s": cpu,
        # Group commits: the write transactions over the run (worker heartbeats included, a few).
        "events_per_transaction": round(n / max(writes, 1), 1),
        # Redis commands per event, all clients (the producer's pushes included): what a fetch costs.
        "redis_calls_per_event": {
            name.removeprefix("cmdstat_"): round(stat["calls"] / n, 3)
            for name, stat in sorted(commands.items(), key=lambda kv: -kv[1]["calls"])
            if stat["calls"] >= n / 100
        },
    }
    if cpu:
        # CPU per event of our own processes (the producer and poller are the benchmark's).
        out["cpu_ms_per_event"] = {k: round(1000 * cpu[k] / n, 3) for k in ("workers", "postgres", "redis")}
        out["cpu_ms_per_event"]["total"] = round(sum(out["cpu_ms_per_event"].values()), 3)
    return out


_LOGGED = re.compile(
    r"\[(\d+)\] app=(\S*) LOG:  (?:(?:statement|execute [^:]*): (.*)"
    r"|duration: ([\d.]+) ms(?:  (?:parse|bind|execute) [^:]*: (.*))?)"
)


def server_time(logged: str, n: int) -> dict[str, float]:
    """Milliseconds PostgreSQL spent per event on each kind of statement (``log_min_duration_statement = 0``).

    Parse and bind phases are logged with their text; the duration of a statement (or an
    execute phase) that ``log_statement`` logged already is not: it is the next bare duration
    line of the same backend.
    """
    last: dict[str, str] = {}
    spent: collections.Counter[str] = collections.Counter()
    for m in _LOGGED.finditer(logged):
        pid, app, text, ms, phase_text = m.groups()
        if app == "bench":
            continue
        if text is not None:
            last[pid] = sql_kind(text)
        elif phase_text is not None:
            spent[sql_kind(phase_text)] += float(ms)
        elif pid in last:
            spent[last.pop(pid)] += float(ms)
    return {k: round(v / n, 4) for k, v in spent.most_common()}


def profile(
    st: Stack,
    client: redis.Redis,
    conn: psycopg.Connection,
    workers: Workers,
    args: argparse.Namespace,
    customers: int,
    rng: random.Random,
) -> dict[str, Any]:
    """More events with PostgreSQL's statement log, then more again under py-spy (``--gil``).

    Apart: py-spy stops each worker process to sample it, which stretches the server's
    statement times (a backend waits for its worker) as much as the workers' rate.
    """
    st.pg_set(log_min_duration_statement="0")
    with ServerStatements(st) as server:
        run = push(st, client, conn, "stmt", args.profile_events, customers, rng, timeout=args.timeout)
    st.pg_set(log_min_duration_statement="-1")
    with st.pg.log_path.open("rb") as fh:
        fh.seek(server.offset)
        statements = fh.read()
    kept_log = Path(__file__).parent / "results" / "lifecycle-statements.log"
    kept_log.parent.mkdir(exist_ok=True)
    kept_log.write_bytes(statements)
    found: dict[str, Any] = {
        "rate_with_statement_log": run["rate_steady"],
        "statements_per_event": server.total(args.profile_events),
        "by_kind_per_event": server.per(args.profile_events),
        "server_ms_per_event": server_time(statements.decode(errors="replace"), args.profile_events),
    }
    say(f"real workers, server side: {found}")
    binary = _profile.find_py_spy()
    if binary is None:
        _profile.say_fallback("py-spy could not be installed")
        return found
    out = st.work / "lifecycle-pyspy.txt"
    spy = _profile.PySpy(binary, workers.pid, out, rate=250)
    found["rate_under_profiler"] = push(
        st, client, conn, "prof", args.profile_events, customers, rng, timeout=args.timeout
    )["rate_steady"]
    spy_log = spy.stop()
    if not out.exists():
        _profile.say_fallback(spy_log.strip()[-300:])
        return found
    # The parent only supervises; its samples are idle loops.
    found["pyspy"] = _profile.summarise(_profile.read_stacks(out, skip_processes={workers.pid}))
    _profile.print_summary("py-spy CPU profile of the worker processes", found["pyspy"])
    keep = Path(__file__).parent / "results" / "lifecycle-pyspy.txt"
    keep.parent.mkdir(exist_ok=True)
    keep.write_bytes(out.read_bytes())
    say(f"collapsed stacks kept in {keep.relative_to(Path(__file__).parent.parent)}")
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=5000, help="subscription.upserted events in the timed run")
    p.add_argument(
        "--quiet-events",
        type=int,
        default=None,
        help="after the timed run, this many monthly renewals that plan nothing (default: --events; 0: skip)",
    )
    p.add_argument("--noop-messages", type=int, default=20000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--profile-events",
        type=int,
        default=0,
        help="after the timed run, this many more events with the statement log, then under py-spy (0: skip)",
    )
    args = p.parse_args()
    if args.quiet_events is None:
        args.quiet_events = args.events
    customers = args.events + args.quiet_events + 2 * args.profile_events + 1000
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"loadavg_before": loadavg()}
    with stack("lifecycle-ingest") as st:
        say(f"seeding {customers} customers and subscriptions")
        results["seed_s"] = round(seed_customers(st.db_url, customers, seed=args.seed), 2)
        client = redis.Redis.from_url(st.redis.url)
        conn = psycopg.connect(st.pg.conninfo("bench") + " application_name=bench", autocommit=True)
        results["noop"] = run_noop(st, client, args)
        results["noop_plain_dramatiq"] = run_noop(
            st,
            client,
            args,
            module="benchmarks.noop_actor_plain",
            queue=PLAIN_NOOP_QUEUE,
            actor=PLAIN_NOOP_ACTOR,
        )
        cmd = [
            "-m",
            "dunning",
            "worker",
            "--processes",
            str(args.processes),
            "--threads",
            str(args.threads),
            "-Q",
            EVENTS_QUEUE,
        ]
        with Workers(cmd, st.env(), st.work / "lifecycle-workers.log", args.processes) as workers:
            # The warm-up uses customers the timed run does not touch.
            warm_rng = random.Random(args.seed + 1)
            push(st, client, conn, "warm", 300, customers, warm_rng, timeout=120)
            time.sleep(1.5)
            say(f"timed run: {args.events} subscription.upserted events")
            results["ingest"] = push(
                st, client, conn, "run", args.events, customers, rng, timeout=args.timeout, workers=workers
            )
            if args.quiet_events:
                # Subscriptions seen once already (their offer planned); the timed events are the next renewal.
                picks = rng.sample(range(customers), args.quiet_events)
                renewals = {"timeout": args.timeout, "quiet": True, "picks": picks}
                push(st, client, conn, "seen", args.quiet_events, customers, rng, **renewals)
                time.sleep(1.5)
                say(
                    f"timed run: {args.quiet_events} monthly renewals of known subscriptions (nothing new to plan)"
                )
                results["quiet"] = push(
                    st, client, conn, "quiet", args.quiet_events, customers, rng, workers=workers, **renewals
                )
            if args.profile_events:
                results["profile"] = profile(st, client, conn, workers, args, customers, rng)
        row = conn.execute("SELECT count(*) FROM jobs WHERE kind = 'lifecycle_notice'").fetchone()
        results["lifecycle_jobs"] = int(row[0]) if row else 0
        conn.close()
    plain = results["noop_plain_dramatiq"]["rate_steady"]
    results["ingest_vs_plain_ratio"] = round(results["ingest"]["rate_steady"] / plain, 3)
    results["ingest_vs_noop_ratio"] = round(
        results["ingest"]["rate_steady"] / results["noop"]["rate_steady"], 3
    )
    if "quiet" in results:
        results["quiet_vs_plain_ratio"] = round(results["quiet"]["rate_steady"] / plain, 3)
    results["loadavg_after"] = loadavg()
    say(
        f"SUMMARY subscription.upserted ingest {fmt_rate(results['ingest']['rate_steady'])} steady "
        f"({fmt_rate(results['ingest']['rate_e2e'])} end to end), {results['lifecycle_jobs']} notice jobs planned | "
        f"product no-op {fmt_rate(results['noop']['rate_steady'])} | plain Dramatiq no-op {fmt_rate(plain)} | "
        f"ingest {100 * results['ingest_vs_plain_ratio']:.1f}% of plain (target >= 40%), "
        f"{100 * results['ingest_vs_noop_ratio']:.1f}% of product no-op | CPU ms/event "
        f"{results['ingest'].get('cpu_ms_per_event')} | events per transaction "
        f"{results['ingest']['events_per_transaction']} | "
        + (
            f"monthly renewals (nothing new planned) {fmt_rate(results['quiet']['rate_steady'])} steady, "
            f"{100 * results['quiet_vs_plain_ratio']:.1f}% of plain, CPU ms/event "
            f"{results['quiet'].get('cpu_ms_per_event')} | "
            if "quiet" in results
            else ""
        )
        + f"others CPU-s: plain no-op "
        f"{(results['noop_plain_dramatiq'].get('cpu_s') or {}).get('others')}, ingest "
        f"{(results['ingest'].get('cpu_s') or {}).get('others')}"
    )
    record("lifecycle_ingest", {**vars(args), "customers": customers}, results)


if __name__ == "__main__":
    main()
