"""``dunning prices`` plan + preview + launch at 100k and 1M subscriptions on PostgreSQL.

    uv run python -m benchmarks.prices                      # 100,000 then 1,000,000
    uv run python -m benchmarks.prices --sizes 100000 --reps 3

For each size, on a fresh database (same stack as the other benchmarks: a throw-away
PostgreSQL 15, ``fsync`` off): N subscriptions on the migrated plan (``pro``, EUR,
monthly, amounts 19/39/49 EUR, renewals spread over the next 30 days, a few past due
or trialing) plus N/10 that the migration must leave out (other plan, yearly, canceled,
already at the new price, quarterly, ending), and a customer each; seeded with
``generate_series`` in a few statements, then ``ANALYZE`` (not timed).

Timed, each as the operator runs it (``python -m dunning prices ...`` in a new process,
wall time from spawn to exit, so Python's start-up of ~0.5 s is included; CPU seconds of
the command and of PostgreSQL alongside):

1. ``plan`` (one ``INSERT ... SELECT`` of N members);
2. ``preview --json`` of the draft (N members joined to their subscriptions to estimate each
   apply date for a launch now) -- the issue's bar: < 10 s at 1M;
3. ``preview`` (the tables) and ``preview --csv`` (N rows streamed, to /dev/null);
4. ``launch --override-guardrail`` (members re-read, N notice jobs inserted);
5. ``preview --json`` and ``status --json`` of the launched migration (stored dates).

The preview is repeated ``--reps`` times (median, min, max), and also timed in this
process (``reports.preview`` alone: its SQL and sums, without a process start-up). Checks: members and
queued jobs equal N, the JSON's ``subscribers`` equals N.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg

from benchmarks._common import ROOT, Stack, loadavg, machine_busy, record, say, stack

NEW_AMOUNT = 5900


def seed(st: Stack, database: str, n: int) -> float:
    """N members-to-be and N/10 subscriptions to leave out, with their customers; returns seconds."""
    noise = n // 10
    started = time.perf_counter()
    with psycopg.connect(st.pg.conninfo(database), autocommit=True) as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            """
            INSERT INTO customers (id, email, name, locale, timezone, pm_present, updated_at)
            SELECT 'cus_' || lpad(i::text, 7, '0'), 'customer' || i || '@example.com', 'Customer ' || i,
                   (ARRAY['en', 'fr', 'de'])[1 + i %% 3], 'Europe/Paris', true, now()
            FROM generate_series(0, %(total)s - 1) AS i
            """,
            {"total": n + noise},
        )
        conn.execute(
            """
            INSERT INTO subscriptions (id, customer_id, plan, status, amount_minor, currency, interval,
                                       interval_count, current_period_end, cancel_at_period_end, access,
                                       updated_at, started_at)
            SELECT 'sub_' || lpad(i::text, 7, '0'), 'cus_' || lpad(i::text, 7, '0'), 'pro',
                   CASE WHEN i %% 100 = 0 THEN 'past_due' WHEN i %% 100 = 1 THEN 'trialing' ELSE 'active' END,
                   CASE WHEN i %% 20 = 0 THEN 1900 WHEN i %% 20 < 6 THEN 3900 ELSE 4900 END,
                   'EUR', 'month', 1, now() + random() * interval '30 days', false, 'active',
                   now(), now() - random() * interval '900 days'
            FROM generate_series(0, %(n)s - 1) AS i
            """,
            {"n": n},
        )
        conn.execute(
            """
            INSERT INTO subscriptions (id, customer_id, plan, status, amount_minor, currency, interval,
                                       interval_count, current_period_end, cancel_at_period_end, access,
                                       updated_at)
            SELECT 'sub_' || lpad(i::text, 7, '0'), 'cus_' || lpad(i::text, 7, '0'),
                   CASE WHEN i %% 6 = 0 THEN 'basic' ELSE 'pro' END,
                   CASE WHEN i %% 6 = 1 THEN 'canceled' ELSE 'active' END,
                   CASE WHEN i %% 6 = 2 THEN 5900 WHEN i %% 6 = 3 THEN 49000 ELSE 4900 END,
                   'EUR', CASE WHEN i %% 6 = 3 THEN 'year' ELSE 'month' END,
                   CASE WHEN i %% 6 = 4 THEN 3 ELSE 1 END,
                   now() + random() * interval '30 days', i %% 6 = 5, 'active', now()
            FROM generate_series(%(n)s, %(n)s + %(noise)s - 1) AS i
            """,
            {"n": n, "noise": noise},
        )
        conn.execute("ANALYZE")
    return time.perf_counter() - started


def cli(st: Stack, database: str, *args: str, out: Any = subprocess.PIPE) -> dict[str, Any]:
    """Run ``dunning ARGS`` in a new process; wall time, CPU of it and of PostgreSQL, and its stdout."""
    env = st.env(DUNNING_DATABASE_URL=st.pg.url(database), COLUMNS="120")
    # An installed command finds its bytecode cached after its first run; a session that turned
    # caching off would time Python compiling the product's sources (~2 s) on every run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg0, busy0 = st.pg_cpu(), machine_busy()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dunning", *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.PIPE
    )
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    # The child has been reaped: its CPU is in our own children's counters.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg = st.pg_cpu() - pg0
    busy = machine_busy() - busy0
    command = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"dunning {' '.join(args)} exited {proc.returncode}: {stderr.decode()[-2000:]}")
    return {
        "wall_s": round(wall, 3),
        "postgres_cpu_s": round(pg, 2),
        "command_cpu_s": round(command, 2),
        # CPU the rest of the machine used meanwhile (other sessions): above ~0.3 cores, figures suffer.
        "others_cpu_s": round(max(0.0, busy - pg - command), 2),
        "stdout": stdout.decode() if isinstance(stdout, bytes) else "",
    }


def in_process_preview(url: str, mid: str, reps: int) -> float:
    """Median seconds of ``reports.preview`` itself (the SQL and the sums, no process start-up)."""
    from datetime import UTC, datetime

    from dunning.store.db import make_engine, make_sessionmaker
    from dunning.workflows.price_migrations.reports import preview

    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    walls = []
    for _ in range(reps):
        with sessions() as session:
            t0 = time.perf_counter()
            preview(session, mid, now=datetime.now(UTC))
            walls.append(time.perf_counter() - t0)
    engine.dispose()
    say(f"  preview in process: {statistics.median(walls):.2f} s median of {reps}")
    return round(statistics.median(walls), 3)


def timed(results: dict[str, Any], name: str, runs: list[dict[str, Any]]) -> None:
    walls = [r["wall_s"] for r in runs]
    results[name] = {
        "wall_s_median": round(statistics.median(walls), 3),
        "wall_s_min": min(walls),
        "wall_s_max": max(walls),
        "postgres_cpu_s_median": round(statistics.median(r["postgres_cpu_s"] for r in runs), 2),
        "command_cpu_s_median": round(statistics.median(r["command_cpu_s"] for r in runs), 2),
        "others_cpu_s_max": max(r["others_cpu_s"] for r in runs),
        "runs": len(runs),
    }
    say(
        f"  {name}: {results[name]['wall_s_median']:.2f} s median of {len(runs)} (min {min(walls):.2f}, max {max(walls):.2f})"
    )


def run_size(st: Stack, n: int, reps: int) -> dict[str, Any]:
    database = f"prices_{n}"
    url = st.pg.create_database(database)
    from dunning.store.db import make_engine
    from dunning.store.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    out: dict[str, Any] = {"subscriptions": n + n // 10, "migrated": n}
    say(f"seeding {n:,} subscriptions on the plan and {n // 10:,} others")
    out["seed_s"] = round(seed(st, database, n), 2)
    cli(st, database, "prices", "list", "--json")  # warm-up: writes the bytecode caches
    # Start-up cost of a command that reads nothing (runtime, schema check, imports).
    out["cli_startup_s"] = cli(st, database, "prices", "list", "--json")["wall_s"]
    plan = cli(
        st, database, "prices", "plan", "--plan", "pro", "--currency", "EUR", "--new-amount", str(NEW_AMOUNT),
        "--effective", time.strftime("%Y-%m-%d", time.gmtime(time.time() + 40 * 86400)), "--grandfather-months", "1",
        "--offer", "step-up:20:6", "--offer", "annual-lock", "--offer", "downgrade:basic:1900",
        "--reason", "benchmark", "--json",
    )  # fmt: skip
    mid = json.loads(plan["stdout"])["id"]
    timed(out, "plan", [plan])
    drafts = [cli(st, database, "prices", "preview", mid, "--json") for _ in range(reps)]
    found = json.loads(drafts[0]["stdout"])
    assert found["subscribers"] == n, (found["subscribers"], n)
    out["above_guardrail"] = len(found["above_guardrail"])
    timed(out, "preview_draft_json", drafts)
    out["preview_draft_in_process_s"] = in_process_preview(url, mid, reps)
    timed(out, "preview_draft_table", [cli(st, database, "prices", "preview", mid)])
    timed(
        out,
        "preview_draft_csv",
        [cli(st, database, "prices", "preview", mid, "--csv", out=subprocess.DEVNULL)],
    )
    timed(out, "launch", [cli(st, database, "prices", "launch", mid, "--override-guardrail")])
    launched = [cli(st, database, "prices", "preview", mid, "--json") for _ in range(reps)]
    assert json.loads(launched[0]["stdout"])["subscribers"] == n
    timed(out, "preview_launched_json", launched)
    out["preview_launched_in_process_s"] = in_process_preview(url, mid, reps)
    status = cli(st, database, "prices", "status", mid, "--json")
    assert json.loads(status["stdout"])["counts"]["pending"] == n
    timed(out, "status_json", [status])
    with psycopg.connect(st.pg.conninfo(database), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE kind = 'price_notice' AND status = 'pending'"
        ).fetchone()
        out["notice_jobs"] = int(row[0]) if row else 0
    assert out["notice_jobs"] == n
    st.pg.drop_database(database)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--reps", type=int, default=3, help="previews per state (median)")
    args = p.parse_args()
    results: dict[str, Any] = {"loadavg_before": loadavg()}
    with stack("prices") as st:
        results["postgres"] = {
            "version": st.pg_version(),
            **st.pg_show("fsync", "shared_buffers", "work_mem"),
        }
        busy0, own0 = machine_busy(), st.pg_cpu()
        for n in args.sizes:
            results[f"n{n}"] = run_size(st, n, args.reps)
        results["machine_busy_s"] = round(machine_busy() - busy0, 1)
        results["postgres_cpu_s"] = round(st.pg_cpu() - own0, 1)
    results["loadavg_after"] = loadavg()
    for n in args.sizes:
        r = results[f"n{n}"]
        say(
            f"SUMMARY {n:,} members: plan {r['plan']['wall_s_median']:.1f} s, preview (draft, --json) "
            f"{r['preview_draft_json']['wall_s_median']:.1f} s, csv {r['preview_draft_csv']['wall_s_median']:.1f} s, "
            f"launch {r['launch']['wall_s_median']:.1f} s, preview (launched) {r['preview_launched_json']['wall_s_median']:.1f} s"
        )
    record("prices", vars(args), results)


if __name__ == "__main__":
    main()
