"""Inbound event contract: what parse_event accepts, and how it refuses the rest."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from dunning.contract import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    CustomerUpserted,
    InvalidEvent,
    InvoicePaid,
    InvoicePaymentFailed,
    PaymentMethodUpdated,
    SubscriptionCanceled,
    SubscriptionUpserted,
    event_json_schema,
    parse_event,
    to_wire,
    utc,
)

WHEN = "2026-03-02T10:00:00Z"
EMAIL = "jane.doe@example.com"


def envelope(kind: str, data: dict[str, Any], event_id: str = "evt_1") -> dict[str, Any]:
    return {"id": event_id, "type": kind, "occurred_at": WHEN, "data": data}


MINIMAL: dict[str, dict[str, Any]] = {
    "customer.upserted": envelope("customer.upserted", {"customer": {"id": "cus_1", "email": EMAIL}}),
    "subscription.upserted": envelope(
        "subscription.upserted",
        {
            "subscription": {
                "id": "sub_1",
                "customer_id": "cus_1",
                "plan": "pro",
                "status": "active",
                "amount_minor": 1900,
                "currency": "EUR",
                "interval": "month",
                "current_period_end": "2026-04-02T10:00:00+02:00",
            }
        },
    ),
    "invoice.payment_failed": envelope(
        "invoice.payment_failed",
        {
            "invoice": {
                "id": "in_1",
                "subscription_id": "sub_1",
                "customer_id": "cus_1",
                "amount_minor": 1900,
                "currency": "EUR",
            },
            "decline_code": "insufficient_funds",
        },
    ),
    "invoice.paid": envelope(
        "invoice.paid",
        {"invoice": {"id": "in_1", "subscription_id": "sub_1", "amount_minor": 1900, "currency": "EUR"}},
    ),
    "payment_method.updated": envelope(
        "payment_method.updated", {"customer_id": "cus_1", "payment_method": {"present": True}}
    ),
    "subscription.canceled": envelope("subscription.canceled", {"subscription_id": "sub_1"}),
}

MODEL = {
    "customer.upserted": CustomerUpserted,
    "subscription.upserted": SubscriptionUpserted,
    "invoice.payment_failed": InvoicePaymentFailed,
    "invoice.paid": InvoicePaid,
    "payment_method.updated": PaymentMethodUpdated,
    "subscription.canceled": SubscriptionCanceled,
}


def event(kind: str) -> dict[str, Any]:
    return copy.deepcopy(MINIMAL[kind])


def failed_event(**invoice: Any) -> dict[str, Any]:
    ev = event("invoice.payment_failed")
    ev["data"]["invoice"].update(invoice)
    return ev


def refuse(raw: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    return info.value


# ---------------------------------------------------------------------------
# Accepted
# ---------------------------------------------------------------------------


def test_the_six_types_are_covered() -> None:
    assert set(MINIMAL) == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == 6


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_minimal_event_is_accepted(kind: str) -> None:
    parsed = parse_event(event(kind))
    assert isinstance(parsed, MODEL[kind])
    assert parsed.type == kind
    assert parsed.id == "evt_1"
    assert parsed.occurred_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_json_text_and_bytes_are_accepted(kind: str) -> None:
    text = json.dumps(event(kind))
    assert parse_event(text) == parse_event(text.encode()) == parse_event(event(kind))


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_wire_form_round_trips(kind: str) -> None:
    parsed = parse_event(event(kind))
    assert parse_event(to_wire(parsed)) == parsed
    assert json.loads(json.dumps(to_wire(parsed))) == to_wire(parsed)


def test_parsed_fields() -> None:
    failed = parse_event(event("invoice.payment_failed"))
    assert isinstance(failed, InvoicePaymentFailed)
    assert failed.data.invoice.amount_minor == 1900
    assert failed.data.invoice.currency == "EUR"
    assert failed.data.decline_code == "insufficient_funds"
    sub = parse_event(event("subscription.upserted"))
    assert isinstance(sub, SubscriptionUpserted)
    assert utc(sub.data.subscription.current_period_end) == datetime(2026, 4, 2, 8, 0, tzinfo=UTC)
    assert sub.data.subscription.interval_count == 1
    assert sub.data.subscription.payment_method is None


def test_extra_unknown_fields_are_ignored() -> None:
    ev = event("invoice.paid")
    ev["schema_version"] = 3
    ev["data"]["livemode"] = True
    ev["data"]["invoice"]["hosted_invoice_url"] = "https://example.com/i/1"
    parsed = parse_event(ev)
    assert isinstance(parsed, InvoicePaid)
    assert parsed == parse_event(event("invoice.paid"))
    assert "hosted_invoice_url" not in to_wire(parsed)["data"]["invoice"]


def test_known_timezone_and_locale_in_customer() -> None:
    ev = event("customer.upserted")
    ev["data"]["customer"].update(timezone="Europe/Paris", locale="fr-FR", name="Jeanne")
    parsed = parse_event(ev)
    assert isinstance(parsed, CustomerUpserted)
    assert parsed.data.customer.timezone == "Europe/Paris"


# ---------------------------------------------------------------------------
# Refused: field path and reason
# ---------------------------------------------------------------------------


def test_missing_field() -> None:
    ev = event("invoice.payment_failed")
    del ev["data"]["invoice"]["currency"]
    err = refuse(ev)
    assert err.field == "data.invoice.currency"
    assert "required" in err.reason.lower()
    assert str(err).startswith("data.invoice.currency: ")
    assert err.event_id == "evt_1"


def test_wrong_type() -> None:
    err = refuse(failed_event(amount_minor="a lot"))
    assert err.field == "data.invoice.amount_minor"
    assert "integer" in err.reason


def test_failed_invoice_amount_must_be_positive() -> None:
    assert refuse(failed_event(amount_minor=0)).field == "data.invoice.amount_minor"


@pytest.mark.parametrize("kind", ["invoice.refunded", "", "Invoice.Paid"])
def test_unknown_type(kind: str) -> None:
    ev = event("invoice.paid")
    ev["type"] = kind
    err = refuse(ev)
    assert err.field == "type"
    assert "invoice.payment_failed" in err.reason  # says what is expected


@pytest.mark.parametrize("kind", [None, 3, ["invoice.paid"]])
def test_missing_or_non_string_type(kind: Any) -> None:
    ev = event("invoice.paid")
    if kind is None:
        del ev["type"]
    else:
        ev["type"] = kind
    assert refuse(ev).field == "type"


@pytest.mark.parametrize("when", ["2026-03-02T10:00:00", "2026-03-02 10:00:00", "2026-03-02"])
def test_naive_occurred_at(when: str) -> None:
    ev = event("invoice.paid")
    ev["occurred_at"] = when
    err = refuse(ev)
    assert err.field == "occurred_at"


def test_naive_nested_datetime() -> None:
    ev = event("subscription.upserted")
    ev["data"]["subscription"]["current_period_end"] = "2026-04-02T10:00:00"
    assert refuse(ev).field == "data.subscription.current_period_end"


@pytest.mark.parametrize("currency", ["eur", "EURO", "E1R", ""])
def test_bad_currency(currency: str) -> None:
    assert refuse(failed_event(currency=currency)).field == "data.invoice.currency"


def test_bad_decline_code() -> None:
    ev = event("invoice.payment_failed")
    ev["data"]["decline_code"] = "Insufficient Funds!"
    assert refuse(ev).field == "data.decline_code"


def test_unknown_timezone_in_customer() -> None:
    ev = event("customer.upserted")
    ev["data"]["customer"]["timezone"] = "Europe/Atlantis"
    err = refuse(ev)
    assert err.field == "data.customer.timezone"
    assert "time zone" in err.reason


def test_bad_email_in_customer() -> None:
    ev = event("customer.upserted")
    ev["data"]["customer"]["email"] = "not-an-email"
    assert refuse(ev).field == "data.customer.email"


def test_oversized_dict_envelope() -> None:
    ev = event("invoice.paid")
    ev["padding"] = "x" * MAX_EVENT_BYTES
    err = refuse(ev)
    assert err.field == "(envelope)"
    assert str(MAX_EVENT_BYTES) in err.reason
    assert err.event_id == "evt_1"


def test_oversized_bytes_envelope() -> None:
    ev = event("invoice.paid")
    ev["padding"] = "x" * MAX_EVENT_BYTES
    raw = json.dumps(ev).encode()
    assert len(raw) > MAX_EVENT_BYTES
    err = refuse(raw)
    assert err.field == "(envelope)"
    assert "limit" in err.reason


def test_envelope_just_under_the_limit_is_accepted() -> None:
    ev = event("invoice.paid")
    base = len(json.dumps({**ev, "padding": ""}, separators=(",", ":")))
    ev["padding"] = "x" * (MAX_EVENT_BYTES - base)
    assert len(json.dumps(ev, separators=(",", ":"))) == MAX_EVENT_BYTES
    assert isinstance(parse_event(ev), InvoicePaid)


def test_non_ascii_event_under_the_limit_is_accepted() -> None:
    ev = event("invoice.paid")
    ev["note"] = "é" * 15_000
    raw = json.dumps(ev, ensure_ascii=False).encode("utf-8")
    assert len(raw) < MAX_EVENT_BYTES // 2
    assert isinstance(parse_event(raw), InvoicePaid)


@pytest.mark.parametrize("raw", ["[1, 2]", '"invoice.paid"', "42", "null", b"[]"])
def test_non_object_json(raw: str | bytes) -> None:
    err = refuse(raw)
    assert err.field == "(envelope)"
    assert "JSON object" in err.reason


@pytest.mark.parametrize("raw", [[1, 2], None, 42])
def test_non_object_python_value(raw: Any) -> None:
    assert refuse(raw).field == "(envelope)"


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00{", b"", "{'id': 'single quotes'}"])
def test_invalid_json(raw: str | bytes) -> None:
    err = refuse(raw)
    assert err.field == "(envelope)"
    assert "not valid JSON" in err.reason
    assert err.event_id is None


def test_event_id_is_only_taken_from_a_string() -> None:
    ev = event("invoice.paid")
    ev["id"] = 123
    err = refuse(ev)
    assert err.event_id is None
    assert err.field == "id"


def test_error_names_first_wrong_field_in_nested_lists_without_the_union_tag() -> None:
    ev = event("payment_method.updated")
    ev["data"]["payment_method"]["last4"] = "12345"
    err = refuse(ev)
    assert err.field == "data.payment_method.last4"
    assert "payment_method.updated" not in err.field


# ---------------------------------------------------------------------------
# Error texts never echo the value
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda ev: ev["data"]["invoice"].update(amount_minor=EMAIL), "data.invoice.amount_minor"),
        (lambda ev: ev["data"]["invoice"].update(currency=EMAIL), "data.invoice.currency"),
        (lambda ev: ev["data"]["invoice"].update(id=EMAIL * 20), "data.invoice.id"),
        (lambda ev: ev["data"].update(decline_code=EMAIL), "data.decline_code"),
        (lambda ev: ev.update(occurred_at=EMAIL), "occurred_at"),
        (lambda ev: ev["data"].update(invoice=EMAIL), "data.invoice"),
    ],
)
def test_error_never_contains_the_offending_value(mutate: Any, field: str) -> None:
    ev = event("invoice.payment_failed")
    mutate(ev)
    err = refuse(ev)
    assert err.field == field
    assert EMAIL not in str(err)
    assert "jane" not in err.reason


def test_customer_values_are_not_echoed() -> None:
    ev = event("customer.upserted")
    ev["data"]["customer"]["timezone"] = "Jane Doe, 12 Rue de Rivoli"
    err = refuse(ev)
    assert "Rivoli" not in str(err)
    ev = event("customer.upserted")
    ev["data"]["customer"]["email"] = "jane doe at example"
    assert "jane" not in str(refuse(ev))


def test_unknown_type_value_is_not_echoed() -> None:
    ev = event("invoice.paid")
    ev["type"] = EMAIL
    err = refuse(ev)
    assert err.field == "type"
    assert EMAIL not in str(err)


# ---------------------------------------------------------------------------
# Published schema
# ---------------------------------------------------------------------------


def test_event_json_schema() -> None:
    schema = event_json_schema()
    assert isinstance(schema, dict)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("https://")
    text = json.dumps(schema)  # serialisable as published
    for kind in EVENT_TYPES:
        assert f'"{kind}"' in text, kind
    assert "discriminator" in text or "oneOf" in text


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("id",), "id"),
        (("data", "invoice", "id"), "data.invoice.id"),
        (("data", "failure_message"), "data.failure_message"),
    ],
)
def test_a_nul_character_is_refused_with_its_field(path: tuple[str, ...], field: str) -> None:
    # PostgreSQL text cannot store U+0000: such an event would fail on every retry, so it is refused.
    ev = event("invoice.payment_failed")
    target = ev
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "in\x00jected"
    err = refuse(ev)
    assert err.field == field
    assert "NUL" in err.reason


def test_a_nul_in_a_customer_name_is_refused() -> None:
    ev = event("customer.upserted")
    ev["data"]["customer"]["name"] = "Jane\x00Doe"
    assert refuse(ev).field == "data.customer.name"


# --- v1.1 and the dates a schema cannot compare (issue 10) ---------------------------


def _subscription_event(**overrides: object) -> dict[str, object]:
    sub: dict[str, object] = {
        "id": "sub_1",
        "customer_id": "cus_1",
        "plan": "pro",
        "status": "trialing",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        "current_period_end": "2027-01-10T00:00:00Z",
        "trial_end": "2027-01-10T00:00:00Z",
    }
    sub.update(overrides)
    return {
        "id": "evt_dates",
        "type": "subscription.upserted",
        "occurred_at": "2026-12-10T00:00:00Z",
        "data": {"subscription": sub},
    }


def test_started_at_is_accepted_as_v1_1_tenure() -> None:
    event = parse_event(_subscription_event(started_at="2026-01-01T00:00:00Z"))
    assert event.data.subscription.started_at is not None  # type: ignore[union-attr]
    assert event.data.subscription.started_at.year == 2026  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"trial_end": "2026-12-01T00:00:00Z"}, "data.subscription.trial_end"),
        (
            {
                "status": "active",
                "temporary_upgrade": {"plan": "max", "ends_at": "2026-12-09T00:00:00Z", "revert_to": "pro"},
            },
            "data.subscription.temporary_upgrade.ends_at",
        ),
        ({"started_at": "2027-02-01T00:00:00Z"}, "data.subscription.started_at"),
        ({"interval": "fortnight"}, "data.subscription.interval"),
        (
            {"payment_method": {"present": True, "exp_month": 13, "exp_year": 2027}},
            "data.subscription.payment_method.exp_month",
        ),
    ],
)
def test_impossible_lifecycle_dates_are_refused_naming_the_field(
    overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(_subscription_event(**overrides))
    assert info.value.field == field
    assert info.value.event_id == "evt_dates"


def test_a_past_trial_end_is_fine_once_the_trial_is_over() -> None:
    event = parse_event(_subscription_event(status="active", trial_end="2026-12-01T00:00:00Z"))
    assert event.data.subscription.status == "active"  # type: ignore[union-attr]
