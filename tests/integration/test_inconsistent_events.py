"""Events that contradict what we already know are parked, never acted on.

A valid ``invoice.paid`` of 1 JPY for a case of 49.00 EUR must not close the
case, and a failure naming a customer who does not own the subscription must
not email that customer (nor let grace suspend the owner's subscription).

End to end on real parts: Redis, SMTP (aiosmtpd), SQLite and PostgreSQL, the
sandbox billing API, an in-process Dramatiq worker and scheduler; events go
through the real client (or straight into the group commit for a batch).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dramatiq import Message
from sqlalchemy import select
from tests.support.harness import Harness

from dunning.contract import parse_event
from dunning.engine.ingest import ingest_many
from dunning.report import build_report
from dunning.store.dead_letters import Parked, list_parked, requeue
from dunning.store.models import Outbox, ProcessedEvent

pytestmark = pytest.mark.integration


def _paid(h: Harness, *, amount: int, currency: str, event_id: str, sub: str = "sub_1") -> None:
    """An ``invoice.paid`` for in_1 as the billing system would send it (valid by the contract)."""
    h.client.invoice_paid(
        invoice_id="in_1", subscription_id=sub, amount_minor=amount, currency=currency, event_id=event_id
    )
    h.sent_events += 1


def _parked(h: Harness, event_id: str) -> Parked:
    [item] = [p for p in list_parked(h.rt) if p.payload and event_id in p.payload]
    return item


def _processed(h: Harness, event_id: str) -> bool:
    with h.rt.sessions() as s:
        return s.get(ProcessedEvent, event_id) is not None


def _kinds(h: Harness) -> list[str]:
    """Kinds of every email decided (the outbox), whoever it is for."""
    with h.rt.sessions() as s:
        return [o.kind for o in s.execute(select(Outbox).order_by(Outbox.id)).scalars()]


def _recovered(h: Harness) -> dict[str, int]:
    return {cur: v for cur, v in build_report(h.rt).recovered_minor.items() if v}


def _open_case(h: Harness) -> None:
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    assert h.notices() == ["payment_failed"]


def _assert_still_open_and_nothing_recovered(h: Harness) -> None:
    case = h.case()
    assert (case.status, case.outcome, case.recovered_minor) == ("open", None, 0)
    assert h.notices() == ["payment_failed"]  # read from the SMTP server: no payment_recovered
    assert _kinds(h) == ["payment_failed"]
    assert _recovered(h) == {}
    report = build_report(h.rt)
    assert report.by_status["open"] == 1 and report.by_status["recovered"] == 0
    assert h.broker.client.hlen("dramatiq:billing_events.DQ.msgs") == 0  # parked, not retried


def test_paid_in_yen_does_not_close_a_euro_case(world) -> None:
    h = world
    _open_case(h)

    _paid(h, amount=1, currency="JPY", event_id="evt_paid_jpy")
    h.settle()

    _assert_still_open_and_nothing_recovered(h)
    dead = _parked(h, "evt_paid_jpy")
    assert (dead.queue, dead.field) == ("billing_events", "data.invoice.currency")
    assert "stored as 4900 EUR" in dead.reason and "received 1 JPY" in dead.reason
    assert not _processed(h, "evt_paid_jpy")
    # The case goes on: its next retry is still planned.
    assert [j.kind for j in h.jobs("pending") if j.kind == "retry"] == ["retry"]


def test_paid_in_the_right_currency_but_another_amount_is_parked(world) -> None:
    h = world
    _open_case(h)

    _paid(h, amount=4800, currency="EUR", event_id="evt_paid_short")
    h.settle()

    _assert_still_open_and_nothing_recovered(h)
    dead = _parked(h, "evt_paid_short")
    assert dead.field == "data.invoice.amount_minor"
    assert "stored as 4900 EUR" in dead.reason and "received 4800 EUR" in dead.reason
    assert not _processed(h, "evt_paid_short")


def test_paid_for_another_subscription_is_parked(world) -> None:
    h = world
    _open_case(h)
    h.customer("cus_2", sub="sub_2")

    _paid(h, amount=4900, currency="EUR", event_id="evt_paid_other_sub", sub="sub_2")
    h.settle()

    _assert_still_open_and_nothing_recovered(h)
    dead = _parked(h, "evt_paid_other_sub")
    assert dead.field == "data.invoice.subscription_id"
    assert "sub_1" in dead.reason and "sub_2" in dead.reason


def test_the_right_payment_after_a_wrong_one_recovers_and_is_what_the_report_counts(world) -> None:
    h = world
    _open_case(h)
    _paid(h, amount=1, currency="JPY", event_id="evt_paid_jpy")
    h.settle()
    assert h.case().status == "open"

    h.paid(amount=4900)
    h.settle()

    case = h.case()
    assert (case.status, case.outcome, case.recovered_minor) == ("recovered", "paid", 4900)
    assert h.notices() == ["payment_failed", "payment_recovered"]
    assert _recovered(h) == {"EUR": 4900}
    # The refused event is still there for ops, with its reason.
    assert _parked(h, "evt_paid_jpy").field == "data.invoice.currency"


def test_failure_naming_a_customer_who_does_not_own_the_subscription(world) -> None:
    h = world
    h.customer("cus_1", sub="sub_1")
    h.customer("cus_2", sub=None)

    h.fail("in_1", sub="sub_1", cid="cus_2", event_id="evt_failed_cus_2")
    h.settle()

    assert h.cases() == 0
    dead = _parked(h, "evt_failed_cus_2")
    assert dead.field == "data.invoice.customer_id"
    assert "belongs to customer cus_1" in dead.reason and "received cus_2" in dead.reason
    assert not _processed(h, "evt_failed_cus_2")
    # Past the whole grace period: nobody was emailed, the owner's subscription was not suspended.
    h.advance(timedelta(days=15), step=timedelta(days=5))
    assert h.smtp.messages == []
    assert h.billing_actions("sub_1") == []
    assert h.sandbox.state.subscription("sub_1").access == "active"


def test_a_repeat_failure_that_disagrees_with_the_open_case_is_parked(world) -> None:
    h = world
    _open_case(h)
    h.customer("cus_2", sub=None)

    h.fail("in_1", sub="sub_1", cid="cus_2", code="stolen_card", event_id="evt_again_cus_2")
    h.fail("in_1", sub="sub_1", amount=100, code="stolen_card", event_id="evt_again_100")
    h.settle()

    assert _parked(h, "evt_again_cus_2").field == "data.invoice.customer_id"
    assert _parked(h, "evt_again_100").field == "data.invoice.amount_minor"
    case = h.case()
    assert (case.status, case.decline_code, case.customer_id) == ("open", "insufficient_funds", "cus_1")
    assert h.notices() == ["payment_failed"]
    assert h.notices("cus_2@example.com") == []


def test_a_parked_event_is_applied_when_requeued_after_the_facts_are_fixed(world) -> None:
    h = world
    h.customer("cus_1", sub="sub_1")
    h.customer("cus_2", sub=None)
    h.fail("in_1", sub="sub_1", cid="cus_2", event_id="evt_failed_cus_2")
    h.settle()
    dead = _parked(h, "evt_failed_cus_2")

    def send(queue: str, actor: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        h.broker.enqueue(
            Message(queue_name=queue, actor_name=actor, args=tuple(args), kwargs=kwargs, options={})
        )
        h.sent_events += 1

    # Requeued as is, the facts still say otherwise: parked again, still not applied.
    requeue(h.rt, dead.ref, send)
    h.settle()
    assert h.cases() == 0
    assert _parked(h, "evt_failed_cus_2").field == "data.invoice.customer_id"

    # Ops learn that sub_1 is in fact cus_2's: the billing system re-sends the subscription.
    h.client.subscription_upserted(
        {
            "id": "sub_1",
            "customer_id": "cus_2",
            "plan": "pro",
            "status": "active",
            "amount_minor": 4900,
            "currency": "EUR",
            "interval": "month",
            "current_period_end": (h.rt.clock.now() + timedelta(days=30)).isoformat(),
        }
    )
    h.sent_events += 1
    h.settle()
    requeue(h.rt, _parked(h, "evt_failed_cus_2").ref, send)
    h.settle()

    case = h.case()
    assert (case.status, case.customer_id) == ("open", "cus_2")
    assert h.notices("cus_2@example.com") == ["payment_failed"]
    assert h.notices("cus_1@example.com") == []
    assert _processed(h, "evt_failed_cus_2")
    assert [p for p in list_parked(h.rt) if "evt_failed_cus_2" in (p.payload or "")] == []
    assert any("changed customer/currency from cus_1/EUR to cus_2/EUR" in t for t in h.timeline())


NOW = datetime.now(UTC).isoformat()


def _failed(event_id: str, invoice: str, sub: str, cid: str, *, amount: int = 4900) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "invoice.payment_failed",
        "occurred_at": NOW,
        "data": {
            "invoice": {
                "id": invoice,
                "subscription_id": sub,
                "customer_id": cid,
                "amount_minor": amount,
                "currency": "EUR",
            },
            "decline_code": "insufficient_funds",
        },
    }


def _paid_event(event_id: str, invoice: str, sub: str, amount: int, currency: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "invoice.paid",
        "occurred_at": NOW,
        "data": {
            "invoice": {"id": invoice, "subscription_id": sub, "amount_minor": amount, "currency": currency}
        },
    }


def test_in_a_group_commit_only_the_inconsistent_events_are_refused(world) -> None:
    """The checks read what the batch prefetched; a refusal does not sink its neighbours."""
    from dunning.workflows.failed_payments.handlers import InconsistentEvent

    h = world
    for i in (1, 2, 3, 9):
        h.customer(f"cus_{i}", sub=f"sub_{i}")
    h.fail("in_9", sub="sub_9", cid="cus_9", event_id="e_before")  # a case stored before the batch
    h.settle()
    events = [
        parse_event(e)
        for e in [
            _failed("e0", "in_2", "sub_1", "cus_2"),  # prefetched subscription: another owner
            _failed("e1", "in_1", "sub_1", "cus_1"),
            _failed("e2", "in_9", "sub_9", "cus_1"),  # prefetched case: another customer
            _failed("e3", "in_3", "sub_3", "cus_3"),
            _paid_event("e4", "in_1", "sub_1", 1, "JPY"),  # after a barrier: the case e1 opened
            _failed("e5", "in_1", "sub_1", "cus_1", amount=4800),  # the invoice e1 wrote
            _paid_event("e6", "in_3", "sub_3", 4900, "EUR"),
        ]
    ]
    results = ingest_many(h.rt, events)
    outcomes = [r if isinstance(r, Exception) else r[0] for r in results]
    assert [o.field if isinstance(o, InconsistentEvent) else o for o in outcomes] == [
        "data.invoice.customer_id",
        "case_opened",
        "data.invoice.customer_id",
        "case_opened",
        "data.invoice.currency",
        "data.invoice.amount_minor",
        "case_recovered",
    ]
    h.send_jobs_after(results)
    h.settle()
    with h.rt.sessions() as s:
        done = set(s.execute(select(ProcessedEvent.id)).scalars())
    assert {"e1", "e3", "e6"} <= done and not {"e0", "e2", "e4", "e5"} & done
    assert (h.case("in_1").status, h.case("in_3").status, h.case("in_9").status) == (
        "open",
        "recovered",
        "open",
    )
    assert h.case("in_9").customer_id == "cus_9"
    assert h.cases() == 3  # in_2 never opened
    # The after-commit messages of the batch went out although its first event was refused.
    assert h.notices("cus_1@example.com") == ["payment_failed"]
    assert h.notices("cus_2@example.com") == []
    assert h.notices("cus_3@example.com")[-1] == "payment_recovered"
    assert _recovered(h) == {"EUR": 4900}
