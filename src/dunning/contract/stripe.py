"""Stripe webhook events mapped to our billing events (contract §1), as pure data.

A billing system that runs on Stripe can point a Stripe webhook endpoint at
``POST /stripe/webhook`` instead of writing a producer. Each Stripe event we
understand becomes exactly one of our envelopes, with Stripe's event id as its
id (so a redelivery by Stripe is a no-op, as for any producer) and its
``created`` time as ``occurred_at``; the envelope then goes through
:func:`dunning.contract.parse_event` like any other, so the same checks and the
same dead letters apply.

Both shapes Stripe has used recently are read: before API version
``2025-03-31.basil`` an invoice names its subscription in ``subscription`` and a
subscription carries ``current_period_end``; since, they live in
``parent.subscription_details.subscription`` and on each subscription item.

What Stripe does not send is not invented: a failed invoice whose payment intent
is not expanded has no decline code, so it is sent as ``unknown`` (a soft
decline: retried on schedule, which is what the billing system would do); a
subscription whose default payment method is not expanded is sent without
``payment_method`` ("unknown", not "no card"); a customer's timezone is read
from ``metadata.timezone`` when the billing system sets one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: Stripe event types we map, and the event type each becomes.
MAPPED_TYPES: dict[str, str] = {
    "invoice.payment_failed": "invoice.payment_failed",
    "invoice.paid": "invoice.paid",
    "customer.subscription.created": "subscription.upserted",
    "customer.subscription.updated": "subscription.upserted",
    "customer.subscription.trial_will_end": "subscription.upserted",
    "customer.subscription.deleted": "subscription.canceled",
    "payment_method.attached": "payment_method.updated",
    "payment_method.updated": "payment_method.updated",
    "customer.created": "customer.upserted",
    "customer.updated": "customer.upserted",
}

#: The decline code of a failed invoice whose payment intent Stripe did not expand.
UNKNOWN_DECLINE = "unknown"


@dataclass(frozen=True)
class Mapped:
    """A Stripe event turned into one of our envelopes (not validated yet)."""

    envelope: dict[str, Any]


@dataclass(frozen=True)
class Ignored:
    """A Stripe event we do not act on, and why (answered 200 and counted, never parked)."""

    stripe_type: str
    reason: str


def map_stripe_event(event: Any) -> Mapped | Ignored:
    """Map a parsed Stripe event object to our envelope, or say why it is ignored.

    Never raises: a Stripe event of a mapped type with missing or wrong fields
    still maps, and the envelope's validation names the field (and parks it).
    """
    if not isinstance(event, dict):
        return Ignored("(none)", "not a JSON object")
    stripe_type = event.get("type")
    if not isinstance(stripe_type, str) or not stripe_type:
        return Ignored("(none)", "no event type")
    ours = MAPPED_TYPES.get(stripe_type)
    if ours is None:
        return Ignored(stripe_type, "not a type dunning acts on")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        obj = {}
    build = _BUILDERS[ours]
    result = build(obj)
    if isinstance(result, str):
        return Ignored(stripe_type, result)
    return Mapped(
        {"id": event.get("id"), "type": ours, "occurred_at": _time(event.get("created")), "data": result}
    )


def _time(value: Any) -> Any:
    """A Stripe timestamp (Unix seconds) as RFC 3339; anything else is passed on for validation to name."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**37:
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    return value


def _currency(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _id(value: Any) -> Any:
    """An expandable field: the id whether Stripe sent the id or the expanded object."""
    if isinstance(value, dict):
        return value.get("id")
    return value


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _invoice_subscription(invoice: dict[str, Any]) -> Any:
    return _id(invoice.get("subscription")) or _id(
        _dig(invoice, "parent", "subscription_details", "subscription")
    )


def _failed_invoice(invoice: dict[str, Any]) -> dict[str, Any] | str:
    subscription = _invoice_subscription(invoice)
    if subscription is None:
        return "invoice belongs to no subscription (a one-off invoice)"
    error = _dig(invoice, "payment_intent", "last_payment_error") or _dig(invoice, "charge", "outcome")
    decline = None
    message = None
    if isinstance(error, dict):
        decline = error.get("decline_code") or error.get("code") or error.get("reason")
        message = error.get("message") or error.get("seller_message")
    return _drop_none(
        {
            "invoice": {
                "id": invoice.get("id"),
                "subscription_id": subscription,
                "customer_id": _id(invoice.get("customer")),
                "amount_minor": invoice.get("amount_due"),
                "currency": _currency(invoice.get("currency")),
            },
            "decline_code": decline if isinstance(decline, str) and decline else UNKNOWN_DECLINE,
            "failure_message": message[:500] if isinstance(message, str) else None,
        }
    )


def _paid_invoice(invoice: dict[str, Any]) -> dict[str, Any] | str:
    subscription = _invoice_subscription(invoice)
    if subscription is None:
        return "invoice belongs to no subscription (a one-off invoice)"
    return {
        "invoice": {
            "id": invoice.get("id"),
            "subscription_id": subscription,
            "amount_minor": invoice.get("amount_paid"),
            "currency": _currency(invoice.get("currency")),
        }
    }


def _card(method: Any) -> dict[str, Any] | None:
    """Our payment_method object from an expanded Stripe PaymentMethod (None when not expanded)."""
    if not isinstance(method, dict):
        return None
    card = method.get("card")
    if not isinstance(card, dict):
        return {"present": True}
    return _drop_none(
        {
            "present": True,
            "brand": card.get("brand"),
            "last4": card.get("last4"),
            "exp_month": card.get("exp_month"),
            "exp_year": card.get("exp_year"),
        }
    )


def _items(sub: dict[str, Any]) -> list[dict[str, Any]]:
    items = _dig(sub, "items", "data")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _subscription(sub: dict[str, Any]) -> dict[str, Any] | str:
    items = _items(sub)
    first = items[0] if items else {}
    price = first.get("price") if isinstance(first.get("price"), dict) else first.get("plan")
    price = price if isinstance(price, dict) else {}
    recurring = price.get("recurring") if isinstance(price.get("recurring"), dict) else price
    amount: Any = None
    # The subscription's recurring amount: every item's unit amount times its quantity.
    for item in items:
        item_price = item.get("price") if isinstance(item.get("price"), dict) else item.get("plan")
        unit = _dig(item_price, "unit_amount")
        if unit is None:
            unit = _dig(item_price, "amount")  # the legacy Plan object
        quantity = item.get("quantity", 1)
        if not isinstance(unit, int) or not isinstance(quantity, int):
            amount = None
            break
        amount = (amount or 0) + unit * quantity
    status = sub.get("status")
    if status == "incomplete_expired":
        status = "canceled"  # Stripe's "the first payment never succeeded": over, for us
    period_end = sub.get("current_period_end") or first.get("current_period_end")
    return {
        "subscription": _drop_none(
            {
                "id": sub.get("id"),
                "customer_id": _id(sub.get("customer")),
                "plan": _id(price) if price else None,
                "status": status,
                "amount_minor": amount,
                "currency": _currency(sub.get("currency") or price.get("currency")),
                "interval": recurring.get("interval"),
                "interval_count": recurring.get("interval_count"),
                "started_at": _time(sub.get("start_date")),
                "trial_end": _time(sub.get("trial_end")),
                "current_period_end": _time(period_end),
                "cancel_at_period_end": sub.get("cancel_at_period_end"),
                "payment_method": _card(sub.get("default_payment_method")),
            }
        )
    }


def _canceled(sub: dict[str, Any]) -> dict[str, Any] | str:
    reason = _dig(sub, "cancellation_details", "reason")
    return _drop_none(
        {"subscription_id": sub.get("id"), "reason": reason if isinstance(reason, str) else None}
    )


def _payment_method(method: dict[str, Any]) -> dict[str, Any] | str:
    customer = _id(method.get("customer"))
    if customer is None:
        return "payment method is attached to no customer"
    return {"customer_id": customer, "payment_method": _card(method) or {"present": True}}


def _customer(customer: dict[str, Any]) -> dict[str, Any] | str:
    if customer.get("deleted") is True:
        return "customer deleted"
    locales = customer.get("preferred_locales")
    locale = locales[0] if isinstance(locales, list) and locales else None
    timezone = _dig(customer, "metadata", "timezone")
    return {
        "customer": _drop_none(
            {
                "id": customer.get("id"),
                "email": customer.get("email"),
                "name": customer.get("name"),
                "locale": locale,
                "timezone": timezone,
            }
        )
    }


_BUILDERS = {
    "invoice.payment_failed": _failed_invoice,
    "invoice.paid": _paid_invoice,
    "subscription.upserted": _subscription,
    "subscription.canceled": _canceled,
    "payment_method.updated": _payment_method,
    "customer.upserted": _customer,
}
