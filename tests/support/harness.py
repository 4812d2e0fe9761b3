"""An end-to-end harness: real Redis, SMTP, database and sandbox billing; in-process workers.

The Dramatiq worker and the scheduler run in this process (threads) against
the real servers; the crash tests use real worker processes instead.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy import func, select

from dunning.client import Client
from dunning.devtools.sandbox import SandboxServer
from dunning.engine.jobs import outstanding
from dunning.runtime import Runtime, Tuning, build_runtime, set_runtime
from dunning.settings import load_settings
from dunning.store.migrate import upgrade
from dunning.store.models import Case, ChargeAttempt, Job, Outbox, TimelineEntry
from tests.support.servers import SmtpServer

# Monday 2026-11-02 10:00 UTC: daytime for UTC customers, so quiet hours stay out of the way.
START = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
SECRET = "test-billing-secret"


class MessageCounter(Middleware):
    """Counts messages that finished (acked or nacked), per queue."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: Counter[str] = Counter()

    def _count(self, message: Any) -> None:
        with self.lock:
            self.done[message.queue_name] += 1

    def after_ack(self, broker: Any, message: Any) -> None:
        self._count(message)

    def after_nack(self, broker: Any, message: Any) -> None:
        self._count(message)


class Harness:
    """One test's world. Use :func:`harness` to build it."""

    def __init__(
        self,
        rt: Runtime,
        broker: dramatiq.Broker,
        sandbox: SandboxServer,
        smtp: SmtpServer,
        counter: MessageCounter,
    ) -> None:
        self.rt = rt
        self.broker = broker
        self.sandbox = sandbox
        self.smtp = smtp
        self.counter = counter
        self.client = Client(broker=broker)
        self.sent_events = 0
        self._base_done = counter.done["billing_events"]

    # -- driving -------------------------------------------------------------

    def send(self, envelope: dict[str, Any]) -> None:
        """Enqueue a raw envelope as a producer would (bypassing client-side validation)."""
        from dramatiq import Message

        self.broker.enqueue(
            Message(
                queue_name="billing_events",
                actor_name="ingest_event",
                args=(envelope,),
                kwargs={},
                options={},
            )
        )
        self.sent_events += 1

    def customer(
        self,
        cid: str = "cus_1",
        *,
        email: str | None = None,
        pm: bool = True,
        tz: str = "UTC",
        locale: str = "en",
        sub: str | None = "sub_1",
        plan: str = "pro",
        amount: int = 4900,
    ) -> None:
        """A customer with one monthly subscription (and a card unless ``pm`` is False)."""
        self.client.customer_upserted(
            {
                "id": cid,
                "email": email or f"{cid}@example.com",
                "name": f"Customer {cid}",
                "locale": locale,
                "timezone": tz,
            }
        )
        self.sent_events += 1
        self.settle()  # the subscription event names the customer: send it once the customer exists
        if sub:
            card = (
                {"present": True, "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}
                if pm
                else {"present": False}
            )
            self.client.subscription_upserted(
                {
                    "id": sub,
                    "customer_id": cid,
                    "plan": plan,
                    "status": "active",
                    "amount_minor": amount,
                    "currency": "EUR",
                    "interval": "month",
                    "current_period_end": (START + timedelta(days=30)).isoformat(),
                    "payment_method": card,
                }
            )
            self.sent_events += 1
        self.settle()

    def fail(
        self,
        invoice: str = "in_1",
        *,
        sub: str = "sub_1",
        cid: str = "cus_1",
        code: str = "insufficient_funds",
        amount: int = 4900,
        succeed_on_attempt: int | None = 0,
        event_id: str | None = None,
    ) -> None:
        """The billing system reports a failed payment (and the sandbox learns the card's behaviour)."""
        # A re-sent failure for a known invoice keeps the sandbox's first script.
        with contextlib.suppress(ValueError):
            self.sandbox.state.add_invoice(
                invoice,
                subscription_id=sub,
                customer_id=cid,
                amount_minor=amount,
                currency="EUR",
                decline_code=code,
                succeed_on_attempt=succeed_on_attempt,
            )
        self.client.payment_failed(
            invoice_id=invoice,
            subscription_id=sub,
            customer_id=cid,
            amount_minor=amount,
            currency="EUR",
            decline_code=code,
            event_id=event_id,
        )
        self.sent_events += 1

    def card_update(self, cid: str = "cus_1", *, works: bool = True) -> None:
        self.sandbox.state.update_payment_method(cid, present=True, works=works)
        self.client.payment_method_updated(
            customer_id=cid,
            payment_method={
                "present": True,
                "brand": "mastercard",
                "last4": "5555",
                "exp_month": 1,
                "exp_year": 2031,
            },
        )
        self.sent_events += 1

    def paid(self, invoice: str = "in_1", *, sub: str = "sub_1", amount: int = 4900) -> None:
        self.sandbox.state.mark_paid(invoice)
        self.client.invoice_paid(invoice_id=invoice, subscription_id=sub, amount_minor=amount, currency="EUR")
        self.sent_events += 1

    def cancel(self, sub: str = "sub_1") -> None:
        self.client.subscription_canceled(subscription_id=sub, reason="customer asked")
        self.sent_events += 1

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every event sent was handled and no job is due or in flight."""
        deadline = time.monotonic() + timeout
        stable = 0
        while time.monotonic() < deadline:
            done = self.counter.done["billing_events"] - self._base_done
            with self.rt.sessions() as s:
                busy = outstanding(s, now=self.rt.clock.now())
            if done >= self.sent_events and busy == 0:
                stable += 1
                if stable >= 3:
                    return
            else:
                stable = 0
            time.sleep(0.02)
        raise AssertionError(
            f"not settled after {timeout}s: {self.sent_events} events sent, {self.counter.done['billing_events'] - self._base_done} handled, {busy} jobs busy"
        )

    def advance(self, delta: timedelta, *, step: timedelta = timedelta(hours=6)) -> None:
        """Move the simulated clock in steps, letting due work run at each step."""
        target = self.rt.clock.now() + delta
        while self.rt.clock.now() < target:
            self.rt.clock.advance(min(step, target - self.rt.clock.now()))  # type: ignore[attr-defined]
            self.settle()

    # -- reading -------------------------------------------------------------

    def case(self, invoice: str = "in_1") -> Case:
        with self.rt.sessions() as s:
            return s.execute(select(Case).where(Case.invoice_id == invoice)).scalar_one()

    def cases(self) -> int:
        with self.rt.sessions() as s:
            return s.execute(select(func.count()).select_from(Case)).scalar_one()

    def attempts(self, invoice: str = "in_1") -> list[ChargeAttempt]:
        with self.rt.sessions() as s:
            return list(
                s.execute(
                    select(ChargeAttempt)
                    .where(ChargeAttempt.invoice_id == invoice)
                    .order_by(ChargeAttempt.attempt_no)
                ).scalars()
            )

    def pay_calls(self, invoice: str = "in_1") -> list[Any]:
        return [c for c in self.sandbox.state.calls() if c.path == f"/invoices/{invoice}/pay"]

    def billing_actions(self, sub: str = "sub_1") -> list[str]:
        return [
            c.path.rsplit("/", 1)[-1]
            for c in self.sandbox.state.calls()
            if c.path.startswith(f"/subscriptions/{sub}/") and not c.replay
        ]

    def notices(self, to: str = "cus_1@example.com") -> list[str]:
        """Kinds of the emails the SMTP server received for ``to``, in order."""
        return [str(m["X-Dunning-Kind"]) for m in self.smtp.messages if to in m.rcpt_tos]

    def timeline(self, sub: str = "sub_1") -> list[str]:
        with self.rt.sessions() as s:
            return [
                e.detail
                for e in s.execute(
                    select(TimelineEntry)
                    .where(TimelineEntry.subscription_id == sub)
                    .order_by(TimelineEntry.id)
                ).scalars()
            ]

    def outbox(self) -> list[Outbox]:
        with self.rt.sessions() as s:
            return list(s.execute(select(Outbox).order_by(Outbox.id)).scalars())

    def jobs(self, status: str | None = None) -> list[Job]:
        with self.rt.sessions() as s:
            stmt = select(Job).order_by(Job.id)
            if status:
                stmt = stmt.where(Job.status == status)
            return list(s.execute(stmt).scalars())

    def sent_failure_emails(self, n: int) -> list[Outbox]:
        """``n`` customers (``cus_1``...) whose payment failed, their ``payment_failed`` emails sent."""
        for i in range(1, n + 1):
            self.customer(f"cus_{i}", sub=f"sub_{i}")
            self.fail(
                f"in_{i}", sub=f"sub_{i}", cid=f"cus_{i}", code="insufficient_funds", succeed_on_attempt=0
            )
        self.settle()
        rows = [r for r in self.outbox() if r.kind == "payment_failed"]
        assert len(rows) == n and all(r.status == "sent" for r in rows)
        return rows


def fast_tuning() -> Tuning:
    return Tuning(
        queue_lease_s=5.0, run_lease_s=30.0, max_crashes=3, max_runs=6, backoff_base_s=0.05, backoff_max_s=0.5
    )


@contextmanager
def harness(
    *,
    db_url: str,
    redis_url: str,
    smtp: SmtpServer,
    home: Path,
    broker: dramatiq.Broker,
    counter: MessageCounter,
    policy_path: Path | None = None,
    tuning: Tuning | None = None,
    start_workers: bool = True,
) -> Iterator[Harness]:
    """Build a world around the session's broker (bound to ``redis_url``)."""
    broker.client.flushall()
    sandbox = SandboxServer(secret=SECRET, seed=11)
    sandbox.start()
    env = {
        "DUNNING_HOME": str(home),
        "DUNNING_DATABASE_URL": db_url,
        "DUNNING_REDIS_URL": redis_url,
        "DUNNING_SMTP_URL": smtp.url,
        "DUNNING_BILLING_URL": sandbox.url,
        "DUNNING_BILLING_SECRET": SECRET,
        "DUNNING_CLOCK": "simulated",
        "DUNNING_LINK_SECRET": "test-link-secret",
    }
    if policy_path:
        env["DUNNING_POLICY"] = str(policy_path)
    rt = build_runtime(load_settings(env), tuning=tuning or fast_tuning())
    upgrade(rt.engine)
    rt.clock.set(START)  # type: ignore[attr-defined]
    set_runtime(rt)
    stop = threading.Event()
    worker = None
    sched = None
    if start_workers:
        from dunning.engine.scheduler import run_forever

        worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
        worker.start()
        sched = threading.Thread(
            target=run_forever, args=(rt, broker), kwargs={"poll_s": 0.02, "stop": stop}, daemon=True
        )
        sched.start()
    try:
        yield Harness(rt, broker, sandbox, smtp, counter)
    finally:
        stop.set()
        if worker is not None:
            worker.stop(timeout=10_000)
        if sched is not None:
            sched.join(5)
        sandbox.stop()
        set_runtime(None)
        rt.close()


def _send_jobs_after(self: Harness, results: list[Any]) -> None:
    """Send the messages that direct calls of the ingest service returned (as the actor does)."""
    from dunning.broker.enqueue import send_jobs

    for result in results:
        if isinstance(result, tuple):
            send_jobs(self.broker, result[1])


Harness.send_jobs_after = _send_jobs_after  # type: ignore[attr-defined]
