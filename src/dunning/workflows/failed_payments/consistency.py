"""Whether an event agrees with what we already know: pure checks of ids, amounts and currencies.

A valid event can still contradict the stored facts: an ``invoice.paid`` of
1 JPY for an invoice of 49.00 EUR, a failure naming a customer who does not
own the subscription. Acting on it would close a case that is not paid, or
email (and later suspend) the wrong customer. Such an event is refused for ops
to look at, like an invalid one; these functions say whether it must be, and
why, naming the stored and the received value (ids, amounts in minor units and
currency codes: billing identifiers, never an email or a name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Conflict:
    """An event field that disagrees with a stored fact."""

    field: str
    reason: str


class KnownInvoice(Protocol):
    """What we stored about an invoice (an ORM row or a prefetched tuple)."""

    @property
    def id(self) -> str: ...
    @property
    def subscription_id(self) -> str: ...
    @property
    def amount_minor(self) -> int: ...
    @property
    def currency(self) -> str: ...


class KnownSubscription(Protocol):
    """What we stored about a subscription."""

    @property
    def id(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def currency(self) -> str: ...


def invoice_conflict(
    known: KnownInvoice,
    *,
    subscription_id: str,
    amount_minor: int,
    currency: str,
    where: str = "data.invoice",
) -> Conflict | None:
    """Whether an event about a known invoice disagrees with it (subscription, currency, amount).

    An invoice's amount and currency are fixed once it is issued, and it belongs
    to one subscription; a payment of another amount or currency is not this
    invoice's payment. The currency is checked before the amount: amounts in
    two currencies cannot be compared.
    """
    if subscription_id != known.subscription_id:
        return Conflict(
            f"{where}.subscription_id",
            f"invoice {known.id} is stored for subscription {known.subscription_id}, received {subscription_id}",
        )
    if currency != known.currency or amount_minor != known.amount_minor:
        field = "currency" if currency != known.currency else "amount_minor"
        return Conflict(
            f"{where}.{field}",
            f"invoice {known.id} is stored as {known.amount_minor} {known.currency}, "
            f"received {amount_minor} {currency} (amounts in minor units)",
        )
    return None


def owner_conflict(
    known_customer_id: str, *, subscription_id: str, customer_id: str, where: str = "data.invoice"
) -> Conflict | None:
    """Whether an event names another customer than the one a subscription (or its case) belongs to."""
    if customer_id != known_customer_id:
        return Conflict(
            f"{where}.customer_id",
            f"subscription {subscription_id} belongs to customer {known_customer_id} (stored), "
            f"received {customer_id}",
        )
    return None


def subscription_conflict(
    known: KnownSubscription, *, customer_id: str, currency: str, where: str = "data.invoice"
) -> Conflict | None:
    """Whether a failed invoice disagrees with its stored subscription (owner, currency).

    The amount is not compared: an invoice may differ from the plan's price
    (proration, tax, discounts), but it is billed to the subscription's
    customer, in the subscription's currency.
    """
    conflict = owner_conflict(
        known.customer_id, subscription_id=known.id, customer_id=customer_id, where=where
    )
    if conflict is not None:
        return conflict
    if currency != known.currency:
        return Conflict(
            f"{where}.currency",
            f"subscription {known.id} is billed in {known.currency} (stored), received {currency}",
        )
    return None
