"""Group commit: many events in one transaction give the same results as one at a time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from dunning.contract import parse_event
from dunning.engine.ingest import ingest_many
from dunning.store.models import Case, Job, Outbox, ProcessedEvent
from dunning.workflows.failed_payments.handlers import MissingReference

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).isoformat()


def _failed(event_id: str, invoice: str, sub: str, cid: str, code: str = "insufficient_funds") -> dict:
    return {
        "id": event_id,
        "type": "invoice.payment_failed",
        "occurred_at": NOW,
        "data": {
            "invoice": {
                "id": invoice,
                "subscription_id": sub,
                "customer_id": cid,
                "amount_minor": 4900,
                "currency": "EUR",
            },
            "decline_code": code,
        },
    }


def test_a_mixed_batch_matches_the_one_at_a_time_semantics(world) -> None:
    h = world
    h.customer("cus_1", sub="sub_1")
    h.customer("cus_2", sub="sub_2")
    events = [
        parse_event(e)
        for e in [
            _failed("e1", "in_1", "sub_1", "cus_1"),
            _failed("e2", "in_2", "sub_2", "cus_2"),
            {
                "id": "e3",
                "type": "invoice.paid",
                "occurred_at": NOW,
                "data": {
                    "invoice": {
                        "id": "in_1",
                        "subscription_id": "sub_1",
                        "amount_minor": 4900,
                        "currency": "EUR",
                    }
                },
            },
            _failed(
                "e4", "in_2", "sub_2", "cus_2", code="stolen_card"
            ),  # same invoice again: updates the case
            _failed("e1", "in_1", "sub_1", "cus_1"),  # a redelivery inside the batch
        ]
    ]
    results = ingest_many(h.rt, events)
    assert [r[0] for r in results] == [
        "case_opened",
        "case_opened",
        "case_recovered",
        "case_updated",
        "duplicate",
    ]  # type: ignore[index]
    h.send_jobs_after(results)
    h.settle()
    with h.rt.sessions() as s:
        cases = {c.invoice_id: c for c in s.execute(select(Case)).scalars()}
        assert len(cases) == 2
        assert (cases["in_1"].status, cases["in_1"].outcome) == ("recovered", "paid")
        assert (cases["in_2"].status, cases["in_2"].decline_code) == ("open", "stolen_card")
        assert cases["in_2"].needs_new_payment_method
        kinds = sorted((o.case_id, o.kind) for o in s.execute(select(Outbox)).scalars())
        assert kinds == sorted(
            [
                (cases["in_1"].id, "payment_failed"),
                (cases["in_1"].id, "payment_recovered"),
                (cases["in_2"].id, "payment_failed"),
                (cases["in_2"].id, "payment_failed"),  # the new hard decline asks for another card, once
            ]
        )
        assert (
            s.execute(
                select(func.count())
                .select_from(ProcessedEvent)
                .where(ProcessedEvent.id.in_(["e1", "e2", "e3", "e4"]))
            ).scalar_one()
            == 4
        )
    # The recovered case's failure email may have been dropped as no longer true; none went out twice.
    sent = h.notices("cus_1@example.com")
    assert sent.count("payment_recovered") == 1 and sent.count("payment_failed") <= 1


def test_one_bad_event_does_not_sink_its_batch(world) -> None:
    h = world
    h.customer("cus_1", sub="sub_1")
    events = [
        parse_event(_failed("e1", "in_1", "sub_1", "cus_1")),
        parse_event(_failed("e2", "in_9", "sub_9", "cus_9")),
    ]
    results = ingest_many(h.rt, events)
    assert results[0][0] == "case_opened"  # type: ignore[index]
    assert isinstance(results[1], MissingReference)
    h.send_jobs_after(results)
    h.settle()
    assert h.cases() == 1
    assert h.notices() == ["payment_failed"]


def test_cases_opened_before_a_barrier_are_stored_and_later_events_see_them(world) -> None:
    """New cases are written once at commit; an event after a barrier sees and cancels them."""
    h = world
    for i in (1, 2, 3):
        h.customer(f"cus_{i}", sub=f"sub_{i}")
    events = [
        parse_event(e)
        for e in [
            _failed("e1", "in_1", "sub_1", "cus_1"),
            _failed("e2", "in_2", "sub_2", "cus_2"),
            # Not a failure: a barrier writes e1 and e2 first; the case of in_1 is then closed
            # and its jobs (already stored) canceled by UPDATE.
            {
                "id": "e3",
                "type": "subscription.canceled",
                "occurred_at": NOW,
                "data": {"subscription_id": "sub_1"},
            },
            # After the barrier: a new case again, with an id that does not collide.
            _failed("e4", "in_3", "sub_3", "cus_3"),
        ]
    ]
    results = ingest_many(h.rt, events)
    assert [r[0] for r in results] == ["case_opened", "case_opened", "subscription_canceled", "case_opened"]  # type: ignore[index]
    with h.rt.sessions() as s:
        cases = {c.invoice_id: c for c in s.execute(select(Case)).scalars()}
        assert len({c.id for c in cases.values()}) == 3
        assert cases["in_1"].status == "closed"
        assert {cases["in_2"].status, cases["in_3"].status} == {"open"}
        pending = {
            (j.case_id, j.kind) for j in s.execute(select(Job).where(Job.status == "pending")).scalars()
        }
        assert not [
            k for k in pending if k[0] == cases["in_1"].id and k[1] in {"retry", "notice", "suspend", "end"}
        ]
        for inv in ("in_2", "in_3"):
            kinds = {k for cid, k in pending if cid == cases[inv].id}
            assert {"retry", "suspend"} <= kinds
