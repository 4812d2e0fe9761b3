"""Events processed out of order never let older facts overwrite newer ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dunning.store.models import Customer

pytestmark = pytest.mark.integration


# After the harness's own events, which carry the wall-clock time of sending.
BASE = datetime.now(UTC) + timedelta(days=1)


def _iso(delta: timedelta) -> str:
    return (BASE + delta).isoformat()


def test_an_older_customer_upsert_processed_late_is_ignored(world) -> None:
    h = world
    h.customer()
    h.client.customer_upserted(
        {"id": "cus_1", "email": "new@example.com", "name": "New Name"}, occurred_at=_iso(timedelta(hours=2))
    )
    h.client.customer_upserted(
        {"id": "cus_1", "email": "old@example.com", "name": "Old Name"}, occurred_at=_iso(timedelta(hours=1))
    )
    h.sent_events += 2
    h.settle()
    with h.rt.sessions() as s:
        row = s.get(Customer, "cus_1")
        assert row is not None
        assert (row.email, row.name) == ("new@example.com", "New Name")


def test_an_older_payment_method_event_does_not_resurrect_a_removed_card(world) -> None:
    h = world
    h.customer()
    h.client.payment_method_updated(
        customer_id="cus_1", payment_method={"present": False}, occurred_at=_iso(timedelta(days=1))
    )
    h.client.payment_method_updated(
        customer_id="cus_1",
        payment_method={"present": True, "brand": "visa", "last4": "0000"},
        occurred_at=_iso(timedelta(hours=12)),
    )
    h.sent_events += 2
    h.settle()
    with h.rt.sessions() as s:
        row = s.get(Customer, "cus_1")
        assert row is not None
        assert row.pm_present is False
