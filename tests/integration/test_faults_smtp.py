"""The mail server refuses everything for a while, or answers slowly: every email still arrives once.

Real ``dunning worker`` processes, PostgreSQL, Redis and the sandbox billing API (see
:mod:`tests.support.scenario`) and a real SMTP server (aiosmtpd) that counts what it refused.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.support.scenario import CountingSmtpServer, Scenario

from dunning.store.models import Outbox

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 10.0
BREAKER_FAILURES = 2
BREAKER_COOLDOWN_S = 3.0
SMTP_TRIES = 4  # SmtpSender's attempts per send (the first try and three retries)


def test_smtp_refusing_everything_then_recovering_delivers_each_email_once(
    pg_url: str, redis_server, tmp_path: Path, dunning_broker
) -> None:
    broker, _ = dunning_broker
    processes, threads = 2, 4
    with (
        CountingSmtpServer() as smtp,
        Scenario(
            db_url=pg_url,
            redis_url=redis_server.url,
            smtp=smtp,
            broker=broker,
            home=tmp_path,
            processes=processes,
            threads=threads,
            env={
                "DUNNING_SMTP_BREAKER_FAILURES": str(BREAKER_FAILURES),
                "DUNNING_SMTP_BREAKER_COOLDOWN_S": str(BREAKER_COOLDOWN_S),
                # A send that fails takes ~4 s of SMTP retries: the run's lease must outlast it.
                "DUNNING_TUNING_RUN_LEASE_S": "30",
            },
        ) as sc,
    ):
        sc.setup_customers()
        smtp.refuse_all(code=451)
        sc.send_failures()  # each opens a case and queues its "payment failed" email
        time.sleep(OUTAGE_S)
        smtp.reset_faults()
        refused = smtp.refused
        with sc.rt.sessions() as s:
            attempts = s.execute(select(func.sum(Outbox.attempts))).scalar_one() or 0
        during_outage = len(smtp.messages)
        sc.settle()
        sc.walk()
        f = sc.verify(unknown_emails="none")
        print(
            f.line(
                "smtp 451 outage",
                outage_s=f"{OUTAGE_S:g}",
                send_attempts_by_jobs=attempts,
                smtp_tries_without_breaker=attempts * SMTP_TRIES,
                refused_by_server=refused,
                delivered_during_outage=during_outage,
            )
        )
    assert not f.problems, f.problems
    assert during_outage == 0
    assert not f.dead_jobs
    # The jobs kept trying all through the outage...
    assert attempts >= 2 * sc.cases
    # ...but the breaker kept the server from being hammered: per process, the sends in flight
    # when it opened, plus one half-open trial per cooldown, each with SmtpSender's own tries.
    trials = OUTAGE_S / BREAKER_COOLDOWN_S + 1
    bound = processes * (BREAKER_FAILURES + threads + trials) * SMTP_TRIES
    assert 0 < refused <= bound, (refused, bound)
    # At least five times fewer refused tries than the jobs' sends would have made without it.
    assert refused * 5 < attempts * SMTP_TRIES, (refused, attempts)


def test_slow_smtp_server_delivers_each_email_once_and_parks_nothing(
    pg_url: str, redis_server, smtp, tmp_path: Path, dunning_broker
) -> None:
    broker, _ = dunning_broker
    delay = 0.5  # before answering each message's DATA; the sender's timeout is 10 s
    with Scenario(
        db_url=pg_url,
        redis_url=redis_server.url,
        smtp=smtp,
        broker=broker,
        home=tmp_path,
        env={"DUNNING_TUNING_RUN_LEASE_S": "30"},
    ) as sc:
        sc.setup_customers()
        smtp.set_delay(delay)
        started = time.monotonic()
        sc.send_failures()
        sc.settle()
        sc.walk()
        elapsed = time.monotonic() - started
        f = sc.verify(unknown_emails="none")
        print(f.line("slow smtp", delay_s=delay, run_s=f"{elapsed:.0f}"))
    assert not f.problems, f.problems
    assert not f.dead_jobs
    assert f.dead_letters == 0
