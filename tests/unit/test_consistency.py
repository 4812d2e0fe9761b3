"""The consistency rules: an event that contradicts stored facts is named, with both values."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from dunning.workflows.failed_payments.consistency import (
    Conflict,
    invoice_conflict,
    owner_conflict,
    subscription_conflict,
)


class Inv(NamedTuple):
    id: str = "in_1"
    subscription_id: str = "sub_1"
    amount_minor: int = 4900
    currency: str = "EUR"


class Sub(NamedTuple):
    id: str = "sub_1"
    customer_id: str = "cus_1"
    currency: str = "EUR"


def test_the_same_invoice_agrees() -> None:
    assert invoice_conflict(Inv(), subscription_id="sub_1", amount_minor=4900, currency="EUR") is None


def test_another_currency_names_the_currency_and_both_amounts() -> None:
    conflict = invoice_conflict(Inv(), subscription_id="sub_1", amount_minor=1, currency="JPY")
    assert conflict is not None
    assert conflict.field == "data.invoice.currency"
    assert "4900 EUR" in conflict.reason and "1 JPY" in conflict.reason
    assert conflict.reason.index("stored") < conflict.reason.index("4900 EUR")
    assert conflict.reason.index("received") < conflict.reason.index("1 JPY")


def test_another_amount_in_the_same_currency_names_the_amount() -> None:
    conflict = invoice_conflict(Inv(), subscription_id="sub_1", amount_minor=4800, currency="EUR")
    assert conflict == Conflict(
        "data.invoice.amount_minor",
        "invoice in_1 is stored as 4900 EUR, received 4800 EUR (amounts in minor units)",
    )


@pytest.mark.parametrize("amount", [0, 4899, 4901, 490000])
def test_any_other_amount_is_a_conflict(amount: int) -> None:
    conflict = invoice_conflict(Inv(), subscription_id="sub_1", amount_minor=amount, currency="EUR")
    assert conflict is not None and conflict.field == "data.invoice.amount_minor"


def test_another_subscription_is_named_before_the_money() -> None:
    conflict = invoice_conflict(Inv(), subscription_id="sub_2", amount_minor=1, currency="JPY")
    assert conflict == Conflict(
        "data.invoice.subscription_id", "invoice in_1 is stored for subscription sub_1, received sub_2"
    )


def test_a_customer_who_does_not_own_the_subscription() -> None:
    conflict = subscription_conflict(Sub(), customer_id="cus_2", currency="EUR")
    assert conflict == Conflict(
        "data.invoice.customer_id", "subscription sub_1 belongs to customer cus_1 (stored), received cus_2"
    )
    assert owner_conflict("cus_1", subscription_id="sub_1", customer_id="cus_2") == conflict
    assert owner_conflict("cus_1", subscription_id="sub_1", customer_id="cus_1") is None


def test_a_failure_in_another_currency_than_its_subscription() -> None:
    conflict = subscription_conflict(Sub(), customer_id="cus_1", currency="USD")
    assert conflict is not None
    assert conflict.field == "data.invoice.currency"
    assert "EUR" in conflict.reason and "USD" in conflict.reason


def test_a_failure_of_another_amount_than_the_plan_price_agrees_with_its_subscription() -> None:
    # Invoices differ from the price (proration, tax, discounts): only owner and currency are compared.
    assert subscription_conflict(Sub(), customer_id="cus_1", currency="EUR") is None


def test_field_prefix_follows_the_event() -> None:
    conflict = invoice_conflict(Inv(), subscription_id="sub_1", amount_minor=1, currency="EUR", where="x.y")
    assert conflict is not None and conflict.field == "x.y.amount_minor"
