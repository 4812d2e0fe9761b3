"""Validation is as strict as the published schema (docs/events.schema.json), on every path.

Each refusal here is also checked against the committed schema with ``jsonschema``: where the
schema refuses a value, ``parse_event`` must refuse it too, naming the field and never the value.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dunning.contract import InvalidEvent, parse_event, to_wire

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "events.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
WHEN = "2026-03-02T10:00:00Z"

CUSTOMER: dict[str, Any] = {
    "id": "evt_c",
    "type": "customer.upserted",
    "occurred_at": WHEN,
    "data": {"customer": {"id": "cus_1", "email": "ada@example.com", "name": "Ada"}},
}
FAILED: dict[str, Any] = {
    "id": "evt_f",
    "type": "invoice.payment_failed",
    "occurred_at": WHEN,
    "data": {
        "invoice": {
            "id": "in_1",
            "subscription_id": "sub_1",
            "customer_id": "cus_1",
            "amount_minor": 4900,
            "currency": "EUR",
        },
        "decline_code": "insufficient_funds",
    },
}
SUBSCRIPTION: dict[str, Any] = {
    "id": "evt_s",
    "type": "subscription.upserted",
    "occurred_at": WHEN,
    "data": {
        "subscription": {
            "id": "sub_1",
            "customer_id": "cus_1",
            "plan": "pro",
            "status": "active",
            "amount_minor": 4900,
            "currency": "EUR",
            "interval": "month",
            "interval_count": 1,
            "current_period_end": "2026-04-02T10:00:00+02:00",
            "cancel_at_period_end": False,
            "payment_method": {"present": True, "last4": "4242", "exp_month": 12, "exp_year": 2030},
        }
    },
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    event = copy.deepcopy(base)
    *parents, last = path.split(".")
    target = event
    for key in parents:
        target = target[key]
    target[last] = value
    return event


def _refused(event: Any, field: str) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(event)
    assert caught.value.field == field, (caught.value.field, caught.value.reason)
    assert caught.value.reason
    return caught.value


def test_the_samples_are_valid_for_both() -> None:
    for event in (CUSTOMER, FAILED, SUBSCRIPTION):
        VALIDATOR.validate(event)
        assert parse_event(event).id == event["id"]


# -- integers, booleans and date-times are never coerced -----------------------------------------

NOT_INTEGERS = [True, False, "4900", 4900.0, 4900.5, [4900], {"value": 4900}]


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
@pytest.mark.parametrize(
    ("base", "path"),
    [
        (FAILED, "data.invoice.amount_minor"),
        (SUBSCRIPTION, "data.subscription.amount_minor"),
        (SUBSCRIPTION, "data.subscription.interval_count"),
        (SUBSCRIPTION, "data.subscription.payment_method.exp_month"),
    ],
)
def test_an_integer_field_refuses_anything_but_an_integer(
    base: dict[str, Any], path: str, value: Any
) -> None:
    event = _with(base, path, value)
    assert not VALIDATOR.is_valid(event) or value == 4900.0  # JSON Schema counts 4900.0 as an integer
    err = _refused(event, path)
    assert "4900" not in err.reason


@pytest.mark.parametrize("value", [1, 0, "true", "false", "yes", None], ids=repr)
@pytest.mark.parametrize(
    ("base", "path"),
    [
        (SUBSCRIPTION, "data.subscription.payment_method.present"),
        (SUBSCRIPTION, "data.subscription.cancel_at_period_end"),
    ],
)
def test_a_boolean_field_refuses_anything_but_a_boolean(base: dict[str, Any], path: str, value: Any) -> None:
    event = _with(base, path, value)
    assert not VALIDATOR.is_valid(event)
    _refused(event, path)


@pytest.mark.parametrize("value", [1_764_000_000, "1764000000", 1_764_000_000.5, True], ids=repr)
def test_a_date_time_is_an_rfc3339_string_not_a_unix_time(value: Any) -> None:
    _refused(_with(FAILED, "occurred_at", value), "occurred_at")


def test_a_required_amount_cannot_be_null() -> None:
    _refused(_with(FAILED, "data.invoice.amount_minor", None), "data.invoice.amount_minor")


def test_strings_are_not_coerced_from_numbers() -> None:
    _refused(_with(FAILED, "data.invoice.id", 12), "data.invoice.id")
    _refused(_with(FAILED, "data.decline_code", 5), "data.decline_code")


def test_the_python_client_gets_the_same_verdict(redis_free_client: Any) -> None:
    # The typed helper once sent amount_minor=True as a €0.01 failure (and an email).
    with pytest.raises(InvalidEvent) as caught:
        redis_free_client(amount_minor=True)
    assert caught.value.field == "data.invoice.amount_minor"
    with pytest.raises(InvalidEvent):
        redis_free_client(amount_minor="4900")


@pytest.fixture
def redis_free_client() -> Any:
    """``Client.payment_failed`` up to the point where it would enqueue (build_message validates)."""
    from dunning.client import build_message

    def send(**invoice: Any) -> Any:
        return build_message(_with(FAILED, "data.invoice", {**FAILED["data"]["invoice"], **invoice}))

    return send


# -- currencies --------------------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["XYZ", "ABC", "QQQ", "eur", "EURO", "", " EUR"])
def test_a_currency_must_be_an_iso_4217_code(currency: str) -> None:
    event = _with(FAILED, "data.invoice.currency", currency)
    assert not VALIDATOR.is_valid(event)
    err = _refused(event, "data.invoice.currency")
    assert "ISO-4217" in err.reason


@pytest.mark.parametrize("currency", ["EUR", "USD", "JPY", "CHF", "BRL", "KWD"])
def test_real_currencies_are_accepted(currency: str) -> None:
    event = _with(FAILED, "data.invoice.currency", currency)
    assert VALIDATOR.is_valid(event)
    assert parse_event(event).data.invoice.currency == currency  # type: ignore[union-attr]


# -- email addresses -----------------------------------------------------------------------------

BAD_ADDRESSES = [
    "victim@example.com,postmaster",  # two SMTP recipients once it reaches the To: header
    "victim@example.com, other@example.com",
    "victim@example.com;other@example.com",
    "a@b.c d",
    "Ada Lovelace <ada@example.com>",  # display-name forms
    '"Ada" <ada@example.com>',
    "<ada@example.com>",
    "ada@example.com\r\nBcc: everyone@example.com",  # CR/LF: header injection
    "ada@example.com\n",
    "ada\r@example.com",
    "ada@exam\nple.com",
    "ada@@example.com",
    "ada@example",
    "ada@localhost",
    "@example.com",
    "ada@",
    '"ada lovelace"@example.com',  # quoted local parts: refused, like in the schema's pattern
    "ada@[192.0.2.1]",
    "ada..lovelace@example.com",
    "ada@example..com",
]


@pytest.mark.parametrize("address", BAD_ADDRESSES, ids=repr)
def test_an_email_is_one_plain_address(address: str) -> None:
    event = _with(CUSTOMER, "data.customer.email", address)
    err = _refused(event, "data.customer.email")
    # The reason never repeats the value (not even a piece of it).
    assert "example" not in err.reason and "ada" not in err.reason.lower(), err.reason
    if not address.endswith("\n"):
        # The schema's pattern refuses these too. (Python's ``re``, which the jsonschema package
        # uses, lets ``$`` match before a final newline; ECMA-262, the schema's dialect, does not.)
        assert not VALIDATOR.is_valid(event)


def test_a_non_ascii_local_part_is_refused_with_a_clear_reason() -> None:
    # We do not send SMTPUTF8: such an address could only fail at the SMTP server, or worse.
    for address in ("jörg@example.com", "用户@example.com", "andré.dupont@example.fr"):
        event = _with(CUSTOMER, "data.customer.email", address)
        assert not VALIDATOR.is_valid(event)
        err = _refused(event, "data.customer.email")
        assert "non-ASCII" in err.reason and "SMTPUTF8" in err.reason, err.reason
        assert "ö" not in err.reason


def test_an_internationalized_domain_is_kept_as_punycode() -> None:
    event = _with(CUSTOMER, "data.customer.email", "ada@bücher.example")
    assert VALIDATOR.is_valid(event)
    parsed = parse_event(event)
    assert parsed.data.customer.email == "ada@xn--bcher-kva.example"  # type: ignore[union-attr]
    assert to_wire(parsed)["data"]["customer"]["email"] == "ada@xn--bcher-kva.example"
    # Stored in ASCII, it is accepted again as is (a requeue or a replay gives the same result).
    assert parse_event(to_wire(parsed)) == parsed


def test_plain_addresses_are_kept_as_given_apart_from_the_domain_case() -> None:
    for given, stored in [
        ("ada@example.com", "ada@example.com"),
        ("Ada.Lovelace+billing@Example.COM", "Ada.Lovelace+billing@example.com"),
        ("o'brien@example.ie", "o'brien@example.ie"),
    ]:
        event = _with(CUSTOMER, "data.customer.email", given)
        assert parse_event(event).data.customer.email == stored  # type: ignore[union-attr]
