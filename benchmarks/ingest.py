"""Ingest throughput on PostgreSQL against a no-op Dramatiq actor, plus a profile of the ingest path.

    uv run python -m benchmarks.ingest                       # defaults: 5,000 events, 2 processes x 8 threads
    uv run python -m benchmarks.ingest --events 20000 --threads 16 --durable

One run does, on one Redis and one PostgreSQL started for it:

1. seeds N customers with a subscription each (not timed);
2. **no-op ceiling**: ``dramatiq benchmarks.noop_actor`` with the same processes
   and threads and the product's middleware; K messages pipelined onto Redis;
   rate until all are acknowledged;
3. **ingest**: ``dunning worker -Q billing_events`` (SMTP-less: the send jobs are
   queued on ``mail``, nobody consumes them); M ``invoice.payment_failed``
   events, pre-built and pipelined onto Redis; time from the first enqueue
   until M cases are open and M ``payment_failed`` outbox rows exist;
4. **profile**: the same again under py-spy (CPU samples of both worker
   processes), then an in-process, single-threaded, instrumented run of the
   actor's body (statements per event, where the wall time goes) with the
   server's own statement log as ground truth.

Rates are given end to end (first enqueue to last completion) and steady
(between 10 % and 90 % done: leaves out the idle consumers' back-off wake-up,
up to 1 s in Dramatiq, and the tail). The ratio uses steady rates.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

from benchmarks import _profile
from benchmarks._common import (
    Stack,
    Workers,
    build_raw_messages,
    fmt_rate,
    loadavg,
    machine_busy,
    payment_failed_envelope,
    pick_decline,
    push_raw,
    queue_backlog,
    record,
    say,
    seed_customers,
    stack,
    steady_rate,
    wait_for_count,
)

# Not imported from benchmarks.noop_actor: importing it sets up the product's broker in this
# process, which (with DUNNING_REDIS_URL not yet set) would start the install's embedded Redis.
NOOP_QUEUE = NOOP_ACTOR = "bench_noop"
PLAIN_NOOP_QUEUE = PLAIN_NOOP_ACTOR = "bench_noop_plain"

EVENTS_QUEUE, INGEST_ACTOR = "billing_events", "ingest_event"


def cpu_snapshot(st: Stack, workers: Workers) -> dict[str, float]:
    import os

    t = os.times()
    return {
        "workers": workers.cpu(),
        "postgres": st.pg_cpu(),
        "redis": st.redis_cpu(),
        "producer_and_poller": t.user + t.system,
        "machine_busy": machine_busy(),
    }


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per party during a phase; ``others`` is the rest of the machine (other sessions)."""
    d = {k: after[k] - before[k] for k in before}
    busy = d.pop("machine_busy")
    d["others"] = max(0.0, busy - sum(d.values()))
    return {k: round(v, 2) for k, v in d.items()}


# ---------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------


def run_noop(
    st: Stack,
    client: redis.Redis,
    args: argparse.Namespace,
    *,
    module: str = "benchmarks.noop_actor",
    queue: str = NOOP_QUEUE,
    actor: str = NOOP_ACTOR,
) -> dict[str, Any]:
    log = st.work / f"{module}.log"
    cmd = [
        "-m",
        "dramatiq",
        module,
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
    ]
    with Workers(cmd, st.env(), log, args.processes) as w:
        warm = build_raw_messages(queue, actor, [(i,) for i in range(1000)])
        push_raw(client, queue, warm)
        wait_for_count(lambda: 1000 - queue_backlog(client, queue), 1000, timeout=60)
        msgs = build_raw_messages(queue, actor, [(i,) for i in range(args.noop_messages)])
        time.sleep(1.5)  # let the consumers back off to idle, as the ingest consumers will be
        before = cpu_snapshot(st, w)
        t0 = time.perf_counter()
        push_s = push_raw(client, queue, msgs)
        curve = wait_for_count(
            lambda: args.noop_messages - queue_backlog(client, queue),
            args.noop_messages,
            timeout=args.timeout,
            poll=0.05,
            t0=t0,
        )
        cpu = cpu_delta(before, cpu_snapshot(st, w))
    elapsed = curve[-1][0]
    out = {
        "messages": args.noop_messages,
        "elapsed_s": round(elapsed, 3),
        "rate_e2e": round(args.noop_messages / elapsed, 1),
        "rate_steady": round(steady_rate(curve, args.noop_messages), 1),
        "producer_rate": round(len(msgs) / push_s, 1),
        "cpu_s": cpu,
    }
    say(
        f"{module}: {out['messages']} msgs in {elapsed:.2f}s: {fmt_rate(out['rate_e2e'])} end to end, "
        f"{fmt_rate(out['rate_steady'])} steady; producer {fmt_rate(out['producer_rate'])}; CPU s {cpu}"
    )
    return out


def max_ids(conn: psycopg.Connection) -> tuple[int, int]:
    row = conn.execute(
        "SELECT (SELECT coalesce(max(id), 0) FROM cases), (SELECT coalesce(max(id), 0) FROM outbox)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def ingest_counts(conn: psycopg.Connection, base: tuple[int, int]) -> tuple[int, int]:
    """Cases opened and payment_failed notices queued since ``base`` (runs do not overlap)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM cases WHERE id > %s),"
        " (SELECT count(*) FROM outbox WHERE id > %s AND kind = 'payment_failed')",
        base,
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def events_for(run: str, n: int, customers: int, rng: random.Random) -> list[tuple[Any, ...]]:
    # Each event fails a new invoice of a random customer: every event opens a case.
    return [(payment_failed_envelope(run, i, rng.randrange(customers), pick_decline(rng)),) for i in range(n)]


def push_events(
    st: Stack,
    client: redis.Redis,
    conn: psycopg.Connection,
    run: str,
    n: int,
    customers: int,
    rng: random.Random,
    *,
    timeout: float,
    workers: Workers | None = None,
) -> dict[str, Any]:
    msgs = build_raw_messages(EVENTS_QUEUE, INGEST_ACTOR, events_for(run, n, customers, rng))
    base = max_ids(conn)
    before = cpu_snapshot(st, workers) if workers else None
    t0 = time.perf_counter()
    push_s = push_raw(client, EVENTS_QUEUE, msgs)

    def done() -> int:
        return min(ingest_counts(conn, base))

    curve = wait_for_count(done, n, timeout=timeout, poll=0.1, t0=t0)
    cpu = cpu_delta(before, cpu_snapshot(st, workers)) if workers and before else None
    elapsed = curve[-1][0]
    return {
        "events": n,
        "elapsed_s": round(elapsed, 3),
        "rate_e2e": round(n / elapsed, 1),
        "rate_steady": round(steady_rate(curve, n), 1),
        "producer_rate": round(n / push_s, 1),
        "producer_s": round(push_s, 3),
        "cpu_s": cpu,
    }


def health(conn: psycopg.Connection, client: redis.Redis) -> dict[str, Any]:
    jobs = dict(conn.execute("SELECT status || ':' || kind, count(*) FROM jobs GROUP BY 1").fetchall())
    return {
        "dead_letters": conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0],  # type: ignore[index]
        "dramatiq_dead": int(client.zcard(f"dramatiq:{EVENTS_QUEUE}.XQ")),
        "delayed_retries": queue_backlog(client, f"{EVENTS_QUEUE}.DQ"),
        "mail_queue_backlog": queue_backlog(client, "mail"),
        "jobs": jobs,
    }


# ---------------------------------------------------------------------------
# In-process breakdown of one event's cost
# ---------------------------------------------------------------------------

_SQL_KIND = re.compile(
    r"^\s*(?:(SELECT)\b.*?\bFROM\s+(\w+)|(INSERT)\s+INTO\s+(\w+)|(UPDATE)\s+(\w+)|(DELETE)\s+FROM\s+(\w+)|(\w+))",
    re.S | re.I,
)


def sql_kind(statement: str) -> str:
    m = _SQL_KIND.match(statement)
    if not m:
        return statement[:30]
    g = [x for x in m.groups() if x]
    label = " ".join(g[:2]).upper() if len(g) >= 2 else g[0].upper()
    if "FOR UPDATE" in statement.upper():
        label += " FOR UPDATE"
    if "RETURNING" in statement.upper():
        label += " RETURNING"
    if "ON CONFLICT" in statement.upper():
        label += " ON CONFLICT"
    return label


class ServerStatements:
    """Counts what PostgreSQL received (``log_statement = all``) while the block runs."""

    def __init__(self, st: Stack) -> None:
        self.st = st
        self.counts: collections.Counter[str] = collections.Counter()

    def __enter__(self) -> ServerStatements:
        self.st.pg_set(log_statement="all", log_line_prefix="%m [%p] app=%a ")
        self.offset = self.st.pg.log_path.stat().st_size
        return self

    def __exit__(self, *exc: object) -> None:
        self.st.pg_set(log_statement="none")
        with self.st.pg.log_path.open("rb") as fh:
            fh.seek(self.offset)
            logged = fh.read().decode(errors="replace")
        # Only what the product sent: the benchmark's own connections say application_name=bench.
        for m in re.finditer(r"app=(\S*) LOG:  (?:statement|execute [^:]*): (.*)", logged):
            if m.group(1) != "bench":
                self.counts[sql_kind(m.group(2))] += 1

    def per(self, n: int) -> dict[str, float]:
        return {k: round(v / n, 3) for k, v in self.counts.most_common()}

    def total(self, n: int, *, exclude: tuple[str, ...] = ()) -> float:
        return round(sum(v for k, v in self.counts.items() if not k.startswith(exclude)) / n, 2)


def breakdown(st: Stack, client: redis.Redis, customers: int, n: int, rng: random.Random) -> dict[str, Any]:
    """Run the actor body in this process, one event at a time, with timers around each part."""
    st.use_in_process()
    import dramatiq
    import workers  # sets the global broker from DUNNING_REDIS_URL
    from dramatiq import Message
    from sqlalchemy import event as sa_event
    from sqlalchemy.orm import Session

    from dunning.broker.enqueue import send_jobs
    from dunning.broker.middleware import RunAlone
    from dunning.contract import parse_event
    from dunning.engine.ingest import ingest
    from dunning.runtime import get_runtime

    broker = workers.broker
    rt = get_runtime()
    guard = next(m for m in broker.middleware if isinstance(m, RunAlone))

    acc: dict[str, float] = collections.defaultdict(float)
    stmt_time: dict[str, float] = collections.defaultdict(float)
    stmt_count: collections.Counter[str] = collections.Counter()
    state: dict[str, Any] = {"on": False}

    def before_exec(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        conn.info["t0"] = time.perf_counter()

    def after_exec(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if state["on"]:
            kind = sql_kind(statement)
            stmt_time[kind] += time.perf_counter() - conn.info["t0"]
            stmt_count[kind] += 1

    def on_commit(conn: Any) -> None:
        state["commit_t0"] = time.perf_counter()

    def after_commit(session: Any) -> None:
        if state["on"] and "commit_t0" in state:
            acc["db_commit"] += time.perf_counter() - state.pop("commit_t0")

    def on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if state["on"]:
            acc["pool_checkouts"] += 1

    sa_event.listen(rt.engine, "before_cursor_execute", before_exec)
    sa_event.listen(rt.engine, "after_cursor_execute", after_exec)
    sa_event.listen(rt.engine, "commit", on_commit)
    sa_event.listen(rt.engine.pool, "checkout", on_checkout)
    sa_event.listen(Session, "after_commit", after_commit)

    real_render = rt.renderer.render

    def timed_render(ctx: Any) -> Any:
        t = time.perf_counter()
        try:
            return real_render(ctx)
        finally:
            if state["on"]:
                acc["render"] += time.perf_counter() - t

    rt.renderer.render = timed_render  # type: ignore[method-assign]

    def one(env: dict[str, Any]) -> None:
        msg = Message(queue_name=EVENTS_QUEUE, actor_name=INGEST_ACTOR, args=(env,), kwargs={}, options={})
        t0 = time.perf_counter()
        guard.before_process_message(broker, msg)
        t1 = time.perf_counter()
        event = parse_event(env)
        t2 = time.perf_counter()
        c0 = time.thread_time()
        outcome, dispatch = ingest(rt, event)
        c1 = time.thread_time()
        t3 = time.perf_counter()
        send_jobs(dramatiq.get_broker(), dispatch)
        t4 = time.perf_counter()
        guard.after_process_message(broker, msg)
        t5 = time.perf_counter()
        assert outcome == "case_opened", outcome
        if state["on"]:
            acc["run_alone"] += (t1 - t0) + (t5 - t4)
            acc["parse_event"] += t2 - t1
            acc["ingest"] += t3 - t2
            acc["ingest_cpu"] += c1 - c0
            acc["send_jobs"] += t4 - t3
            acc["total"] += t5 - t0
            acc["dispatched"] += len(dispatch)

    warm = events_for("bdwarm", 100, customers, rng)
    for (env,) in warm:
        one(env)

    # Ground truth from the server: every statement it received (BEGIN/COMMIT and pings included).
    envs = events_for("bd", n, customers, rng)
    with ServerStatements(st) as server:
        state["on"] = True
        t_all = time.perf_counter()
        for (env,) in envs:
            one(env)
        wall = time.perf_counter() - t_all
        state["on"] = False
    server_counts = server.counts

    # One Redis round trip, for scale (the worker also fetches and acks every message).
    pings = []
    for _ in range(200):
        t = time.perf_counter()
        client.ping()
        pings.append(time.perf_counter() - t)
    # And one PostgreSQL round trip.
    with psycopg.connect(st.pg.conninfo("bench") + " application_name=bench", autocommit=True) as c:
        sel = []
        for _ in range(200):
            t = time.perf_counter()
            c.execute("SELECT 1").fetchone()
            sel.append(time.perf_counter() - t)

    per = lambda x: round(1000 * x / n, 3)  # noqa: E731  ms per event
    sql_total = sum(stmt_time.values())
    ms = {
        "total": per(acc["total"]),
        "run_alone_middleware": per(acc["run_alone"]),
        "parse_event": per(acc["parse_event"]),
        "ingest": per(acc["ingest"]),
        "ingest.sql_execute": per(sql_total),
        "ingest.commit": per(acc["db_commit"]),
        "ingest.render": per(acc["render"]),
        "ingest.python_orm_other": per(acc["ingest"] - sql_total - acc["db_commit"] - acc["render"]),
        "ingest.cpu_of_thread": per(acc["ingest_cpu"]),
        "send_jobs_redis": per(acc["send_jobs"]),
    }
    out = {
        "events": n,
        "wall_s": round(wall, 3),
        "single_thread_rate": round(n / wall, 1),
        "ms_per_event": ms,
        "statements_per_event_client": round(sum(stmt_count.values()) / n, 2),
        "statements_per_event_server": round(sum(server_counts.values()) / n, 2),
        "transactions_per_event": round(acc["pool_checkouts"] / n, 2),
        "sql_by_kind": {
            k: {"per_event": round(stmt_count[k] / n, 2), "ms_per_event": per(stmt_time[k])}
            for k, _ in stmt_count.most_common()
        },
        "server_statements_by_kind": {k: round(v / n, 2) for k, v in server_counts.most_common()},
        "messages_enqueued_per_event": round(acc["dispatched"] / n, 2),
        "redis_ping_ms_median": round(1000 * statistics.median(pings), 3),
        "pg_select1_ms_median": round(1000 * statistics.median(sel), 3),
    }
    rt.renderer.render = real_render  # type: ignore[method-assign]

    # Deterministic profile of the same loop: which Python functions cost the CPU.
    import cProfile
    import pstats

    prof = cProfile.Profile()
    envs = events_for("bdprof", n, customers, rng)
    prof.enable()
    for (env,) in envs:
        one(env)
    prof.disable()
    stats = pstats.Stats(prof)
    total_tt = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{func} ({_short(file)}:{line})"))
    out["cprofile_ms_per_event_total"] = round(1000 * total_tt / n, 3)
    out["cprofile_top_self"] = [
        {"fn": name, "self_ms": round(1000 * tt / n, 3), "calls": round(nc / n, 1)}
        for tt, ct, nc, name in sorted(rows, reverse=True)[:25]
    ]
    out["cprofile_top_cumulative"] = [
        {"fn": name, "cum_ms": round(1000 * ct / n, 3), "calls": round(nc / n, 1)}
        for tt, ct, nc, name in sorted(rows, key=lambda r: r[1], reverse=True)[:60]
        if "dunning" in name
        or "sqlalchemy" in name
        or "psycopg" in name
        or "jinja2" in name
        or "render" in name
    ][:40]
    out["cprofile_by_library_self_ms"] = {}
    libs: collections.Counter[str] = collections.Counter()
    for (file, _line, _func), (_cc, _nc, tt, _ct, _c) in stats.stats.items():  # type: ignore[attr-defined]
        libs[_lib(file)] += tt
    out["cprofile_by_library_self_ms"] = {k: round(1000 * v / n, 3) for k, v in libs.most_common()}

    # Group commit (when the product has it): the actor hands the events its threads hold at
    # once to ``ingest_many``, one transaction for all. Cost per event by batch size, one thread.
    import dunning.engine.ingest as service

    many = getattr(service, "ingest_many", None)
    if many is not None:
        sweep = []
        for size in (1, 2, 4, 8, 16, 32):
            count = max(size * 10, (min(n, 480) // size) * size)
            events = [parse_event(e) for (e,) in events_for(f"gc{size}", count, customers, rng)]
            before_stmts = sum(stmt_count.values())
            failures = 0
            with ServerStatements(st) as server:
                state["on"] = True
                c0, t0 = time.thread_time(), time.perf_counter()
                for lo in range(0, count, size):
                    for result in many(rt, events[lo : lo + size]):
                        if isinstance(result, Exception):
                            failures += 1
                        else:
                            send_jobs(dramatiq.get_broker(), result[1])
                cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
                state["on"] = False
            sweep.append(
                {
                    "batch": size,
                    "events": count,
                    "failures": failures,
                    "ms_per_event_wall": round(1000 * wall / count, 3),
                    "ms_per_event_cpu": round(1000 * cpu / count, 3),
                    "events_per_s_one_thread": round(count / wall, 1),
                    "sqlalchemy_statements_per_event": round(
                        (sum(stmt_count.values()) - before_stmts) / count, 2
                    ),
                    "server_statements_per_event": server.total(count),
                }
            )
        out["group_commit_sweep"] = sweep
    return out


def _short(file: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _lib(file: str) -> str:
    short = _short(file)
    if short.startswith("~") or short.startswith("<"):
        return "builtins (C calls)"
    return short.split("/", 1)[0].removesuffix(".py")


def print_breakdown(bd: dict[str, Any]) -> None:
    ms = bd["ms_per_event"]
    say(f"in-process, one thread: {bd['single_thread_rate']:.0f} events/s, {ms['total']:.2f} ms per event")
    for k, v in ms.items():
        print(f"    {v:7.3f} ms  {k}")
    print(
        f"  statements per event: {bd['statements_per_event_client']} through SQLAlchemy, "
        f"{bd['statements_per_event_server']} received by the server; "
        f"{bd['transactions_per_event']} transaction(s); {bd['messages_enqueued_per_event']} message(s) enqueued"
    )
    print("  SQLAlchemy statements (per event, ms per event):")
    for k, v in bd["sql_by_kind"].items():
        print(f"    {v['per_event']:5.2f} x  {v['ms_per_event']:7.3f} ms  {k}")
    print("  server log (per event):")
    for k, v in bd["server_statements_by_kind"].items():
        print(f"    {v:5.2f} x  {k}")
    print(
        f"  cProfile, self time by library (ms per event, profiler overhead included; total {bd['cprofile_ms_per_event_total']} ms):"
    )
    for k, v in list(bd["cprofile_by_library_self_ms"].items())[:12]:
        print(f"    {v:7.3f} ms  {k}")
    print("  cProfile, top functions by self time (ms per event, calls per event):")
    for r in bd["cprofile_top_self"][:20]:
        print(f"    {r['self_ms']:7.3f} ms  {r['calls']:7.1f}  {r['fn']}")
    print("  cProfile, cumulative (ms per event):")
    for r in bd["cprofile_top_cumulative"][:30]:
        print(f"    {r['cum_ms']:7.3f} ms  {r['calls']:7.1f}  {r['fn']}")
    print(
        f"  round trips for scale: Redis PING {bd['redis_ping_ms_median']} ms, "
        f"PostgreSQL SELECT 1 {bd['pg_select1_ms_median']} ms"
    )


# ---------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=5000, help="payment_failed events in the timed run")
    p.add_argument("--customers", type=int, default=None, help="seeded customers (default: = events)")
    p.add_argument("--noop-messages", type=int, default=20000)
    p.add_argument(
        "--no-plain-noop",
        dest="plain_noop",
        action="store_false",
        help="skip the reference no-op on stock Dramatiq middleware",
    )
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument(
        "--all-queues",
        action="store_true",
        help="consume every queue (mail sends to .eml files) instead of -Q billing_events",
    )
    p.add_argument("--durable", action="store_true", help="PostgreSQL with fsync and synchronous_commit on")
    p.add_argument("--profile-events", type=int, default=3000, help="events in the py-spy run (0: skip)")
    p.add_argument("--breakdown-events", type=int, default=500, help="events in the in-process run (0: skip)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    customers = args.customers or args.events
    rng = random.Random(args.seed)
    results: dict[str, Any] = {}

    results["loadavg_before"] = loadavg()
    with stack("ingest", durable=args.durable) as st:
        results["postgres"] = {
            "version": st.pg_version(),
            **st.pg_show("fsync", "synchronous_commit", "shared_buffers"),
        }
        say(f"seeding {customers} customers and subscriptions")
        results["seed_s"] = round(seed_customers(st.db_url, customers, seed=args.seed), 2)
        client = redis.Redis.from_url(st.redis.url)
        conn = psycopg.connect(st.pg.conninfo("bench") + " application_name=bench", autocommit=True)

        say(
            f"no-op ceiling: {args.noop_messages} messages, {args.processes} processes x {args.threads} threads"
        )
        results["noop"] = run_noop(st, client, args)
        if args.plain_noop:
            say("reference: the same no-op on a bare RedisBroker with Dramatiq's default middleware")
            results["noop_plain_dramatiq"] = run_noop(
                st,
                client,
                args,
                module="benchmarks.noop_actor_plain",
                queue=PLAIN_NOOP_QUEUE,
                actor=PLAIN_NOOP_ACTOR,
            )

        queues = [] if args.all_queues else ["-Q", EVENTS_QUEUE]
        cmd = [
            "-m",
            "dunning",
            "worker",
            "--processes",
            str(args.processes),
            "--threads",
            str(args.threads),
            *queues,
        ]
        log = st.work / "ingest-workers.log"
        say(f"ingest: `dunning worker {' '.join(cmd[3:])}`")
        with Workers(cmd, st.env(), log, args.processes) as w:
            # Warm-up: lazy runtime, pool connections, Jinja environments per language.
            push_events(st, client, conn, "warm", 300, customers, rng, timeout=120)
            time.sleep(1.5)
            say(f"timed run: {args.events} invoice.payment_failed events")
            run = push_events(
                st, client, conn, "run", args.events, customers, rng, timeout=args.timeout, workers=w
            )
            results["ingest"] = run
            say(
                f"ingest: {run['events']} events in {run['elapsed_s']:.2f}s: {fmt_rate(run['rate_e2e'])} end to end, "
                f"{fmt_rate(run['rate_steady'])} steady; producer {fmt_rate(run['producer_rate'])} "
                f"({run['producer_s']:.2f}s for all); CPU s {run['cpu_s']}"
            )
            cpu = dict(run["cpu_s"])
            others = cpu.pop("others")
            results["ingest"]["cpu_ms_per_event"] = {
                k: round(1000 * v / args.events, 3) for k, v in cpu.items()
            }
            results["ingest"]["cpu_cores_used_by_benchmark"] = round(sum(cpu.values()) / run["elapsed_s"], 2)
            results["ingest"]["cpu_cores_used_by_others"] = round(others / run["elapsed_s"], 2)
            results["ingest_health"] = health(conn, client)
            say(f"health: {results['ingest_health']}")

            if args.profile_events:
                binary = _profile.find_py_spy()
                if binary is None:
                    _profile.say_fallback("py-spy could not be installed")
                else:
                    out = st.work / "pyspy.txt"
                    spy = _profile.PySpy(binary, w.pid, out, rate=100)
                    # The statement log also shows what the real workers send per event.
                    with ServerStatements(st) as server:
                        prof = push_events(
                            st,
                            client,
                            conn,
                            "prof",
                            args.profile_events,
                            customers,
                            rng,
                            timeout=args.timeout,
                        )
                    spy_log = spy.stop()
                    results["workers_server_statements"] = {
                        "events": args.profile_events,
                        "statements_per_event": server.total(args.profile_events),
                        "commits_per_event": round(server.counts["COMMIT"] / args.profile_events, 3),
                        "by_kind_per_event": server.per(args.profile_events),
                    }
                    say(f"real workers, server side: {results['workers_server_statements']}")
                    if out.exists():
                        # The parent only supervises; its samples are idle loops.
                        summary = _profile.summarise(_profile.read_stacks(out, skip_processes={w.pid}))
                        summary["rate_under_profiler"] = prof["rate_steady"]
                        results["pyspy"] = summary
                        _profile.print_summary("py-spy CPU profile of the worker processes", summary)
                        keep = Path(__file__).parent / "results" / "ingest-pyspy.txt"
                        keep.parent.mkdir(exist_ok=True)
                        keep.write_bytes(out.read_bytes())
                        say(f"collapsed stacks kept in {keep.relative_to(Path(__file__).parent.parent)}")
                    else:
                        _profile.say_fallback(spy_log.strip()[-300:])

        results["noop_vs_ingest_ratio"] = round(
            results["ingest"]["rate_steady"] / results["noop"]["rate_steady"], 3
        )
        # The machine is shared: CPU seconds per message are steadier than rates under foreign load.
        noop_cpu = results["noop"]["cpu_s"]
        ing_cpu = results["ingest"]["cpu_s"]
        results["noop_cpu_ms_per_msg"] = round(
            1000 * (noop_cpu["workers"] + noop_cpu["redis"]) / args.noop_messages, 3
        )
        results["ingest_cpu_ms_per_event"] = round(
            1000 * (ing_cpu["workers"] + ing_cpu["postgres"] + ing_cpu["redis"]) / args.events, 3
        )
        results["noop_vs_ingest_ratio_by_cpu"] = round(
            results["noop_cpu_ms_per_msg"] / results["ingest_cpu_ms_per_event"], 3
        )
        results["noop_vs_ingest_ratio_e2e"] = round(
            results["ingest"]["rate_e2e"] / results["noop"]["rate_e2e"], 3
        )

        if args.breakdown_events:
            say(f"in-process breakdown: {args.breakdown_events} events, one thread")
            try:
                results["breakdown"] = breakdown(st, client, customers, args.breakdown_events, rng)
                print_breakdown(results["breakdown"])
            except Exception as exc:  # the product changes under us: keep the figures already taken
                results["breakdown_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
                say(f"in-process breakdown failed: {results['breakdown_error']}")
        conn.close()

    plain = results.get("noop_plain_dramatiq")
    if plain:
        # The figures the architecture targets are against stock Dramatiq, on the same run.
        results["noop_vs_plain_ratio"] = round(results["noop"]["rate_steady"] / plain["rate_steady"], 3)
        results["ingest_vs_plain_ratio"] = round(results["ingest"]["rate_steady"] / plain["rate_steady"], 3)
    results["loadavg_after"] = loadavg()
    print()
    if plain:
        say(
            f"VS PLAIN DRAMATIQ  plain no-op {fmt_rate(plain['rate_steady'])} steady | product no-op "
            f"{100 * results['noop_vs_plain_ratio']:.1f}% of it (target >= 85%) | ingest "
            f"{100 * results['ingest_vs_plain_ratio']:.1f}% of it (target >= 40%)"
        )
    say(
        f"SUMMARY  ingest {fmt_rate(results['ingest']['rate_steady'])} steady "
        f"({fmt_rate(results['ingest']['rate_e2e'])} end to end) | no-op {fmt_rate(results['noop']['rate_steady'])} "
        f"steady ({fmt_rate(results['noop']['rate_e2e'])}) | ratio {100 * results['noop_vs_ingest_ratio']:.1f}% "
        f"(target >= 40%) | by CPU per message {results['noop_cpu_ms_per_msg']} ms vs "
        f"{results['ingest_cpu_ms_per_event']} ms = {100 * results['noop_vs_ingest_ratio_by_cpu']:.1f}% | "
        f"CPU used by other processes during the timed ingest: {results['ingest']['cpu_cores_used_by_others']} cores"
    )
    params = {k: v for k, v in vars(args).items()}
    params["customers"] = customers
    params["queues"] = "all" if args.all_queues else EVENTS_QUEUE
    record("ingest", params, results)


if __name__ == "__main__":
    main()
