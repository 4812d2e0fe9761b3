"""PostgreSQL restarts while the workers and the scheduler are busy: nothing is lost or done twice.

Real ``dunning worker`` processes, Redis, an SMTP server and the sandbox billing API (see
:mod:`tests.support.scenario`). ``PostgresServer.restart()`` stops the server in fast mode
(every open transaction is rolled back, every connection cut) and starts it again on the
same port: the workers' pools (``pool_pre_ping``) and the scheduler reconnect by themselves.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_postgres_restarted_mid_run(
    pg_url: str, postgres_server, redis_server, smtp, tmp_path: Path, dunning_broker
) -> None:
    broker, _ = dunning_broker
    outages: list[float] = []

    def restart() -> None:
        started = time.monotonic()
        postgres_server.restart()
        outages.append(time.monotonic() - started)

    with Scenario(
        db_url=pg_url,
        redis_url=redis_server.url,
        smtp=smtp,
        broker=broker,
        home=tmp_path,
        # A run cut by the outage is taken back when its lease ends: keep that short (runs take < 1 s).
        env={"DUNNING_TUNING_RUN_LEASE_S": "4"},
    ) as sc:
        sc.setup_customers()
        # Slow charges keep the day's work in flight when the database goes.
        sc.sandbox.state.set_faults(latency_ms=50)

        # 1. While the failures are being ingested (cases opened, emails queued and sent).
        failures = sc.send_failures()
        sc.wait_until(
            "a quarter of the failures applied",
            lambda: len(set(failures) & sc.processed_ids()) >= max(1, len(failures) // 4),
        )
        restart()
        sc.settle()

        # 2. Day 1, while the retries are running; 3. day 14, suspensions and their billing calls.
        def restart_when_busy() -> None:
            def busy() -> bool:
                claimed = sc.jobs(status="claimed")
                return len(claimed) >= 3 and any(j.runs > 0 for j in claimed)

            sc.wait_until("the day's jobs running", busy, 30)
            restart()

        sc.walk(at={1: restart_when_busy, 14: restart_when_busy})
        jobs = sc.jobs()
        rerun = [j for j in jobs if j.claims > 1]
        crashed = [j for j in jobs if j.crashes > 0]
        f = sc.verify(unknown_emails="allowed")
        print(
            f.line(
                "postgres restarted mid-run",
                restarts=len(outages),
                outage_s=f"{sum(outages):.1f}",
                jobs_run_again=len(rerun),
                runs_cut=len(crashed),
                messages_parked=f.dead_letters,
                pool_restarts=sc.workers.restarts,
            )
        )
    assert not f.problems, f.problems
    assert len(outages) == 3
    # Nothing parked but (possibly) emails whose delivery the outage made unknown.
    assert f.dead_letters == 0
    assert set(f.dead_jobs) <= {"send_email"}
    assert f.dead_jobs["send_email"] == f.unknown_emails
