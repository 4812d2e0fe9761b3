"""The workflow registry: what the engine dispatches through."""

from __future__ import annotations

import pytest

from dunning.engine.registry import Workflow, check, event_handlers, workflows


def test_every_event_type_of_the_contract_has_a_handler() -> None:
    from dunning.contract import EVENT_TYPES

    for event_type in EVENT_TYPES:
        assert event_handlers(event_type), event_type


def test_registered_workflows_claim_distinct_kinds() -> None:
    check()
    assert [w.name for w in workflows()] == ["failed_payments", "lifecycle", "price_migrations"]
    # The failed-payment handler stores the facts the lifecycle and price handlers read: it runs first.
    names = [h.__module__ for h in event_handlers("subscription.upserted")]
    assert names == [
        "dunning.workflows.failed_payments.handlers",
        "dunning.workflows.lifecycle.handlers",
        "dunning.workflows.price_migrations.handlers",
    ]
    # Failed payments, the hot path, pay nothing for lifecycle notices.
    assert len(event_handlers("invoice.payment_failed")) == 1


def test_two_workflows_claiming_one_job_kind_are_refused() -> None:
    def handler(rt, job):  # type: ignore[no-untyped-def]
        return "done", []

    a = Workflow(name="a", jobs={"send": handler})
    b = Workflow(name="b", jobs={"send": handler})
    with pytest.raises(ValueError, match="jobs 'send' is claimed by a and b"):
        check((a, b))
    with pytest.raises(ValueError, match="name 'a'"):
        check((a, Workflow(name="a")))


def test_describe_failure_shows_our_reasons_and_only_the_type_of_others() -> None:
    from dunning.billing.port import BillingRejected
    from dunning.contract import InvalidEvent
    from dunning.errors import describe_failure

    assert describe_failure(InvalidEvent("data.invoice.currency", "unknown currency 'XYZ'")) == (
        "data.invoice.currency",
        "unknown currency 'XYZ'",
        "InvalidEvent",
    )
    assert describe_failure(BillingRejected("409 invoice_already_paid"))[1] == "409 invoice_already_paid"
    field, reason, kind = describe_failure(ValueError("jane@example.com is not valid"))
    assert field is None and "jane@example.com" not in reason and kind == "ValueError"
