"""The scheduler at scale: claim cost with 1M (and 10M) pending jobs, and a sustained 1,000 jobs/s.

    uv run python -m benchmarks.scheduler                          # 1M rows
    uv run python -m benchmarks.scheduler --rows 1000000 10000000  # 1M, then grown to 10M (needs ~5 GB)

For each table size (the table is grown in place, ``INSERT ... SELECT generate_series``):

* the jobs table holds ``rows`` jobs: ``--finished`` of them done (history,
  outside the partial index), the rest pending with due times spread over the
  next year; plus a slice of ``--due-now`` pending jobs already due;
* ``VACUUM ANALYZE`` (what autovacuum would have done);
* ``EXPLAIN (ANALYZE, BUFFERS)`` of the exact claim statement ``tick`` sends
  (captured from SQLAlchemy), which must be an index scan on ``ix_jobs_pending_due``;
* ``dunning.engine.scheduler.tick`` with batch 500 and 1000, ``--reps`` times each,
  enqueuing into a real Redis: milliseconds per tick, and the split between the
  database part (claim + commit) and the broker part (one enqueue per job).

Then, at the largest size, the sustained test: a real ``dunning scheduler``
process (defaults: poll 0.5 s, batch 500) while this process inserts jobs due
now at ``--rate`` per second for ``--seconds``; claimed/s, backlog over time,
and the lag from due time to claim (from ``lease_until``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import threading
import time
from typing import Any

import psycopg
import redis

from benchmarks._common import Stack, Workers, loadavg, record, say, stack

FILL_CHUNK = 1_000_000


def fill(conn: psycopg.Connection, start: int, count: int, finished: float) -> float:
    """Insert ``count`` jobs numbered from ``start``: history (done) and pending due within a year."""
    t0 = time.perf_counter()
    for lo in range(start, start + count, FILL_CHUNK):
        hi = min(start + count, lo + FILL_CHUNK) - 1
        conn.execute(
            """
            INSERT INTO jobs (key, kind, queue, case_id, outbox_id, payload, status, due_at, retry_at,
                              lease_until, claims, runs, crashes, created_at, finished_at)
            SELECT 'bench:' || g,
                   (ARRAY['retry','notice','suspend','end','send_email'])[1 + mod(g, 5)],
                   CASE WHEN mod(g, 5) = 4 THEN 'mail' ELSE 'dunning' END,
                   g / 6, NULL, NULL,
                   CASE WHEN r < %(f)s THEN 'done' ELSE 'pending' END,
                   CASE WHEN r < %(f)s THEN now() - (random() * interval '365 days')
                        ELSE now() + interval '1 hour' + (random() * interval '365 days') END,
                   NULL, NULL,
                   CASE WHEN r < %(f)s THEN 1 ELSE 0 END,
                   CASE WHEN r < %(f)s THEN 1 ELSE 0 END,
                   0, now(),
                   CASE WHEN r < %(f)s THEN now() ELSE NULL END
            FROM (SELECT g, random() AS r FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g) s
            """,
            {"lo": lo, "hi": hi, "f": finished},
        )
        say(f"  filled jobs {lo:,}..{hi:,} ({time.perf_counter() - t0:.0f}s)")
    return time.perf_counter() - t0


def add_due_now(conn: psycopg.Connection, tag: str, count: int) -> None:
    """Pending jobs already due (within the last hour)."""
    conn.execute(
        """
        INSERT INTO jobs (key, kind, queue, case_id, status, due_at, claims, runs, crashes, created_at)
        SELECT 'due:' || %(tag)s || ':' || g, 'notice', 'dunning', g, 'pending',
               now() - (random() * interval '1 hour'), 0, 0, 0, now()
        FROM generate_series(1, %(n)s) g
        """,
        {"tag": tag, "n": count},
    )


def sizes(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        """
        SELECT 'table+indexes', pg_size_pretty(pg_total_relation_size('jobs'))
        UNION ALL SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid))
        FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
        WHERE i.indrelid = 'jobs'::regclass
        """
    ).fetchall()
    return {str(k): str(v) for k, v in rows}


class ClaimCapture:
    """Captures the SQL and parameters of the claim SELECT that ``claim_due`` sends."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.statement: str | None = None
        self.params: Any = None

        @event.listens_for(engine, "before_cursor_execute")
        def _capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            if (
                self.statement is None
                and "SKIP LOCKED" in statement
                and "status" in statement
                and "due_at" in statement
            ):
                self.statement, self.params = statement, params


def explain(rt: Any, capture: ClaimCapture) -> str:
    assert capture.statement is not None
    with rt.engine.connect() as conn:
        trans = conn.begin()
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + capture.statement, capture.params).all()
        trans.rollback()
    return "\n".join(r[0] for r in rows)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure_ticks(rt: Any, broker: Any, batch: int, reps: int) -> dict[str, Any]:
    from dunning.broker.enqueue import send_jobs
    from dunning.engine.jobs import claim_due
    from dunning.engine.scheduler import tick
    from dunning.store.db import transaction

    totals, got = [], []
    for _ in range(reps):
        t = time.perf_counter()
        res = tick(rt, broker, batch=batch)
        totals.append(1000 * (time.perf_counter() - t))
        got.append(res.enqueued)
    # The same work split in two: database (claim + commit), then broker (enqueue each job).
    db_ms, broker_ms = [], []
    for _ in range(max(5, reps // 3)):
        t = time.perf_counter()
        with transaction(rt.sessions) as session:
            claimed = claim_due(
                session,
                now=rt.clock.now(),
                batch=batch,
                queue_lease_s=rt.tuning.queue_lease_s,
                max_crashes=rt.tuning.max_crashes,
            )
        t1 = time.perf_counter()
        send_jobs(broker, claimed.dispatch)
        t2 = time.perf_counter()
        db_ms.append(1000 * (t1 - t))
        broker_ms.append(1000 * (t2 - t1))
    return {
        "batch": batch,
        "reps": reps,
        "enqueued_per_tick_min": min(got),
        "tick_ms_median": round(statistics.median(totals), 1),
        "tick_ms_p95": round(pct(totals, 0.95), 1),
        "tick_ms_max": round(max(totals), 1),
        "claim_db_ms_median": round(statistics.median(db_ms), 1),
        "enqueue_redis_ms_median": round(statistics.median(broker_ms), 1),
        "jobs_per_s_one_scheduler": round(batch / (statistics.median(totals) / 1000), 0),
    }


def sustained(
    st: Stack, conn: psycopg.Connection, rate: int, seconds: float, lease_s: float
) -> dict[str, Any]:
    """A real ``dunning scheduler`` process while jobs become due at ``rate`` per second."""
    # Nothing else due: leftovers of the tick measurements would only add a backlog to chew first.
    conn.execute("UPDATE jobs SET status = 'canceled' WHERE status = 'pending' AND due_at <= now()")
    tag = f"sus{rate}"
    log = st.work / f"scheduler-{rate}.log"
    sched = Workers(["-m", "dunning", "scheduler"], st.env(), log, processes=0)
    sched.start()
    time.sleep(2.0)
    stop = threading.Event()
    inserted = [0]

    def inserter() -> None:
        ins = psycopg.connect(st.pg.conninfo("bench"), autocommit=True)
        step = 0.1
        per_step = max(1, round(rate * step))
        t_next = time.perf_counter()
        while not stop.is_set():
            n = inserted[0]
            ins.execute(
                """
                INSERT INTO jobs (key, kind, queue, case_id, status, due_at, claims, runs, crashes, created_at)
                SELECT %(tag)s || ':' || g, 'notice', 'dunning', g, 'pending', now(), 0, 0, 0, now()
                FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
                """,
                {"tag": tag, "lo": n, "hi": n + per_step - 1},
            )
            inserted[0] += per_step
            t_next += step
            time.sleep(max(0.0, t_next - time.perf_counter()))
        ins.close()

    cpu0 = (sched.cpu(), st.pg_cpu())
    th = threading.Thread(target=inserter, daemon=True)
    t0 = time.perf_counter()
    th.start()
    backlog = []
    while time.perf_counter() - t0 < seconds:
        time.sleep(1.0)
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE status = 'pending' AND due_at <= now() AND key LIKE %s",
            (f"{tag}:%",),
        ).fetchone()
        backlog.append(int(row[0]))  # type: ignore[index]
    stop.set()
    th.join()
    elapsed = time.perf_counter() - t0
    time.sleep(1.5)  # let the scheduler take the last inserts
    cpu1 = (sched.cpu(), st.pg_cpu())
    sched.stop()
    row = conn.execute(
        """
        SELECT count(*) FILTER (WHERE status = 'claimed'),
               count(*) FILTER (WHERE status = 'pending'),
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                   ORDER BY extract(epoch FROM (lease_until - make_interval(secs => %(lease)s)) - due_at))
                   FILTER (WHERE status = 'claimed'),
               max(extract(epoch FROM (lease_until - make_interval(secs => %(lease)s)) - due_at))
        FROM jobs WHERE key LIKE %(p)s
        """,
        {"lease": lease_s, "p": f"{tag}:%"},
    ).fetchone()
    assert row is not None
    claimed, pending, lag_pcts, lag_max = row
    return {
        "target_rate": rate,
        "seconds": round(elapsed, 1),
        "inserted": inserted[0],
        "insert_rate": round(inserted[0] / elapsed, 1),
        "claimed": int(claimed),
        "left_pending": int(pending),
        "claimed_per_s": round(int(claimed) / elapsed, 1),
        "lag_s_p50_p95_p99": [round(float(x), 3) for x in lag_pcts] if lag_pcts else None,
        "lag_s_max": round(float(lag_max), 3) if lag_max is not None else None,
        "backlog_due_unclaimed_per_second": backlog,
        "backlog_max": max(backlog) if backlog else 0,
        "scheduler_cpu_s": round(cpu1[0] - cpu0[0], 2),
        "postgres_cpu_s": round(cpu1[1] - cpu0[1], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000], help="table sizes, ascending")
    p.add_argument("--finished", type=float, default=0.5, help="fraction of rows that are finished history")
    p.add_argument("--due-now", type=int, default=60_000, help="pending rows already due, per size")
    p.add_argument("--batches", type=int, nargs="+", default=[500, 1000])
    p.add_argument("--reps", type=int, default=30, help="ticks per batch size")
    p.add_argument("--rate", type=int, nargs="+", default=[1000], help="jobs becoming due per second")
    p.add_argument("--seconds", type=float, default=60, help="length of each sustained run")
    args = p.parse_args()
    need = max(args.rows) * 500 / 1e9
    free = shutil.disk_usage("/tmp").free / 1e9
    say(f"disk: {free:.0f} GB free under /tmp, this run needs about {need:.1f} GB")
    if need * 1.5 > free:
        raise SystemExit("not enough disk space")
    results: dict[str, Any] = {"loadavg_before": loadavg(), "sizes": []}
    with stack("scheduler") as st:
        st.use_in_process()
        from dunning.broker.setup import build_broker
        from dunning.runtime import build_runtime

        broker = build_broker(st.redis.url)
        rt = build_runtime()
        capture = ClaimCapture(rt.engine)
        conn = psycopg.connect(st.pg.conninfo("bench"), autocommit=True)
        rclient = redis.Redis.from_url(st.redis.url)
        have = 0
        for size in args.rows:
            say(f"growing jobs to {size:,} rows")
            fill_s = fill(conn, have + 1, size - have, args.finished)
            have = size
            add_due_now(conn, str(size), args.due_now)
            t = time.perf_counter()
            conn.execute("VACUUM ANALYZE jobs")
            vacuum_s = time.perf_counter() - t
            entry: dict[str, Any] = {
                "rows": size,
                "fill_s": round(fill_s, 1),
                "vacuum_analyze_s": round(vacuum_s, 1),
                "relation_sizes": sizes(conn),
                "pending": conn.execute("SELECT count(*) FROM jobs WHERE status = 'pending'").fetchone()[0],  # type: ignore[index]
                "ticks": [],
                "plans": {},
            }
            say(f"sizes: {entry['relation_sizes']}; pending {entry['pending']:,}")
            for batch in args.batches:
                capture.statement = None
                from dunning.engine.scheduler import tick

                tick(rt, broker, batch=batch)  # warm + capture the statement
                plan = explain(rt, capture)
                entry["plans"][str(batch)] = plan
                ok = "ix_jobs_pending_due" in plan and "Seq Scan" not in plan
                print(f"--- EXPLAIN ANALYZE of the claim, batch {batch}, {size:,} rows ---\n{plan}\n---")
                say(f"index scan on ix_jobs_pending_due and no seq scan: {ok}")
                m = measure_ticks(rt, broker, batch, args.reps)
                m["plan_uses_partial_index_no_seq_scan"] = ok
                entry["ticks"].append(m)
                say(
                    f"{size:,} rows, batch {batch}: tick {m['tick_ms_median']} ms median "
                    f"(p95 {m['tick_ms_p95']}, max {m['tick_ms_max']}): claim+commit {m['claim_db_ms_median']} ms, "
                    f"Redis enqueue {m['enqueue_redis_ms_median']} ms -> {m['jobs_per_s_one_scheduler']:,.0f} jobs/s"
                )
            results["sizes"].append(entry)
            rclient.flushdb()
        results["sustained"] = []
        for rate in args.rate:
            say(f"sustained: {rate} jobs/s becoming due for {args.seconds:.0f}s, one `dunning scheduler`")
            s = sustained(st, conn, rate, args.seconds, rt.tuning.queue_lease_s)
            s["rows"] = have
            results["sustained"].append(s)
            say(
                f"sustained {rate}/s: inserted {s['insert_rate']}/s, claimed {s['claimed_per_s']}/s, "
                f"left pending {s['left_pending']}, lag p50/p95/p99 {s['lag_s_p50_p95_p99']} s (max {s['lag_s_max']}), "
                f"backlog max {s['backlog_max']}; scheduler CPU {s['scheduler_cpu_s']}s, PostgreSQL CPU {s['postgres_cpu_s']}s"
            )
            rclient.flushdb()
        results["postgres"] = {"version": st.pg_version(), **st.pg_show("shared_buffers", "fsync")}
        conn.close()
        rt.close()
    results["loadavg_after"] = loadavg()
    print()
    for e in results["sizes"]:
        for m in e["ticks"]:
            say(
                f"SUMMARY {e['rows']:>11,} rows  batch {m['batch']:>5}: tick {m['tick_ms_median']:7.1f} ms "
                f"(db {m['claim_db_ms_median']:.1f} + redis {m['enqueue_redis_ms_median']:.1f}), index scan: "
                f"{m['plan_uses_partial_index_no_seq_scan']}"
            )
    for s in results["sustained"]:
        say(
            f"SUMMARY sustained {s['target_rate']}/s -> claimed {s['claimed_per_s']}/s, lag p99 {s['lag_s_p50_p95_p99']}"
        )
    record("scheduler", vars(args), results)


if __name__ == "__main__":
    main()
