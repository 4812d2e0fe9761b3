"""Stripe webhook events (example payloads in Stripe's documented shapes) mapped to our events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dunning.contract import InvalidEvent, parse_event
from dunning.contract.stripe import MAPPED_TYPES, UNKNOWN_DECLINE, Ignored, Mapped, map_stripe_event
from dunning.signing import SignatureError, sign, verify_any

FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"


def stripe_event(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def mapped(name: str) -> dict[str, Any]:
    result = map_stripe_event(stripe_event(name))
    assert isinstance(result, Mapped), result
    return result.envelope


def test_every_mapped_type_has_an_example_payload() -> None:
    types = {json.loads(p.read_text())["type"] for p in FIXTURES.glob("*.json")}
    assert set(MAPPED_TYPES) <= types
    assert "charge.succeeded" in types  # and one we do not map


def test_customer_created_becomes_customer_upserted() -> None:
    event = parse_event(mapped("customer_created"))
    assert event.type == "customer.upserted"
    assert event.id == "evt_1QcusCreated0001"
    assert event.occurred_at.isoformat() == "2026-12-11T12:00:00+00:00"
    customer = event.data.customer
    assert (customer.id, customer.email, customer.name) == (
        "cus_Stripe001",
        "ada@example.com",
        "Ada Lovelace",
    )
    assert customer.locale == "fi-FI"  # Stripe's preferred_locales[0]
    assert customer.timezone == "Europe/Helsinki"  # from metadata.timezone


def test_customer_without_email_maps_but_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_event(mapped("customer_updated_no_email"))
    assert refused.value.field == "data.customer.email"


def test_subscription_created_with_expanded_card() -> None:
    event = parse_event(mapped("customer_subscription_created"))
    assert event.type == "subscription.upserted"
    sub = event.data.subscription
    assert (sub.id, sub.customer_id, sub.plan, sub.status) == (
        "sub_Stripe001",
        "cus_Stripe001",
        "price_pro_monthly",
        "active",
    )
    assert (sub.amount_minor, sub.currency, sub.interval, sub.interval_count) == (2900, "EUR", "month", 1)
    assert sub.current_period_end.isoformat() == "2027-01-11T12:01:00+00:00"
    assert sub.started_at is not None and sub.started_at.isoformat() == "2026-12-11T12:01:00+00:00"
    assert sub.payment_method is not None
    pm = sub.payment_method
    assert (pm.present, pm.brand, pm.last4, pm.exp_month, pm.exp_year) == (True, "visa", "4242", 4, 2031)


def test_subscription_updated_in_the_basil_shape() -> None:
    """Since 2025-03-31.basil the period end lives on the items; quantities multiply the unit amount."""
    event = parse_event(mapped("customer_subscription_updated_basil"))
    sub = event.data.subscription
    assert sub.current_period_end.isoformat() == "2027-12-11T12:01:00+00:00"
    assert (sub.amount_minor, sub.currency, sub.interval) == (6000, "USD", "year")
    assert sub.cancel_at_period_end is True
    # The default payment method is only an id here: unknown, not "no card".
    assert sub.payment_method is None


def test_trial_will_end_refreshes_the_subscription() -> None:
    event = parse_event(mapped("customer_subscription_trial_will_end"))
    assert event.type == "subscription.upserted"
    sub = event.data.subscription
    assert sub.status == "trialing"
    assert sub.trial_end is not None and sub.trial_end.isoformat() == "2026-12-14T12:00:00+00:00"
    assert sub.amount_minor == 900


def test_subscription_deleted_becomes_canceled_with_reason() -> None:
    event = parse_event(mapped("customer_subscription_deleted"))
    assert event.type == "subscription.canceled"
    assert event.data.subscription_id == "sub_Stripe001"
    assert event.data.reason == "payment_failed"


def test_incomplete_expired_is_canceled_for_us() -> None:
    raw = stripe_event("customer_subscription_created")
    raw["data"]["object"]["status"] = "incomplete_expired"
    assert parse_event(map_stripe_event(raw).envelope).data.subscription.status == "canceled"  # type: ignore[union-attr]


def test_invoice_payment_failed_takes_the_decline_from_the_expanded_payment_intent() -> None:
    event = parse_event(mapped("invoice_payment_failed"))
    assert event.type == "invoice.payment_failed"
    assert event.data.decline_code == "insufficient_funds"
    assert event.data.failure_message == "Your card has insufficient funds."
    invoice = event.data.invoice
    assert (invoice.id, invoice.subscription_id, invoice.customer_id) == (
        "in_Stripe001",
        "sub_Stripe001",
        "cus_Stripe001",
    )
    assert (invoice.amount_minor, invoice.currency) == (2900, "EUR")


def test_invoice_payment_failed_without_expansion_is_an_unknown_soft_decline() -> None:
    raw = stripe_event("invoice_payment_failed")
    raw["data"]["object"]["payment_intent"] = "pi_Stripe001"
    event = parse_event(map_stripe_event(raw).envelope)  # type: ignore[union-attr]
    assert event.data.decline_code == UNKNOWN_DECLINE  # type: ignore[union-attr]
    assert event.data.failure_message is None  # type: ignore[union-attr]


def test_invoice_paid_in_the_basil_shape_finds_its_subscription_under_parent() -> None:
    event = parse_event(mapped("invoice_paid_basil"))
    assert event.type == "invoice.paid"
    assert event.data.invoice.subscription_id == "sub_Stripe001"
    assert event.data.invoice.amount_minor == 2900


def test_one_off_invoice_is_ignored_not_parked() -> None:
    raw = stripe_event("invoice_payment_failed")
    del raw["data"]["object"]["subscription"]
    result = map_stripe_event(raw)
    assert isinstance(result, Ignored)
    assert "no subscription" in result.reason


@pytest.mark.parametrize(
    ("name", "exp"), [("payment_method_attached", (9, 2032)), ("payment_method_updated", (10, 2033))]
)
def test_payment_method_events(name: str, exp: tuple[int, int]) -> None:
    event = parse_event(mapped(name))
    assert event.type == "payment_method.updated"
    assert event.data.customer_id == "cus_Stripe001"
    pm = event.data.payment_method
    assert (pm.brand, pm.last4, (pm.exp_month, pm.exp_year)) == ("mastercard", "4444", exp)


def test_unmapped_and_malformed_events_are_ignored_with_a_reason() -> None:
    result = map_stripe_event(stripe_event("charge_succeeded"))
    assert result == Ignored("charge.succeeded", "not a type dunning acts on")
    assert isinstance(map_stripe_event([1, 2]), Ignored)
    assert isinstance(map_stripe_event({"type": 7}), Ignored)


def test_mapped_type_with_garbage_object_maps_and_is_refused_by_validation() -> None:
    result = map_stripe_event({"id": "evt_x", "type": "customer.subscription.updated", "created": "soon"})
    assert isinstance(result, Mapped)
    with pytest.raises(InvalidEvent):
        parse_event(result.envelope)


# Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t." + body>, 300 s tolerance, several secrets.


def test_stripe_signature_with_any_of_several_secrets() -> None:
    body = b'{"id":"evt_1"}'
    header = sign("whsec_new", body, timestamp=1_000_000)
    assert verify_any(("whsec_old", "whsec_new"), body, header, now=1_000_100) == 1_000_000
    with pytest.raises(SignatureError, match="mismatch"):
        verify_any(("whsec_old",), body, header, now=1_000_100)


def test_stripe_signature_tolerance_is_300_seconds() -> None:
    body = b"{}"
    header = sign("whsec_a", body, timestamp=1_000_000)
    assert verify_any(["whsec_a"], body, header, now=1_000_300)
    with pytest.raises(SignatureError, match="too old"):
        verify_any(["whsec_a"], body, header, now=1_000_301)


def test_stripe_signature_header_with_a_v0_entry_and_rotated_v1s() -> None:
    """Stripe sends one v1 per active endpoint secret during its own rotation, plus a v0 we ignore."""
    body = b'{"a":1}'
    v1_old = sign("whsec_old", body, timestamp=5).split("v1=")[1]
    v1_new = sign("whsec_new", body, timestamp=5).split("v1=")[1]
    header = f"t=5,v1={v1_old},v1={v1_new},v0=deadbeef"
    assert verify_any(("whsec_new",), body, header, now=10) == 5
    with pytest.raises(SignatureError):
        verify_any(("whsec_new",), body + b" ", header, now=10)
    with pytest.raises(SignatureError, match="no secret"):
        verify_any((), body, header, now=10)
