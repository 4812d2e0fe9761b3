"""A scripted run of many dunning cases on real servers and real worker processes, for fault tests.

The product runs as it does in production: ``dunning worker`` processes (a
:class:`~tests.support.cluster.WorkerGroup`, restarted by a supervisor thread
when Dramatiq stops the pool), an in-process scheduler thread, PostgreSQL,
Redis, an SMTP server and the sandbox billing API. Each case has a script (how
its card behaves, via the sandbox's ``succeed_on_attempt``) and so a final
outcome the policy dictates; :meth:`Scenario.verify` checks it together with
the promises that hold whatever the faults were: no event lost, no one charged
twice, no email lost or received twice.

The simulated clock walks the default policy (retries on days 1, 3, 5, 7 and
12, suspension on day 14, the end on day 21) in whole days from a 10:00 UTC
start; :meth:`Scenario.walk` stops the clock at each due time in turn (and at the days a
test asks for), so every job runs exactly when due and idle days cost nothing.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import dramatiq
from dramatiq import Message
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from dunning.client import Client
from dunning.devtools.sandbox import SandboxServer
from dunning.engine.jobs import outstanding
from dunning.engine.scheduler import TickResult, run_forever
from dunning.runtime import Runtime, Tuning, build_runtime
from dunning.settings import load_settings
from dunning.store.migrate import upgrade
from dunning.store.models import Case, ChargeAttempt, DeadLetter, Job, Outbox, ProcessedEvent
from tests.support.cluster import WorkerGroup
from tests.support.harness import START
from tests.support.servers import SmtpServer

#: Cases per fault test in CI; raise it (e.g. ``DUNNING_FAULT_CASES=300``) for a longer drill.
CASES = int(os.environ.get("DUNNING_FAULT_CASES", "20"))
SECRET = "fault-secret"
DAY = timedelta(days=1)
#: The default policy's last step (the end of a case that never pays) is on day 21.
LAST_DAY = 21
CARD = {"present": True, "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}

#: Short leases and backoffs so that lost messages and crashed runs come back within seconds.
FAST_ENV = {
    "DUNNING_TUNING_QUEUE_LEASE_S": "3",
    "DUNNING_TUNING_RUN_LEASE_S": "10",
    "DUNNING_TUNING_BACKOFF_BASE_S": "0.1",
    "DUNNING_TUNING_BACKOFF_MAX_S": "1",
    "DUNNING_BROKER_HEARTBEAT_MS": "3000",
    "DUNNING_BROKER_MAINTENANCE_CHANCE": "100000",
}


class CountingSmtpServer(SmtpServer):
    """The suite's real SMTP server, also counting the deliveries it refused (one per refused DATA/RCPT)."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.refused = 0

    def _take_fault(self, stage: Literal["rcpt", "data"]) -> str | None:
        reply = super()._take_fault(stage)
        if reply is not None:
            with self._cond:
                self.refused += 1
        return reply


@dataclass(frozen=True)
class Script:
    """How case ``i``'s card behaves and how the case must end."""

    decline_code: str
    succeed_on_attempt: int | None  # the sandbox's script: attempts before it decline; 0 never pays
    expected: str  # Case.outcome at the end
    card_update_day: int | None = None  # the customer gives a working card on this day


def script(i: int) -> Script:
    """The mixture of test_crash.py: recovered on retry 1..5, never pays (soft and hard), new card."""
    kind = i % 10
    if kind <= 5:
        return Script("insufficient_funds", kind % 5 + 1, "retry")
    if kind <= 7:
        return Script("do_not_honor", 0, "canceled")
    if kind == 8:
        return Script("stolen_card", None, "canceled")
    return Script("expired_card", None, "card_update", card_update_day=2)


def _iso_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def event(event_id: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """A contract envelope."""
    return {"id": event_id, "type": type_, "occurred_at": _iso_now(), "data": data}


def raw_message(
    args: tuple[Any, ...], *, actor: str = "ingest_event", queue: str = "billing_events"
) -> Message:
    """A Dramatiq message as any producer could put on the broker, with no client-side validation."""
    return Message(queue_name=queue, actor_name=actor, args=args, kwargs={}, options={})


@dataclass
class Figures:
    """What a run did and what went wrong; ``problems`` is empty when every promise held."""

    cases: int = 0
    events: int = 0
    emails: int = 0
    charges: int = 0
    pay_calls: int = 0
    duplicates: int = 0  # (recipient, notice) received more than once
    double_charges: int = 0
    lost_events: int = 0
    lost_emails: int = 0
    wrong_outcomes: int = 0
    unknown_emails: int = 0  # parked for ops: the worker died after handing the email over
    dead_jobs: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self, name: str, **extra: object) -> str:
        extras = "".join(f", {k.replace('_', ' ')} {v}" for k, v in extra.items())
        return (
            f"\n{name}: {self.cases} cases, {self.events} events, {self.emails} emails, "
            f"{self.charges} charges{extras}; duplicates {self.duplicates}, double charges "
            f"{self.double_charges}, lost events {self.lost_events}, lost emails {self.lost_emails}, "
            f"wrong outcomes {self.wrong_outcomes}, emails parked unknown {self.unknown_emails}"
        )


class Scenario:
    """One fault test's world. Use it as a context manager; see the module docstring."""

    def __init__(
        self,
        *,
        db_url: str,
        redis_url: str,
        smtp: SmtpServer,
        broker: dramatiq.Broker,
        home: Path,
        cases: int = CASES,
        env: dict[str, str] | None = None,
        processes: int = 2,
        threads: int = 4,
        seed: int = 3,
    ) -> None:
        self.cases = cases
        self.smtp = smtp
        self.broker = broker
        self.home = home
        self.sandbox = SandboxServer(secret=SECRET, seed=seed)
        self.sandbox.start()
        self.env = {
            **os.environ,
            "DUNNING_HOME": str(home),
            "DUNNING_DATABASE_URL": db_url,
            "DUNNING_REDIS_URL": redis_url,
            "DUNNING_SMTP_URL": smtp.url,
            "DUNNING_BILLING_URL": self.sandbox.url,
            "DUNNING_BILLING_SECRET": SECRET,
            "DUNNING_CLOCK": "simulated",
            "DUNNING_LINK_SECRET": "fault-link-secret",
            **FAST_ENV,
            **(env or {}),
        }
        self.rt: Runtime = build_runtime(load_settings(self.env), tuning=Tuning.from_env(self.env))
        self.workers = WorkerGroup(self.env, home / "worker.log", processes=processes, threads=threads)
        self.client = Client(broker=broker)
        self.events: dict[str, dict[str, Any]] = {}  # every good event sent, by id
        self.bad_expected = 0  # bad messages that must end up in dead_letters
        self.expected_override: dict[int, str] = {}  # case index -> outcome, for cases a test sabotages
        self.card_update_works: dict[int, bool] = {}  # case index -> whether its new card pays (default yes)
        self.after_send: Callable[[int], None] | None = None  # called with the count of good events sent
        self.supervising = threading.Event()
        self.scheduler_totals = TickResult(0, 0)  # what the scheduler did, summed over its passes
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Scenario:
        try:
            self.broker.client.flushall()  # type: ignore[attr-defined]
            upgrade(self.rt.engine)
            self.rt.clock.set(START)  # type: ignore[attr-defined]
            self.workers.start()
            self.workers.wait_ready()
            self.supervising.set()
            self._thread(self._supervise)
            self._thread(
                lambda: run_forever(
                    self.rt, self.broker, poll_s=0.05, stop=self._stop, totals=self.scheduler_totals
                ),
                name="scheduler",
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self.workers.stop()
        self.sandbox.stop()
        self.rt.close()

    def _thread(self, target: Callable[[], None], name: str | None = None) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _supervise(self) -> None:
        # What compose's `restart: unless-stopped` does: Dramatiq stops the pool when a process dies.
        while not self._stop.is_set():
            if self.supervising.is_set():
                self.workers.ensure_running()
            self._stop.wait(0.2)

    @contextmanager
    def workers_stopped(self) -> Iterator[None]:
        """Stop the worker pool (gracefully) for the duration of the block, then start it again."""
        self.supervising.clear()
        self.workers.stop()
        try:
            yield
        finally:
            self.workers.start()
            self.workers.wait_ready()
            self.supervising.set()

    # -- events --------------------------------------------------------------------------------

    def send(self, envelope: dict[str, Any]) -> None:
        """Send a good event through the Python client (validated before it leaves)."""
        self.events[envelope["id"]] = envelope
        self.client.send_event(envelope)
        if self.after_send is not None:
            self.after_send(len(self.events))

    def resend(self, event_id: str) -> None:
        """Send an event again, as a webhook sender does when it got no acknowledgement."""
        self.client.send_event(self.events[event_id])

    def send_bad(self, message: Message) -> None:
        """Put a message the workers must refuse and park on the broker."""
        self.broker.enqueue(message)
        self.bad_expected += 1

    def customer_event(self, i: int) -> dict[str, Any]:
        customer = {"id": f"c{i}", "email": f"c{i}@example.com", "name": f"C {i}", "timezone": "UTC"}
        return event(f"evt_c{i}", "customer.upserted", {"customer": customer})

    def subscription_event(self, i: int) -> dict[str, Any]:
        subscription = {
            "id": f"s{i}",
            "customer_id": f"c{i}",
            "plan": "pro",
            "status": "active",
            "amount_minor": 4900,
            "currency": "EUR",
            "interval": "month",
            "current_period_end": (START + timedelta(days=30)).isoformat(),
            "payment_method": CARD,
        }
        return event(f"evt_s{i}", "subscription.upserted", {"subscription": subscription})

    def failure_event(self, i: int) -> dict[str, Any]:
        invoice = {
            "id": f"in{i}",
            "subscription_id": f"s{i}",
            "customer_id": f"c{i}",
            "amount_minor": 4900,
            "currency": "EUR",
        }
        data = {"invoice": invoice, "decline_code": script(i).decline_code}
        return event(f"evt_f{i}", "invoice.payment_failed", data)

    def card_update_event(self, i: int) -> dict[str, Any]:
        data = {"customer_id": f"c{i}", "payment_method": {**CARD, "last4": "1111"}}
        return event(f"evt_u{i}", "payment_method.updated", data)

    def register_invoice(self, i: int) -> None:
        s = script(i)
        self.sandbox.state.add_invoice(
            f"in{i}",
            subscription_id=f"s{i}",
            customer_id=f"c{i}",
            amount_minor=4900,
            currency="EUR",
            decline_code=s.decline_code,
            succeed_on_attempt=s.succeed_on_attempt,
        )

    def setup_customers(self) -> None:
        """Customers, then their subscriptions (an event naming an unknown customer waits for it)."""
        for i in range(self.cases):
            self.send(self.customer_event(i))
        self.settle()
        for i in range(self.cases):
            self.send(self.subscription_event(i))
        self.settle()

    def send_failures(self) -> list[str]:
        """Every invoice's payment fails at START; returns the event ids in sending order."""
        ids = []
        for i in range(self.cases):
            self.register_invoice(i)
            envelope = self.failure_event(i)
            self.send(envelope)
            ids.append(envelope["id"])
        return ids

    def card_updates(self, day: int) -> None:
        for i in range(self.cases):
            if script(i).card_update_day == day:
                works = self.card_update_works.get(i, True)
                self.sandbox.state.update_payment_method(f"c{i}", present=True, works=works)
                self.send(self.card_update_event(i))

    # -- time ----------------------------------------------------------------------------------

    def day(self) -> float:
        return (self.rt.clock.now() - START) / DAY

    def next_due(self) -> datetime | None:
        """The due time of the earliest pending job still in the future, if any."""
        with self.rt.sessions() as s:
            return s.execute(
                select(func.min(Job.due_at)).where(Job.status == "pending", Job.due_at > self.rt.clock.now())
            ).scalar_one()

    def walk(
        self,
        until_day: int = LAST_DAY,
        *,
        at: dict[int, Callable[[], None]] | None = None,
        settle_timeout: float = 90.0,
    ) -> int:
        """Move the clock from one due time to the next up to ``until_day``, settling at each stop.

        Every job runs at its own due time, as with small steps, but idle days cost nothing.
        ``at[d]`` runs right after the clock reaches day ``d`` (while that day's work is in
        flight), scripted card updates right after that. Returns the number of stops.
        """
        hooks = at or {}
        card_days = {d for i in range(self.cases) if (d := script(i).card_update_day) is not None}
        stops = sorted({*hooks, *card_days, until_day})
        end = START + DAY * until_day
        count = 0
        while (now := self.rt.clock.now()) < end:
            candidates = [START + DAY * d for d in stops if START + DAY * d > now]
            due = self.next_due()
            if due is not None:
                candidates.append(due)
            target = min(candidates)
            self.rt.clock.advance(target - now)  # type: ignore[attr-defined]
            count += 1
            if (target - START) % DAY == timedelta(0):
                day = (target - START) // DAY
                if day in hooks:
                    hooks[day]()
                self.card_updates(day)
            self.settle(settle_timeout)
        return count

    # -- waiting and reading -------------------------------------------------------------------

    def counts(self) -> tuple[int, int, int]:
        """(good events processed, messages parked, jobs due or in flight)."""
        with self.rt.sessions() as s:
            done = s.execute(select(func.count()).select_from(ProcessedEvent)).scalar_one()
            parked = s.execute(select(func.count()).select_from(DeadLetter)).scalar_one()
            busy = outstanding(s, now=self.rt.clock.now())
        return done, parked, busy

    def processed_ids(self) -> set[str]:
        with self.rt.sessions() as s:
            return set(s.execute(select(ProcessedEvent.id)).scalars())

    def wait_until(self, what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll ``condition`` (tolerating a database that is down for a moment)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except DBAPIError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")

    def settle(self, timeout: float = 90.0, *, poll: Callable[[], None] | None = None) -> None:
        """Wait until every event was applied or parked and no job is due or in flight.

        ``poll`` runs at every check (e.g. a producer re-sending unacknowledged events).
        """
        deadline = time.monotonic() + timeout
        done = parked = busy = -1
        while time.monotonic() < deadline:
            if poll is not None:
                poll()
            try:
                done, parked, busy = self.counts()
            except DBAPIError:
                time.sleep(0.2)
                continue
            if done >= len(self.events) and parked >= self.bad_expected and busy == 0:
                return
            time.sleep(0.05)
        with self.rt.sessions() as s:
            stuck = [
                (j.key, j.status, j.claims, j.runs, j.crashes, j.last_error)
                for j in s.execute(
                    select(Job).where(
                        Job.status.in_(("claimed", "pending")), Job.due_at <= self.rt.clock.now()
                    )
                ).scalars()
            ][:8]
        raise AssertionError(
            f"not settled after {timeout:g}s on day {self.day():g}: {done}/{len(self.events)} events "
            f"applied, {parked}/{self.bad_expected} parked, {busy} jobs busy; workers killed "
            f"{self.workers.kills}, restarted {self.workers.restarts}; see {self.workers.log}; {stuck}"
        )

    def jobs(self, **where: Any) -> list[Job]:
        with self.rt.sessions() as s:
            stmt = select(Job).order_by(Job.id)
            for column, value in where.items():
                stmt = stmt.where(getattr(Job, column) == value)
            return list(s.execute(stmt).scalars())

    def dead_letters(self) -> list[DeadLetter]:
        with self.rt.sessions() as s:
            return list(s.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars())

    def case_of(self, i: int) -> Case:
        with self.rt.sessions() as s:
            return s.execute(select(Case).where(Case.invoice_id == f"in{i}")).scalar_one()

    def expected(self, i: int) -> str:
        return self.expected_override.get(i, script(i).expected)

    # -- the promises --------------------------------------------------------------------------

    def verify(
        self,
        *,
        unknown_emails: Literal["allowed", "none"] = "allowed",
        dead_jobs_allowed: int = 0,
        extra_dead_letters_allowed: int = 0,
        unsettled_allowed: Collection[str] = (),
    ) -> Figures:
        """Check every promise; the figures list what broke (``problems``) instead of raising."""
        f = Figures(cases=self.cases, events=len(self.events))
        with self.rt.sessions() as s:
            cases = {c.invoice_id: c for c in s.execute(select(Case)).scalars()}
            outbox = list(s.execute(select(Outbox)).scalars())
            dead_jobs = list(s.execute(select(Job).where(Job.status == "dead")).scalars())
            attempts = list(s.execute(select(ChargeAttempt)).scalars())
            processed = set(s.execute(select(ProcessedEvent.id)).scalars())
            f.dead_letters = s.execute(select(func.count()).select_from(DeadLetter)).scalar_one()
        problems = f.problems

        # No event lost: every good event was applied.
        lost = sorted(set(self.events) - processed)
        f.lost_events = len(lost)
        if lost:
            problems.append(f"events never applied: {lost[:10]}")

        # Each case ends as its script dictates.
        wrong = {}
        for i in range(self.cases):
            case = cases.get(f"in{i}")
            got = None if case is None else (case.status, case.outcome)
            if case is None or case.outcome != self.expected(i):
                wrong[f"in{i}"] = (got, self.expected(i))
        f.wrong_outcomes = len(wrong)
        if wrong:
            problems.append(f"wrong outcomes (got, expected): {dict(list(wrong.items())[:10])}")
        if len(cases) != self.cases:
            problems.append(f"{len(cases)} cases for {self.cases} invoices")

        # No one charged twice; one charge exactly where the script pays.
        stats = self.sandbox.state.stats()
        f.double_charges = stats["double_charges"]
        f.charges = sum(stats["charges"].values())
        if f.double_charges:
            problems.append(f"sandbox saw {f.double_charges} intents to pay a paid invoice")
        bad_charges = {}
        for i in range(self.cases):
            want = 1 if self.expected(i) in ("retry", "card_update") else 0
            got_n = stats["charges"].get(f"in{i}", 0)
            if got_n != want:
                bad_charges[f"in{i}"] = (got_n, want)
        if bad_charges:
            problems.append(f"charges per invoice (got, expected): {bad_charges}")
        pay_calls = [c for c in self.sandbox.state.calls() if c.path.endswith("/pay")]
        f.pay_calls = len(pay_calls)
        outcomes: dict[str, set[str]] = {}
        for call in pay_calls:
            # An injected 503 or timeout was never processed: it has no outcome of its own.
            if call.idempotency_key and call.outcome and call.fault not in ("error", "timeout"):
                outcomes.setdefault(call.idempotency_key, set()).add(call.outcome)
        mixed = {k: v for k, v in outcomes.items() if len(v) > 1}
        if mixed:
            problems.append(f"one idempotency key, several outcomes: {mixed}")
        unsettled = [
            (a.idempotency_key, a.status)
            for a in attempts
            if a.status not in ("succeeded", "failed") and a.invoice_id not in unsettled_allowed
        ]
        if unsettled:
            problems.append(f"charge attempts never settled: {unsettled[:10]}")

        # No email received twice, none lost: every outbox row is accounted for.
        messages = self.smtp.messages
        f.emails = len(messages)
        received = Counter((tuple(m.rcpt_tos), str(m["X-Dunning-Notice"])) for m in messages)
        dups = {k: n for k, n in received.items() if n > 1}
        f.duplicates = sum(n - 1 for n in dups.values())
        if dups:
            problems.append(f"emails received more than once: {dict(list(dups.items())[:10])}")
        by_key = Counter(str(m["X-Dunning-Notice"]) for m in messages)
        known = {o.key for o in outbox}
        phantom = sorted(set(by_key) - known)
        if phantom:
            problems.append(f"emails received with no outbox row: {phantom[:10]}")
        lost_mail = [o.key for o in outbox if o.status == "sent" and by_key[o.key] == 0]
        lost_mail += [o.key for o in outbox if o.status not in ("sent", "skipped", "unknown")]
        f.unknown_emails = sum(1 for o in outbox if o.status == "unknown")
        if unknown_emails == "none" and f.unknown_emails:
            problems.append(f"{f.unknown_emails} emails parked as unknown")
        # Every case's first and last email exists (a lost decision would leave no row at all).
        for i in range(self.cases):
            case = cases.get(f"in{i}")
            if case is None:
                continue
            closing = (
                "payment_recovered" if case.outcome in ("retry", "card_update") else "subscription_ended"
            )
            for kind in ("payment_failed", closing):
                rows = [o for o in outbox if o.case_id == case.id and o.kind == kind]
                if not rows:
                    lost_mail.append(f"{kind}:{case.id}:(no row)")
                elif not any(o.status in ("sent", "unknown") for o in rows):
                    lost_mail.append(f"{rows[0].key}:{rows[0].status}")
        f.lost_emails = len(lost_mail)
        if lost_mail:
            problems.append(f"emails lost: {lost_mail[:10]}")

        # Parked messages beyond the bad ones a test sent are good work refused.
        if f.dead_letters > self.bad_expected + extra_dead_letters_allowed:
            parked = [(d.actor, d.field, d.reason) for d in self.dead_letters()][-10:]
            problems.append(f"{f.dead_letters} messages parked, {self.bad_expected} expected: {parked}")

        # Parked jobs are lost work, except emails whose delivery is unknown (ops decide).
        f.dead_jobs = Counter(j.kind for j in dead_jobs)
        other_dead = [(j.key, j.last_error) for j in dead_jobs if j.kind != "send_email"]
        if len(other_dead) > dead_jobs_allowed:
            problems.append(f"jobs parked: {other_dead[:10]}")
        return f
