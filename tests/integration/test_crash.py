"""SIGKILL worker processes in the middle of a hundred-odd cases; nothing is lost or done twice.

Real ``dunning worker`` processes on PostgreSQL, Redis, an SMTP server and the
sandbox billing API. A killer thread SIGKILLs a random worker process every
second or so while the simulated clock walks through the whole policy; a
supervisor loop restarts the pool (Dramatiq stops the whole pool when one of
its processes dies), as compose's restart policy would.

Leases and broker settings are the product's defaults: what a kill strands
comes back through the worker heartbeats within seconds (the leases, minutes
long, are a backstop). Each wait ends as soon as the work is done; its
timeout is a safety net far above the longest wait seen (printed).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.support.cluster import WorkerGroup
from tests.support.harness import START

from dunning.client import Client
from dunning.devtools.sandbox import SandboxServer
from dunning.engine.jobs import outstanding
from dunning.engine.scheduler import TickResult, run_forever
from dunning.runtime import Tuning, build_runtime
from dunning.settings import load_settings
from dunning.store.migrate import upgrade
from dunning.store.models import Case, DeadLetter, Job, Outbox, ProcessedEvent, Worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "crash-secret"
CASES = int(os.environ.get("DUNNING_CRASH_CASES", "120"))
# One wait's safety net. Most waits end within seconds; in some runs one job's message goes missing
# and waits out its 300 s queue lease (cause not found yet: see the README's Tests section), so the
# net covers two such leases rather than failing the suite on the known slow path.
SAFETY_NET_S = max(900.0, CASES * 0.5)
#: A wait longer than this writes what is outstanding to ``artifacts/crash-test/`` (git-ignored).
SLOW_WAIT_S = 60.0
REPO = Path(__file__).resolve().parents[2]


def _script(i: int) -> tuple[str, int | None, str]:
    """(decline code, succeed_on_attempt, expected outcome) for case ``i``."""
    kind = i % 10
    if kind <= 5:
        return "insufficient_funds", kind % 5 + 1, "retry"
    if kind <= 7:
        return "do_not_honor", 0, "canceled"
    if kind == 8:
        return "stolen_card", None, "canceled"
    return "expired_card", None, "card_update"


def _write_slow_wait(path: Path, rt: Any, broker: Any, workers: WorkerGroup, done: int, sent: int) -> None:
    """Append the outstanding jobs, the workers' rows and every queue's Redis state to ``path``."""
    lines = [f"== {time.strftime('%H:%M:%S')} wait over {SLOW_WAIT_S:.0f} s: {done}/{sent} events done"]
    with rt.sessions() as s:
        for j in s.execute(select(Job).where(Job.status.in_(("claimed", "pending")))).scalars():
            lines.append(
                f"job {j.id} {j.key} {j.kind} {j.status} due={j.due_at} claims={j.claims} runs={j.runs}"
                f" crashes={j.crashes} alone={j.alone} worker={j.worker_id} lease={j.lease_until}"
                f" error={j.last_error!r}"
            )
        for w in s.execute(select(Worker)).scalars():
            lines.append(f"worker row {w.id} pid={w.pid} beat={w.heartbeat_at}")
    client = broker.client
    for key in sorted(k.decode() for k in client.scan_iter("dramatiq:*")):
        kind = client.type(key).decode()
        if kind == "list":
            lines.append(f"{key} list {[i.decode() for i in client.lrange(key, 0, 20)]}")
        elif kind == "set":
            lines.append(f"{key} set {sorted(i.decode() for i in client.smembers(key))[:20]}")
        elif kind == "zset":
            lines.append(f"{key} zset {client.zrange(key, 0, 20, withscores=True)}")
        elif kind == "hash":
            lines.append(f"{key} hash of {client.hlen(key)}")
    lines.append(f"pool pids {workers.worker_pids()}, kills {workers.kills}, restarts {workers.restarts}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write("\n".join(lines) + "\n")
    print(f"crash test: slow wait, state written to {path}")


def _await_kills(workers: WorkerGroup, n: int, safety_net_s: float = SAFETY_NET_S) -> None:
    """Wait until the killer has killed ``n`` times; the timeout is a safety net only."""
    deadline = time.monotonic() + safety_net_s
    while workers.kills < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"the killer made {workers.kills} of {n} kills in {safety_net_s:.0f} s")
        time.sleep(0.05)


# A safety net for the whole run, far above its duration (the suite's default of 300 s was not).
@pytest.mark.timeout(max(1800, CASES * 6))
def test_sigkill_workers_during_a_run(
    pg_url: str, redis_server, smtp, tmp_path: Path, dunning_broker
) -> None:
    broker, _ = dunning_broker
    broker.client.flushall()
    sandbox = SandboxServer(secret=SECRET, seed=3)
    sandbox.start()
    env = {
        **os.environ,
        "DUNNING_HOME": str(tmp_path),
        "DUNNING_DATABASE_URL": pg_url,
        "DUNNING_REDIS_URL": redis_server.url,
        "DUNNING_SMTP_URL": smtp.url,
        "DUNNING_BILLING_URL": sandbox.url,
        "DUNNING_BILLING_SECRET": SECRET,
        "DUNNING_CLOCK": "simulated",
        "DUNNING_LINK_SECRET": "x",
        "DUNNING_TUNING_BACKOFF_BASE_S": "0.1",
        "DUNNING_TUNING_BACKOFF_MAX_S": "1",
    }
    for name in [k for k in env if k.startswith(("DUNNING_TUNING_", "DUNNING_BROKER_"))]:
        if name not in ("DUNNING_TUNING_BACKOFF_BASE_S", "DUNNING_TUNING_BACKOFF_MAX_S"):
            del env[name]  # crash recovery at its defaults
    rt = build_runtime(load_settings(env), tuning=Tuning.from_env(env))
    upgrade(rt.engine)
    rt.clock.set(START)  # type: ignore[attr-defined]
    workers = WorkerGroup(env, tmp_path / "worker.log", processes=2, threads=4)
    workers.start()
    workers.wait_ready()
    stop = threading.Event()
    totals = TickResult(0, 0)
    sched = threading.Thread(
        target=run_forever,
        args=(rt, broker),
        kwargs={"poll_s": 0.05, "stop": stop, "totals": totals},
        daemon=True,
    )
    sched.start()
    killing = threading.Event()
    rng = random.Random(5)

    def killer() -> None:
        while not stop.is_set():
            # Kill only a pool that has booted (see ``booted_for``: a worker killed while Dramatiq's
            # parent waits for it to boot can hang the parent for good) and had a moment of work:
            # a Dramatiq pool needs several seconds to stop after one of its processes dies, so
            # faster kills only measure restarts.
            if killing.is_set() and workers.booted_for() > 1.0:
                workers.kill_one(rng)
            stop.wait(rng.uniform(1.5, 3.0))

    def supervisor() -> None:
        while not stop.is_set():
            workers.ensure_running()
            stop.wait(0.2)

    threads = [threading.Thread(target=killer, daemon=True), threading.Thread(target=supervisor, daemon=True)]
    for t in threads:
        t.start()
    client = Client(broker=broker)
    sent = 0

    waits: list[float] = []
    slow_report = REPO / "artifacts" / "crash-test" / f"slow-waits-{os.getpid()}.txt"

    def settle(timeout: float = SAFETY_NET_S) -> None:
        # Ends when the work is done; the timeout is a safety net only (see ``waits``).
        t0 = time.monotonic()
        deadline = t0 + timeout
        reported = False
        while time.monotonic() < deadline:
            with rt.sessions() as s:
                done = s.execute(select(func.count()).select_from(ProcessedEvent)).scalar_one()
                done += s.execute(select(func.count()).select_from(DeadLetter)).scalar_one()
                busy = outstanding(s, now=rt.clock.now())
            if done >= sent and busy == 0:
                waits.append(time.monotonic() - t0)
                return
            if not reported and time.monotonic() - t0 > SLOW_WAIT_S:
                # Recovery takes seconds; a wait this long is the lease backstop at work. Keep
                # what the work looks like now, to find what left it to the lease.
                reported = True
                _write_slow_wait(slow_report, rt, broker, workers, done, sent)
            time.sleep(0.05)
        with rt.sessions() as s:
            stuck = [
                (j.key, j.status, j.claims, j.runs, j.crashes, str(j.lease_until), j.last_error)
                for j in s.execute(
                    select(Job).where(Job.status.in_(("claimed", "pending")), Job.due_at <= rt.clock.now())
                ).scalars()
            ][:10]
        raise AssertionError(
            f"not settled: {done}/{sent} events, {busy} jobs busy; kills={workers.kills}; {stuck}"
        )

    try:
        for i in range(CASES):
            client.customer_upserted(
                {"id": f"c{i}", "email": f"c{i}@example.com", "name": f"C {i}", "timezone": "UTC"}
            )
        sent += CASES
        settle()
        card = {"present": True, "brand": "visa", "last4": "4242"}
        for i in range(CASES):
            client.subscription_upserted(
                {
                    "id": f"s{i}",
                    "customer_id": f"c{i}",
                    "plan": "pro",
                    "status": "active",
                    "amount_minor": 4900,
                    "currency": "EUR",
                    "interval": "month",
                    "current_period_end": (START + timedelta(days=30)).isoformat(),
                    "payment_method": card,
                }
            )
        sent += CASES
        settle()
        killing.set()
        for i in range(CASES):
            code, succeed_on, _ = _script(i)
            sandbox.state.add_invoice(
                f"in{i}",
                subscription_id=f"s{i}",
                customer_id=f"c{i}",
                amount_minor=4900,
                currency="EUR",
                decline_code=code,
                succeed_on_attempt=succeed_on,
            )
            client.payment_failed(
                invoice_id=f"in{i}",
                subscription_id=f"s{i}",
                customer_id=f"c{i}",
                amount_minor=4900,
                currency="EUR",
                decline_code=code,
            )
        sent += CASES
        settle()
        # Half-day steps: every due time of the default policy is a whole number of days after START.
        for step in range(23 * 2):
            if step % 10 == 9:
                # At least one kill per ten steps, on live work, however fast the machine runs
                # them (a quick run once finished its walk after three kills).
                _await_kills(workers, (step + 1) // 10)
            rt.clock.advance(timedelta(hours=12))  # type: ignore[attr-defined]
            if step == 4:  # day 2: the expired cards are replaced
                for i in range(CASES):
                    if _script(i)[2] == "card_update":
                        sandbox.state.update_payment_method(f"c{i}", present=True, works=True)
                        client.payment_method_updated(
                            customer_id=f"c{i}", payment_method={**card, "last4": "1111"}
                        )
                        sent += 1
            settle()
        killing.clear()
        settle()
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        sched.join(5)
        workers.stop()
        sandbox.stop()

    with rt.sessions() as s:
        cases = {c.invoice_id: c for c in s.execute(select(Case)).scalars()}
        dead_jobs = s.execute(select(Job).where(Job.status == "dead")).scalars().all()
        outbox = s.execute(select(Outbox)).scalars().all()
    unknown = [o for o in outbox if o.status == "unknown"]
    # Every case reached the state the policy dictates.
    assert len(cases) == CASES
    wrong = {}
    for i in range(CASES):
        expected = _script(i)[2]
        case = cases[f"in{i}"]
        if case.outcome != expected:
            wrong[f"in{i}"] = (case.status, case.outcome, expected)
    assert not wrong, wrong
    # The billing server saw no second charge for any invoice or attempt.
    stats = sandbox.state.stats()
    assert stats["double_charges"] == 0
    assert all(n <= 1 for n in stats["charges"].values())
    outcome_by_key: dict[str, set[str]] = {}
    for call in sandbox.state.calls():
        if call.idempotency_key and call.path.endswith("/pay") and call.outcome:
            outcome_by_key.setdefault(call.idempotency_key, set()).add(call.outcome)
    assert all(len(v) == 1 for v in outcome_by_key.values())
    # No recipient got the same notice twice.
    received = Counter((tuple(m.rcpt_tos), str(m["X-Dunning-Notice"])) for m in smtp.messages)
    duplicates = {k: n for k, n in received.items() if n > 1}
    assert not duplicates, duplicates
    # Nothing was lost: every email is sent, deliberately dropped, or parked for ops as "unknown".
    assert all(o.status in ("sent", "skipped", "unknown") for o in outbox), Counter(o.status for o in outbox)
    # Jobs parked for any other reason than an unknown email delivery would be lost work.
    assert all(j.kind == "send_email" for j in dead_jobs), [(j.key, j.last_error) for j in dead_jobs]
    print(
        f"\ncrash test: {CASES} cases, {workers.kills} SIGKILLs, {workers.restarts} pool restarts, "
        f"{len(smtp.messages)} emails, 0 duplicates, 0 double charges, {len(unknown)} emails parked as unknown; "
        f"{totals.workers_recovered} dead workers recovered, {totals.runs_released} runs sent again, "
        f"{totals.messages_given_back} fetched messages given back, "
        f"{totals.expired_started + totals.expired_unstarted} leases expired; "
        f"longest wait {max(waits):.1f} s of a {SAFETY_NET_S:.0f} s safety net"
        f" ({sum(w > SLOW_WAIT_S for w in waits)} over {SLOW_WAIT_S:.0f} s)"
    )
    # Kills land on a booted pool only, one per restart (~7 s here): a few, each on live work.
    assert workers.kills >= 4, workers.kills
    assert totals.workers_recovered > 0 and totals.runs_released + totals.messages_given_back > 0
