"""Faults end to end: lost billing answers, billing 5xx, SMTP refusals, bad and early events.

Real Redis, SMTP (aiosmtpd), SQLite and PostgreSQL, the sandbox billing API (with injected
faults), an in-process Dramatiq worker and scheduler; simulated clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from dramatiq import Message
from sqlalchemy import select
from tests.support.harness import SECRET, START, Harness

from dunning.billing.http_client import HttpBillingClient
from dunning.mail.smtp import SmtpSender
from dunning.store.dead_letters import list_parked, requeue
from dunning.store.models import DeadLetter, ProcessedEvent

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until ``condition`` holds (for work that no settle() can see, like a broker's delayed retry)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _dead_letters(h: Harness) -> list[DeadLetter]:
    with h.rt.sessions() as s:
        return list(s.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars())


def _contract_calls(h: Harness) -> list[tuple[str, str, str | None, str | None]]:
    return [(c.method, c.path, c.idempotency_key, c.fault) for c in h.sandbox.state.calls()]


# -- billing API -------------------------------------------------------------------------------


def test_lost_answer_is_reconciled_not_charged_twice(world) -> None:
    h = world
    # A client that gives up quickly, so a hanging sandbox looks like a lost answer.
    old = h.rt.billing
    h.rt.billing = HttpBillingClient(
        h.sandbox.url, SECRET, timeout_s=0.3, attempts=2, backoff_initial_s=0.01, backoff_jitter_s=0.01
    )
    old.close()  # type: ignore[attr-defined]
    h.sandbox.state.set_faults(hang_s=1.0)
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=1)
    h.settle()
    # The first charge goes through but its answer is lost; the retry under the same key hangs too.
    h.sandbox.state.queue_faults("lost_answer", "timeout")
    h.advance(DAY)

    key = "dunning:in_1:attempt-1"
    assert _contract_calls(h) == [
        ("POST", "/invoices/in_1/pay", key, "lost_answer"),
        ("POST", "/invoices/in_1/pay", key, "timeout"),
        ("GET", "/invoices/in_1", None, None),
    ]
    stats = h.sandbox.state.stats()
    assert stats["double_charges"] == 0
    assert stats["charges"]["in_1"] == 1
    [attempt] = h.attempts()
    assert attempt.status == "succeeded"
    case = h.case()
    assert case.status == "recovered"
    assert case.outcome == "retry"
    assert h.notices() == ["payment_failed", "payment_recovered"]
    [retry] = [j for j in h.jobs() if j.kind == "retry"]
    assert retry.status == "done"
    assert retry.runs == 2  # the run that lost the answer, and the one that reconciled it

    h.advance(timedelta(days=5), step=timedelta(days=5))
    assert len(h.pay_calls()) == 2
    assert h.sandbox.state.stats()["double_charges"] == 0


def test_billing_5xx_twice_then_success_under_the_same_key(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=1)
    h.settle()
    h.sandbox.state.queue_faults("error", "error")
    h.advance(DAY)

    calls = h.pay_calls()
    assert [(c.idempotency_key, c.status, c.fault) for c in calls] == [
        ("dunning:in_1:attempt-1", 503, "error"),
        ("dunning:in_1:attempt-1", 503, "error"),
        ("dunning:in_1:attempt-1", 200, None),
    ]
    assert calls[-1].outcome == "succeeded"
    stats = h.sandbox.state.stats()
    assert stats["charges"]["in_1"] == 1
    assert stats["double_charges"] == 0
    assert [(a.attempt_no, a.status) for a in h.attempts()] == [(1, "succeeded")]
    assert h.case().status == "recovered"
    assert h.notices() == ["payment_failed", "payment_recovered"]


# -- SMTP --------------------------------------------------------------------------------------


def test_smtp_451_twice_delivers_exactly_once(world) -> None:
    h = world
    # A shorter SMTP timeout than the default 10 s keeps a failing run quick; delivery is the same.
    h.rt.sender = SmtpSender(h.smtp.url, timeout_s=2.0)
    h.customer()
    h.smtp.fail_next(2, code=451)
    h.fail(code="insufficient_funds")
    h.settle()

    assert h.notices() == ["payment_failed"]
    [row] = h.outbox()
    assert row.status == "sent"
    assert row.sent_at == START
    [mail] = h.smtp.messages
    assert str(mail["Message-ID"]) == row.message_id
    # Nothing more goes out later for this email.
    h.advance(timedelta(hours=12), step=timedelta(hours=12))
    assert h.notices() == ["payment_failed"]


def test_smtp_550_marks_the_email_failed_without_a_retry_loop(world) -> None:
    h = world
    h.customer()
    h.smtp.fail_next(1, code=550, text="5.1.1 No such user here")
    h.fail(code="insufficient_funds")
    h.settle()

    assert h.smtp.messages == []
    [row] = h.outbox()
    assert row.kind == "payment_failed"
    assert row.status == "failed"
    assert row.attempts == 1
    assert row.last_error is not None and "550" in row.last_error
    [job] = [j for j in h.jobs() if j.kind == "send_email"]
    assert job.status == "done"
    assert job.runs == 1
    assert job.last_error is not None and "permanent SMTP failure" in job.last_error

    # The case goes on, but the address is now bouncing: the day-6 reminder is skipped, saying why,
    # and the refused email is not re-sent.
    h.advance(timedelta(days=6), step=timedelta(days=3))
    assert h.notices() == []
    reminder = next(r for r in h.outbox() if r.kind == "payment_reminder")
    assert reminder.status == "skipped"
    assert reminder.last_error is not None and "bounced" in reminder.last_error
    assert next(r for r in h.outbox() if r.kind == "payment_failed").status == "failed"
    # (A new address from customer.upserted lifts it: tests/integration/test_email_recipients.py.)


# -- bad and early events ---------------------------------------------------------------------


def test_a_refused_message_fails_alone_and_the_address_keeps_getting_email(world) -> None:
    """A spam filter's 554 5.7.1 refuses the message, not the mailbox: the next notice still goes."""
    h = world
    h.customer()
    h.smtp.fail_next(1, code=554, text="5.7.1 Message rejected by policy")
    h.fail(code="insufficient_funds")
    h.settle()

    assert h.smtp.messages == []
    [row] = h.outbox()
    assert (row.kind, row.status, row.attempts) == ("payment_failed", "failed", 1)
    assert row.last_error is not None and "554 5.7.1" in row.last_error
    assert any(
        "payment_failed refused by the mail server (SMTP 554 5.7.1): the message, not the address" in line
        for line in h.timeline()
    )
    assert not any("marked as bouncing" in line for line in h.timeline())

    h.advance(timedelta(days=6), step=timedelta(days=3))
    assert h.notices() == ["payment_reminder"]
    reminder = next(r for r in h.outbox() if r.kind == "payment_reminder")
    assert reminder.status == "sent"


def test_invalid_event_is_parked_with_its_reason_and_requeue_parks_it_again(world) -> None:
    h = world
    h.customer()
    calls_before = len(h.sandbox.state.calls())
    envelope: dict[str, Any] = {
        "id": "evt_bad_1",
        "type": "invoice.payment_failed",
        "occurred_at": "2026-11-02T10:00:00Z",
        "data": {
            "invoice": {
                "id": "in_1",
                "subscription_id": "sub_1",
                "customer_id": "cus_1",
                "amount_minor": 4900,
                "currency": "EUR",
            }
            # decline_code missing
        },
    }
    h.send(envelope)
    h.settle()

    [dead] = _dead_letters(h)
    assert dead.queue == "billing_events"
    assert dead.actor == "ingest_event"
    assert dead.field == "data.decline_code"
    assert dead.reason
    assert dead.error_type == "InvalidEvent"
    assert dead.requeued_at is None
    assert dead.payload and "evt_bad_1" in dead.payload
    # Refused, not applied and not retried: nothing changed anywhere.
    assert h.cases() == 0
    assert h.outbox() == []
    assert len(h.sandbox.state.calls()) == calls_before
    with h.rt.sessions() as s:
        assert s.get(ProcessedEvent, "evt_bad_1") is None
    assert h.broker.client.hlen("dramatiq:billing_events.DQ.msgs") == 0  # no delayed retry pending

    def send(queue: str, actor: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        h.broker.enqueue(
            Message(queue_name=queue, actor_name=actor, args=tuple(args), kwargs=kwargs, options={})
        )
        h.sent_events += 1

    requeue(h.rt, f"m{dead.id}", send)
    h.settle()
    # It fails the same way and is parked again: listed once, with the same field, not lost.
    [parked] = list_parked(h.rt)
    assert parked.field == "data.decline_code"
    assert parked.payload and "evt_bad_1" in parked.payload
    rows = _dead_letters(h)
    assert len(rows) == 2
    assert rows[0].requeued_at is not None
    assert rows[1].requeued_at is None
    assert h.cases() == 0


def test_event_for_an_unknown_customer_is_retried_until_the_customer_arrives(world) -> None:
    h = world
    h.fail("in_9", sub="sub_9", cid="cus_9", code="insufficient_funds", succeed_on_attempt=0)
    h.settle()  # the first delivery ran (and asked for a retry)
    assert h.cases() == 0
    assert _dead_letters(h) == []
    assert h.broker.client.hlen("dramatiq:billing_events.DQ.msgs") == 1  # a delayed retry is pending

    h.customer("cus_9", sub="sub_9")
    # Dramatiq redelivers after its backoff (at least 2 s); no settle() can see a delayed message.
    _wait_for("the case to open", lambda: h.cases() == 1, timeout=30)
    h.settle()

    case = h.case("in_9")
    assert case.status == "open"
    assert case.customer_id == "cus_9"
    assert h.notices("cus_9@example.com") == ["payment_failed"]
    assert _dead_letters(h) == []
    with h.rt.sessions() as s:
        assert s.execute(select(ProcessedEvent.type)).scalars().all().count("invoice.payment_failed") == 1
