"""Resident memory of worker processes over 100k jobs: does it grow?

    uv run python -m benchmarks.memory                       # 100,000 mixed ingest events
    uv run python -m benchmarks.memory --events 20000 --every 2000

``dunning worker -Q billing_events`` (2 processes x 8 threads) on PostgreSQL
consumes a stream of mixed billing events about seeded customers:
payment failures (most open a case, render and queue a notice), invoices paid
(cases recovered, a second notice), card updates, customer and subscription
updates, cancellations, re-delivered duplicates and a few invalid events (parked
as dead letters). VmRSS of every worker process is read from
``/proc/<pid>/status`` at start and after every ``--every`` events; the curve is
printed and recorded. Flat (after the first sample) means no leak.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis

from benchmarks._common import (
    Workers,
    build_raw_messages,
    iso,
    loadavg,
    payment_failed_envelope,
    pick_decline,
    push_raw,
    queue_backlog,
    record,
    rss_kib,
    say,
    seed_customers,
    stack,
)

EVENTS_QUEUE, INGEST_ACTOR = "billing_events", "ingest_event"


def event_stream(n: int, customers: int, rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """A realistic mix whose references always resolve (customers and subscriptions are seeded)."""
    now = datetime.now(UTC)
    failed: list[tuple[str, int, int]] = []  # (invoice id, customer, amount) for later "paid" events
    out: list[dict[str, Any]] = []
    mix: dict[str, int] = {}
    for i in range(n):
        c = rng.randrange(customers)
        roll = rng.random()
        if roll < 0.45 or not failed:
            env = payment_failed_envelope(
                "mem", i, c, pick_decline(rng), amount=rng.choice((900, 4900, 9900))
            )
            failed.append((env["data"]["invoice"]["id"], c, env["data"]["invoice"]["amount_minor"]))
        elif roll < 0.57:
            inv, c, amount = failed[rng.randrange(len(failed))]
            env = {
                "id": f"evt_mem_{i}",
                "type": "invoice.paid",
                "occurred_at": iso(now),
                "data": {
                    "invoice": {
                        "id": inv,
                        "subscription_id": f"sub_{c:07d}",
                        "amount_minor": amount,  # the invoice's own: another amount is refused
                        "currency": "EUR",
                    }
                },
            }
        elif roll < 0.67:
            env = {
                "id": f"evt_mem_{i}",
                "type": "payment_method.updated",
                "occurred_at": iso(now),
                "data": {
                    "customer_id": f"cus_{c:07d}",
                    "payment_method": {
                        "present": True,
                        "brand": "mastercard",
                        "last4": f"{i % 10000:04d}",
                        "exp_month": 1,
                        "exp_year": 2031,
                    },
                },
            }
        elif roll < 0.80:
            env = {
                "id": f"evt_mem_{i}",
                "type": "customer.upserted",
                "occurred_at": iso(now),
                "data": {
                    "customer": {
                        "id": f"cus_{c:07d}",
                        "email": f"customer{c}+{i}@example.com",
                        "name": f"Customer {c} v{i}",
                        "locale": rng.choice(("en", "fr", "de")),
                        "timezone": "Europe/Paris",
                    }
                },
            }
        elif roll < 0.90:
            env = {
                "id": f"evt_mem_{i}",
                "type": "subscription.upserted",
                "occurred_at": iso(now),
                "data": {
                    "subscription": {
                        "id": f"sub_{c:07d}",
                        "customer_id": f"cus_{c:07d}",
                        "plan": rng.choice(("pro", "basic", "team")),
                        "status": "active",
                        "amount_minor": 4900,
                        "currency": "EUR",
                        "interval": "month",
                        "current_period_end": iso(now + timedelta(days=30)),
                    }
                },
            }
        elif roll < 0.93:
            env = {
                "id": f"evt_mem_{i}",
                "type": "subscription.canceled",
                "occurred_at": iso(now),
                "data": {"subscription_id": f"sub_{c:07d}", "reason": "customer asked"},
            }
        elif roll < 0.995:
            # A redelivery: the same event id again (a no-op by design).
            env = dict(out[rng.randrange(len(out))])
            env["_dup"] = True
        else:
            env = {
                "id": f"evt_mem_{i}",
                "type": "invoice.payment_failed",
                "occurred_at": "yesterday",
                "data": {},
            }
        kind = (
            "duplicate"
            if env.pop("_dup", False)
            else ("invalid" if env["occurred_at"] == "yesterday" else env["type"])
        )
        mix[kind] = mix.get(kind, 0) + 1
        out.append(env)
    return out, mix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--every", type=int, default=10_000, help="sample RSS every this many events")
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"loadavg_before": loadavg()}
    with stack("memory") as st:
        say(f"seeding {args.customers} customers; building {args.events} events")
        seed_customers(st.db_url, args.customers, seed=args.seed)
        events, mix = event_stream(args.events, args.customers, rng)
        results["mix"] = mix
        say(f"mix: {mix}")
        msgs = build_raw_messages(EVENTS_QUEUE, INGEST_ACTOR, [(e,) for e in events])
        client = redis.Redis.from_url(st.redis.url)
        conn = psycopg.connect(st.pg.conninfo("bench"), autocommit=True)
        cmd = ["-m", "dunning", "worker", "--processes", str(args.processes), "--threads", str(args.threads),
               "-Q", EVENTS_QUEUE]  # fmt: skip
        with Workers(cmd, st.env(), st.work / "memory-workers.log", args.processes) as w:
            pids = w.worker_pids()
            say(f"worker processes {pids} (parent {w.pid})")
            curve: list[dict[str, Any]] = [
                {"events": 0, "t_s": 0.0, "rss_mib": [round(rss_kib(p) / 1024, 1) for p in pids],
                 "parent_rss_mib": round(rss_kib(w.pid) / 1024, 1)}
            ]  # fmt: skip
            t0 = time.perf_counter()
            push_raw(client, EVENTS_QUEUE, msgs)
            next_mark = args.every
            while True:
                pending = queue_backlog(client, EVENTS_QUEUE) + queue_backlog(client, f"{EVENTS_QUEUE}.DQ")
                done = args.events - pending
                while done >= next_mark:
                    point = {
                        "events": next_mark,
                        "t_s": round(time.perf_counter() - t0, 1),
                        "rss_mib": [round(rss_kib(p) / 1024, 1) for p in pids],
                        "parent_rss_mib": round(rss_kib(w.pid) / 1024, 1),
                    }
                    curve.append(point)
                    say(f"{next_mark:>7} events, {point['t_s']:7.1f}s: RSS MiB {point['rss_mib']}")
                    next_mark += args.every
                if done >= args.events or next_mark > args.events:
                    break
                if time.perf_counter() - t0 > args.timeout:
                    raise TimeoutError(f"{done} of {args.events} after {args.timeout}s")
                time.sleep(0.2)
            elapsed = time.perf_counter() - t0
            alive = [p for p in pids if rss_kib(p) > 0]
        outcomes = {
            "processed_events": conn.execute("SELECT count(*) FROM processed_events").fetchone()[0],  # type: ignore[index]
            "cases_by_status": dict(conn.execute("SELECT status, count(*) FROM cases GROUP BY 1").fetchall()),
            "outbox": conn.execute("SELECT count(*) FROM outbox").fetchone()[0],  # type: ignore[index]
            "dead_letters": conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0],  # type: ignore[index]
            "dead_letters_by_reason": {
                f"{etype}: {field or '-'}: {reason[:120]}": n
                for etype, field, reason, n in conn.execute(
                    "SELECT error_type, field, reason, count(*) FROM dead_letters GROUP BY 1, 2, 3 ORDER BY 4 DESC"
                ).fetchall()
            },
        }
        conn.close()
    first = curve[1]["rss_mib"] if len(curve) > 1 else curve[0]["rss_mib"]
    last = curve[-1]["rss_mib"]
    growth = [round(b - a, 1) for a, b in zip(first, last, strict=False)]
    results.update(
        {
            "elapsed_s": round(elapsed, 1),
            "rate": round(args.events / elapsed, 1),
            "curve": curve,
            "growth_after_first_sample_mib": growth,
            "workers_survived": len(alive) == len(pids),
            "outcomes": outcomes,
        }
    )
    results["loadavg_after"] = loadavg()
    print()
    say(f"SUMMARY {args.events} events in {elapsed:.0f}s ({args.events / elapsed:.0f}/s)")
    print("   events   " + "  ".join(f"pid{i} MiB" for i in range(len(first))))
    for pt in curve:
        print(f"  {pt['events']:>7}   " + "  ".join(f"{x:8.1f}" for x in pt["rss_mib"]))
    say(f"growth from the first sample ({args.every} events) to the last: {growth} MiB; outcomes {outcomes}")
    record("memory", vars(args), results)


if __name__ == "__main__":
    main()
