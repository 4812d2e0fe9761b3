"""Worker and scheduler logs carry ids, never a customer's email address or name.

Real ``dunning worker`` and ``dunning scheduler`` processes on PostgreSQL, Redis,
an SMTP server and the sandbox billing API. Events fail in every way we can
provoke: refused as invalid (a bad field; a message of the wrong shape), parked
as a poison message (it kept killing its worker), failing on a
database error whose text quotes the SQL (with parameters, unless hidden),
retried because the customer they name is unknown, a charge the billing API
refuses, and emails the mail server refuses (for now, then for good).
Everything the processes wrote is then searched for the test customers' emails
and names: none may appear, while the ids of what failed must (so that the
search is not vacuous).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Message
from sqlalchemy import select, text
from tests.support.cluster import WorkerGroup
from tests.support.harness import START

from dunning.client import Client
from dunning.devtools.sandbox import SandboxServer
from dunning.runtime import Tuning, build_runtime
from dunning.settings import load_settings
from dunning.store.migrate import upgrade
from dunning.store.models import DeadLetter, Job, Outbox, ProcessedEvent, Worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "privacy-billing-secret"
CARD = {"present": True, "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}

#: The people whose data must never reach a log: (customer id, name, email).
ADA = ("cus_invalid", "Ada Lovelacewright", "ada.lovelacewright@example.org")
EDSGER = ("cus_shape", "Edsger Dijkstrasson", "edsger.dijkstrasson@example.org")
BARBARA = ("cus_dberr", "Barbara Liskowitz", "barbara.liskowitz@example.org")
GRACE = ("cus_billing", "Grace Hopperfield", "grace.hopperfield@example.org")
LINUS = ("cus_mail", "Linus Torvaldsen", "linus.torvaldsen@example.org")
KEN = ("cus_ghost", "Ken Thompsonby", "ken.thompsonby@example.org")
MARGARET = ("cus_poison", "Margaret Hamiltonova", "margaret.hamiltonova@example.org")
PEOPLE = (ADA, EDSGER, BARBARA, GRACE, LINUS, KEN, MARGARET)


def _envelope(type_: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:12]}",
        "type": type_,
        "occurred_at": START.isoformat(),
        "data": data,
    }


def _customer(person: tuple[str, str, str], **extra: Any) -> dict[str, Any]:
    cid, name, email = person
    return _envelope(
        "customer.upserted",
        {"customer": {"id": cid, "email": email, "name": name, "timezone": "UTC", **extra}},
    )


def _subscription(cid: str, sub: str) -> dict[str, Any]:
    return _envelope(
        "subscription.upserted",
        {
            "subscription": {
                "id": sub,
                "customer_id": cid,
                "plan": "pro",
                "status": "active",
                "amount_minor": 4900,
                "currency": "EUR",
                "interval": "month",
                "current_period_end": (START + timedelta(days=30)).isoformat(),
                "payment_method": CARD,
            }
        },
    )


def _wait(what: str, check: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_logs_name_no_customer_whatever_fails(
    pg_url: str, redis_server, smtp, tmp_path: Path, dunning_broker
) -> None:
    broker, _ = dunning_broker
    broker.client.flushall()
    sandbox = SandboxServer(secret=SECRET, seed=5)
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
        "DUNNING_LINK_SECRET": "privacy-link-secret",
        "DUNNING_TUNING_BACKOFF_BASE_S": "0.1",
        "DUNNING_TUNING_BACKOFF_MAX_S": "1",
    }
    rt = build_runtime(load_settings(env), tuning=Tuning.from_env(env))
    upgrade(rt.engine)
    rt.clock.set(START)  # type: ignore[attr-defined]
    # A database error whose text quotes the row being written (SQLAlchemy prints the parameters).
    with rt.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION refuse_customer() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'refused by the test trigger'; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse_customer BEFORE INSERT OR UPDATE ON customers FOR EACH ROW "
                f"WHEN (NEW.id = '{BARBARA[0]}') EXECUTE FUNCTION refuse_customer()"
            )
        )

    worker_log, scheduler_log = tmp_path / "worker.log", tmp_path / "scheduler.log"
    workers = WorkerGroup(env, worker_log, processes=1, threads=4)
    with scheduler_log.open("ab") as handle:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "dunning", "scheduler", "--poll", "0.05"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = Client(broker=broker)

    def enqueue(*args: Any, **kwargs: Any) -> str:
        message = Message(
            queue_name="billing_events", actor_name="ingest_event", args=args, kwargs=kwargs, options={}
        )
        broker.enqueue(message)
        return message.message_id

    def processed(*event_ids: str) -> bool:
        with rt.sessions() as s:
            found = set(s.scalars(select(ProcessedEvent.id).where(ProcessedEvent.id.in_(event_ids))))
        return found == set(event_ids)

    def parked(message_id: str) -> bool:
        with rt.sessions() as s:
            return s.scalar(select(DeadLetter.id).where(DeadLetter.message_id == message_id)) is not None

    def delayed_retries(message_id: str) -> int:
        """How often the message failed so far, from its copy on the broker (hashes keyed by a Redis id)."""
        seen = 0
        for key in ("dramatiq:billing_events.DQ.msgs", "dramatiq:billing_events.msgs"):
            for body in broker.client.hvals(key):
                message = json.loads(body)
                if message.get("message_id") == message_id:
                    seen = max(seen, int(message["options"].get("retries", 0)))
        return seen

    try:
        workers.start()
        workers.wait_ready()

        # Two customers whose cases will fail later, in billing and in mail.
        setup = [client.send_event(_customer(p)) for p in (GRACE, LINUS)]
        _wait("customers applied", lambda: processed(*setup))
        setup = [client.send_event(_subscription(p[0], f"sub_{p[0]}")) for p in (GRACE, LINUS)]
        _wait("subscriptions applied", lambda: processed(*setup))

        # 1. Refused as invalid: a bad field, then a message of the wrong shape (kwargs).
        invalid = enqueue(_customer(ADA, timezone="Mars/Olympus_Mons"))
        shape = enqueue(_customer(EDSGER), note=f"{EDSGER[1]} <{EDSGER[2]}>")
        _wait("invalid events parked", lambda: parked(invalid) and parked(shape))

        # 1b. A message that died with its worker for the third time while it ran alone (a worker
        # "gone", silent for a minute, had fetched it): the scheduler parks it as poison and logs it.
        poison = Message(
            queue_name="billing_events",
            actor_name="ingest_event",
            args=(_customer(MARGARET),),
            kwargs={},
            options={"redis_message_id": "r-poison", "dunning_alone": True, "dunning_crashes": 2},
        )
        silent_since = datetime.now(UTC) - timedelta(seconds=60)
        with rt.sessions() as s, s.begin():
            s.add(Worker(id="gone", host="h", pid=1, started_at=silent_since, heartbeat_at=silent_since))
        broker.client.hset("dramatiq:billing_events.msgs", "r-poison", poison.encode())
        broker.client.sadd("dramatiq:__acks__.gone.billing_events", "r-poison")
        broker.client.set("dunning:alone:gone", "billing_events r-poison")
        _wait("the poison message parked", lambda: parked(poison.message_id))

        # 2. A database error on a customer row: retried, then applied once the trigger is gone.
        barbara = _customer(BARBARA)
        dberr = enqueue(barbara)
        _wait("the database error retried", lambda: delayed_retries(dberr) >= 1)
        with rt.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_customer ON customers"))
        _wait("the customer applied after the error", lambda: processed(barbara["id"]))

        # 3. An event naming a customer nobody has heard of, whose text names a person: retried.
        ghost = enqueue(
            _envelope(
                "invoice.payment_failed",
                {
                    "invoice": {
                        "id": "in_ghost",
                        "subscription_id": "sub_ghost",
                        "customer_id": KEN[0],
                        "amount_minor": 4900,
                        "currency": "EUR",
                    },
                    "decline_code": "insufficient_funds",
                    "failure_message": f"card of {KEN[1]} <{KEN[2]}> declined",
                },
            )
        )
        _wait("the unknown customer's event retried twice", lambda: delayed_retries(ghost) >= 2)

        # 4. The mail server refuses for now (twice), then delivers the first notice.
        smtp.fail_next(2, 451)
        failed = client.payment_failed(
            invoice_id="in_unknown_to_billing",
            subscription_id=f"sub_{GRACE[0]}",
            customer_id=GRACE[0],
            amount_minor=4900,
            currency="EUR",
            decline_code="insufficient_funds",
            failure_message=f"card of {GRACE[1]} declined",
        )
        _wait("the failure applied", lambda: processed(failed))
        smtp.wait_for(1, timeout=60)
        assert smtp.messages[0].rcpt_tos == (GRACE[2],)

        # 5. The mail server refuses the next customer's notice for good.
        smtp.refuse_all(550, at="rcpt")
        sandbox.state.add_invoice(
            "in_mail",
            subscription_id=f"sub_{LINUS[0]}",
            customer_id=LINUS[0],
            amount_minor=4900,
            currency="EUR",
            decline_code="insufficient_funds",
            succeed_on_attempt=1,
        )
        refused = client.payment_failed(
            invoice_id="in_mail",
            subscription_id=f"sub_{LINUS[0]}",
            customer_id=LINUS[0],
            amount_minor=4900,
            currency="EUR",
            decline_code="insufficient_funds",
        )
        _wait("the failure applied", lambda: processed(refused))

        def outbox_failed() -> bool:
            with rt.sessions() as s:
                return "failed" in set(s.scalars(select(Outbox.status).where(Outbox.to_email == LINUS[2])))

        _wait("the refused email marked failed", outbox_failed)
        smtp.reset_faults()

        # 6. Day 1: the billing API refuses the retry of an invoice it does not know.
        rt.clock.advance(timedelta(days=1, minutes=5))  # type: ignore[attr-defined]

        def dead_retry() -> Job | None:
            with rt.sessions() as s:
                return s.scalar(select(Job).where(Job.kind == "retry", Job.status == "dead"))

        _wait("the refused charge parked", dead_retry)
        dead_job = dead_retry()
        assert dead_job is not None
    finally:
        if scheduler.poll() is None:
            scheduler.send_signal(signal.SIGTERM)
            try:
                scheduler.wait(20)
            except subprocess.TimeoutExpired:
                scheduler.kill()
                scheduler.wait(5)
        workers.stop()
        sandbox.stop()
        rt.close()

    logs = worker_log.read_text(encoding="utf-8", errors="replace")
    logs += scheduler_log.read_text(encoding="utf-8", errors="replace")
    lowered = logs.lower()
    leaks = [
        value
        for _, name, email in PEOPLE
        for value in (email, email.split("@")[0], name, name.split()[-1])
        if value.lower() in lowered
    ]
    leaked_lines = [line for line in logs.splitlines() if any(v.lower() in line.lower() for v in leaks)]
    assert not leaks, f"customer data in the logs: {leaks}\n" + "\n".join(leaked_lines[:10])

    # Not vacuous: the failures were logged, by id.
    assert "Failed to process message" in logs
    assert f"parked message {poison.message_id} (ingest_event)" in logs  # the poison, by id
    for message_id in (invalid, shape, poison.message_id, dberr, ghost):
        assert message_id in logs, f"message {message_id} is not named in the logs"
    assert "MissingReference" in logs and "InvalidEvent" in logs
    assert f"job {dead_job.id} parked" in logs
    assert "in_unknown_to_billing" in logs  # the id in the billing API's refusal
    assert "smtp send <" in logs  # the transient SMTP refusals, by Message-ID
