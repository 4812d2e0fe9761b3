"""Notices rendered and delivered per second: outbox rows -> ``deliver_email`` workers -> a real SMTP server.

    uv run python -m benchmarks.email                  # 3,000 emails, 2 processes x 8 threads
    uv run python -m benchmarks.email --emails 10000 --threads 16

1. **Rendering** (no servers): ``Renderer.render`` in one thread, every notice
   kind in en/fr/de, renders per second and milliseconds per kind.
2. **Delivery**: M cases with an outbox row each (rendered by the real
   renderer: ``payment_failed`` in mixed locales and decline classes) and a
   claimed ``send_email`` job are written straight into PostgreSQL (not timed).
   An SMTP sink (aiosmtpd, discarding) runs in its own process. ``dunning worker
   -Q mail`` runs 2 x 8; the M jobs are enqueued as the scheduler does (``send_jobs``,
   500 ``Dispatch`` items per call like one scheduler pass: ``deliver_email`` messages
   of up to ``--mail-batch`` ids) and the clock runs until every outbox row is ``sent``.
   Bare smtplib against the same sink is measured first, in the same run: one
   thread with one connection per message, and 4 threads keeping their
   connections (the best the sink does), so a slow sink or a busy machine is
   not mistaken for a slow product. Printed: delivered emails/s next to both,
   and the CPU per email (workers, PostgreSQL, Redis, sink).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from tests.support.servers import free_port

from benchmarks import _profile
from benchmarks._common import (
    ROOT,
    Stack,
    Workers,
    cpu_seconds,
    daytime_zones,
    fmt_rate,
    loadavg,
    machine_busy,
    pick_decline,
    record,
    say,
    seed_customers,
    stack,
    steady_rate,
    wait_for_count,
)
from benchmarks.smtp_sink import bare_smtplib, sink_ceiling

MAIL_QUEUE, PASS = "mail", 500  # PASS: jobs per send_jobs call, what one scheduler pass claims at most


def enqueue(broker: Any, ids: range, mail_batch: int) -> float:
    """Send the jobs' messages as the scheduler does, one pass at a time; returns seconds taken."""
    from dunning.broker.enqueue import send_jobs
    from dunning.engine.jobs import Dispatch

    started = time.perf_counter()
    for lo in range(0, len(ids), PASS):
        send_jobs(broker, [Dispatch(MAIL_QUEUE, i) for i in ids[lo : lo + PASS]], mail_batch=mail_batch)
    return time.perf_counter() - started


def context(kind: str, i: int, locale: str, tz: str, decline: str) -> Any:
    from dunning.workflows.failed_payments.declines import classify_decline
    from dunning.workflows.failed_payments.notices import NoticeContext

    now = datetime.now(UTC)
    return NoticeContext(
        kind=kind,
        customer_name=f"Customer {i}",
        customer_email=f"customer{i}@example.com",
        locale=locale,
        timezone=tz,
        plan="pro",
        amount_minor=4900,
        currency="EUR",
        decline_class=classify_decline(decline).value if kind == "payment_failed" else None,
        decline_reason=decline,
        next_retry_at=now + timedelta(days=2),
        suspend_at=now + timedelta(days=14),
        end_at=now + timedelta(days=21),
        end_action="cancel",
        was_suspended=False,
        action_url=f"http://localhost:8000/l/update_payment_method/{i}?sig=abcdef0123456789",
        card_brand="visa",
        card_last4="4242",
    )


def bench_render(n: int) -> dict[str, Any]:
    """Single-threaded Renderer.render rate over every kind and three languages."""
    from dunning.mail.render import Renderer
    from dunning.workflows.failed_payments.notices import KINDS

    r = Renderer()
    rng = random.Random(3)
    ctxs = [
        context(kind, i, loc, "Europe/Paris", pick_decline(rng))
        for i, (kind, loc) in enumerate((k, loc) for k in KINDS for loc in ("en", "fr", "de"))
    ]
    for c in ctxs:  # first use compiles templates and catalogs
        r.render(c)
    per_kind: dict[str, list[float]] = {k: [] for k in KINDS}
    sizes = []
    t0 = time.perf_counter()
    for j in range(n):
        c = ctxs[j % len(ctxs)]
        t = time.perf_counter()
        out = r.render(c)
        per_kind[c.kind].append(time.perf_counter() - t)
        sizes.append(len(out.html) + len(out.text))
    wall = time.perf_counter() - t0
    return {
        "renders": n,
        "renders_per_s": round(n / wall, 1),
        "ms_per_render": round(1000 * wall / n, 3),
        "ms_median_by_kind": {k: round(1000 * statistics.median(v), 3) for k, v in per_kind.items() if v},
        "bytes_html_plus_text_mean": int(statistics.mean(sizes)),
    }


def prepare(st: Stack, m: int, rng: random.Random) -> dict[str, Any]:
    """M open cases, each with a rendered payment_failed outbox row and a claimed send_email job."""
    from sqlalchemy import insert, text

    from dunning.mail.message import message_id_for
    from dunning.mail.render import Renderer
    from dunning.store.db import make_engine
    from dunning.store.models import Case, Customer, Job, Outbox

    engine = make_engine(st.db_url)
    renderer = Renderer()
    now = datetime.now(UTC)
    with engine.connect() as conn:
        customers = conn.execute(
            text("SELECT id, locale, timezone FROM customers ORDER BY id LIMIT :m"), {"m": m}
        ).all()
    _ = Customer
    render_s = 0.0
    batch = 1000
    for lo in range(0, m, batch):
        cases, outbox, jobs = [], [], []
        for i in range(lo, min(m, lo + batch)):
            cid, locale, tz = customers[i % len(customers)]
            decline = pick_decline(rng)
            ident = i + 1
            cases.append(
                {
                    "id": ident,
                    "invoice_id": f"in_mail_{ident}",
                    "subscription_id": cid.replace("cus_", "sub_"),
                    "customer_id": cid,
                    "plan": "pro",
                    "amount_minor": 4900,
                    "currency": "EUR",
                    "status": "open",
                    "decline_code": decline,
                    "first_decline_code": decline,
                    "has_payment_method": True,
                    "needs_new_payment_method": False,
                    "attempts_made": 0,
                    "scheduled_retries_made": 0,
                    "card_update_retries_used": 0,
                    "opened_at": now,
                    "recovered_minor": 0,
                    "policy_version": "bench",
                }
            )
            t = time.perf_counter()
            rendered = renderer.render(context("payment_failed", i, locale or "en", tz or "UTC", decline))
            render_s += time.perf_counter() - t
            key = f"payment_failed:{ident}:opened"
            outbox.append(
                {
                    "id": ident,
                    "key": key,
                    "kind": "payment_failed",
                    "case_id": ident,
                    "customer_id": cid,
                    "to_email": f"{cid}@example.com",
                    "locale": locale or "en",
                    "subject": rendered.subject,
                    "html": rendered.html,
                    "text": rendered.text,
                    "message_id": message_id_for(key),
                    "status": "pending",
                    "send_after": now,
                    "created_at": now,
                    "attempts": 0,
                }
            )
            jobs.append(
                {
                    "id": ident,
                    "key": f"send:{key}",
                    "kind": "send_email",
                    "queue": MAIL_QUEUE,
                    "case_id": ident,
                    "outbox_id": ident,
                    "payload": None,
                    "status": "claimed",
                    "due_at": now,
                    "retry_at": None,
                    "lease_until": now + timedelta(hours=2),
                    "claims": 1,
                    "runs": 0,
                    "crashes": 0,
                    "created_at": now,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(Case), cases)
            conn.execute(insert(Outbox), outbox)
            conn.execute(insert(Job), jobs)
    with engine.begin() as conn:
        for table in ("cases", "outbox", "jobs"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {m + 1})"))
    engine.dispose()
    return {"render_s": round(render_s, 3), "renders_per_s_while_preparing": round(m / render_s, 1)}


def sent_count(conn: psycopg.Connection, lo: int, hi: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM outbox WHERE id BETWEEN %s AND %s AND status = 'sent'", (lo, hi)
    ).fetchone()
    assert row is not None
    return int(row[0])


def main() -> None:
    from dunning.broker.setup import build_broker
    from dunning.runtime import Tuning

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emails", type=int, default=3000, help="emails in the timed run")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--mail-batch", type=int, default=Tuning().mail_batch, help="jobs per message at most")
    p.add_argument(
        "--profile-emails",
        type=int,
        default=1500,
        help="emails in a py-spy run after the timed one (0: skip)",
    )
    p.add_argument("--renders", type=int, default=3000, help="renders in the pure rendering measurement")
    p.add_argument("--sink-ceiling", type=int, default=1000, help="messages for the sink's own ceiling")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"loadavg_before": loadavg()}

    say(f"rendering: {args.renders} renders, one thread")
    results["render"] = bench_render(args.renders)
    r = results["render"]
    say(
        f"render: {fmt_rate(r['renders_per_s'])} ({r['ms_per_render']} ms each; "
        f"{r['bytes_html_plus_text_mean']} bytes html+text); median ms by kind {r['ms_median_by_kind']}"
    )

    total = args.warmup + args.emails + args.profile_emails
    with stack("email") as st:
        say(f"seeding {total} customers; preparing {total} cases + outbox rows + send jobs")
        seed_customers(st.db_url, total, seed=args.seed, zones=daytime_zones())
        results["prepare"] = prepare(st, total, rng)
        port = free_port()
        count_file = st.work / "sink-count"
        sink = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.smtp_sink",
                "--port",
                str(port),
                "--count-file",
                str(count_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert sink.stdout is not None
            sink.stdout.readline()  # "listening"
            results["sink_ceiling"] = sink_ceiling(port, args.sink_ceiling)
            say(f"SMTP sink alone (one client thread): {fmt_rate(results['sink_ceiling']['rate'])}")
            results["bare_smtplib"] = bare_smtplib(port, args.sink_ceiling, 4)
            say(f"bare smtplib, 4 threads, connections kept: {fmt_rate(results['bare_smtplib']['rate'])}")

            broker = build_broker(st.redis.url)
            conn = psycopg.connect(st.pg.conninfo("bench"), autocommit=True)
            env = st.env(DUNNING_SMTP_URL=f"smtp://127.0.0.1:{port}")
            cmd = [
                "-m", "dunning", "worker", "--processes", str(args.processes),
                "--threads", str(args.threads), "-Q", MAIL_QUEUE,
            ]  # fmt: skip
            with Workers(cmd, env, st.work / "mail-workers.log", args.processes) as w:
                enqueue(broker, range(1, args.warmup + 1), args.mail_batch)
                wait_for_count(lambda: sent_count(conn, 1, args.warmup), args.warmup, timeout=120)
                time.sleep(1.5)
                say(f"timed run: {args.emails} emails, up to {args.mail_batch} to a deliver_email message")
                ids = range(args.warmup + 1, args.warmup + args.emails + 1)
                before = (w.cpu(), st.pg_cpu(), st.redis_cpu(), cpu_seconds(sink.pid), machine_busy())
                t0 = time.perf_counter()
                push_s = enqueue(broker, ids, args.mail_batch)
                curve = wait_for_count(
                    lambda: sent_count(conn, args.warmup + 1, args.warmup + args.emails),
                    args.emails,
                    timeout=args.timeout,
                    t0=t0,
                )
                after = (w.cpu(), st.pg_cpu(), st.redis_cpu(), cpu_seconds(sink.pid), machine_busy())
                if args.profile_emails:
                    binary = _profile.find_py_spy()
                    if binary:
                        out = st.work / "pyspy-email.txt"
                        spy = _profile.PySpy(binary, w.pid, out, rate=100)
                        lo = args.warmup + args.emails + 1
                        enqueue(broker, range(lo, total + 1), args.mail_batch)
                        wait_for_count(
                            lambda: sent_count(conn, lo, total), args.profile_emails, timeout=args.timeout
                        )
                        spy.stop()
                        if out.exists():
                            summary = _profile.summarise(
                                _profile.read_stacks(out, skip_processes={w.pid}), _profile.EMAIL_BUCKETS
                            )
                            results["pyspy"] = summary
                            _profile.print_summary("py-spy CPU profile of the mail workers", summary)
                            keep = ROOT / "benchmarks" / "results" / "email-pyspy.txt"
                            keep.parent.mkdir(exist_ok=True)
                            keep.write_bytes(out.read_bytes())
                    else:
                        _profile.say_fallback("py-spy could not be installed")
            elapsed = curve[-1][0]
            d = [b - a for a, b in zip(before, after, strict=True)]
            ours = sum(d[:4])
            results["deliver"] = {
                "emails": args.emails,
                "elapsed_s": round(elapsed, 3),
                "rate_e2e": round(args.emails / elapsed, 1),
                "rate_steady": round(steady_rate(curve, args.emails), 1),
                "producer_rate": round(args.emails / push_s, 1),
                "cpu_s": {
                    "workers": round(d[0], 2),
                    "postgres": round(d[1], 2),
                    "redis": round(d[2], 2),
                    "smtp_sink": round(d[3], 2),
                    "others": round(max(0.0, d[4] - ours), 2),
                },
                "cpu_ms_per_email": {
                    "all": round(1000 * ours / args.emails, 3),
                    "workers": round(1000 * d[0] / args.emails, 3),
                    "redis": round(1000 * d[2] / args.emails, 3),
                    "postgres": round(1000 * d[1] / args.emails, 3),
                    "smtp_sink": round(1000 * d[3] / args.emails, 3),
                },
            }
            statuses = dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY 1").fetchall())
            jobs = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY 1").fetchall())
            results["outbox_status"] = statuses
            results["job_status"] = jobs
            conn.close()
        finally:
            sink.terminate()
            sink.wait(10)
        received = count_file.read_text().split() if count_file.exists() else ["?", "?"]
        results["sink_received"] = {"messages": received[0], "bytes": received[1]}
        results["postgres"] = {"version": st.pg_version(), **st.pg_show("fsync", "synchronous_commit")}
    results["loadavg_after"] = loadavg()
    dl = results["deliver"]
    print()
    cpu = dl["cpu_ms_per_email"]
    say(
        f"DELIVERED {fmt_rate(dl['rate_steady'])} steady | bare smtplib (same sink, same run, "
        f"{results['bare_smtplib']['threads']} threads, connections kept) "
        f"{fmt_rate(results['bare_smtplib']['rate'])}, one connection per message "
        f"{fmt_rate(results['sink_ceiling']['rate'])} | CPU per email {cpu['all']} ms "
        f"(workers {cpu['workers']}, PostgreSQL {cpu['postgres']}, Redis {cpu['redis']}, sink {cpu['smtp_sink']})"
    )
    say(
        f"SUMMARY  delivered {fmt_rate(dl['rate_steady'])} steady ({fmt_rate(dl['rate_e2e'])} end to end) "
        f"| render {fmt_rate(results['render']['renders_per_s'])} one thread "
        f"| sink ceiling {fmt_rate(results['sink_ceiling']['rate'])} | CPU s {dl['cpu_s']} "
        f"| outbox {results['outbox_status']} | sink got {results['sink_received']['messages']} "
        f"(incl. {2 * args.sink_ceiling} bare smtplib and {args.profile_emails} profile messages)"
    )
    record("email", vars(args), results)


if __name__ == "__main__":
    main()
