"""What the workers need from the billing system (contract §2), independent of transport.

Workers depend on :class:`BillingPort` only; :class:`~dunning.billing.http_client.HttpBillingClient`
implements it over HTTP, against the real billing system or the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from dunning.errors import DunningError


class PayOutcome(StrEnum):
    """What became of one payment attempt."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # No answer arrived: the charge may or may not have happened. Reconcile with
    # invoice_state() before doing anything else, never by paying again under a new key.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PayResult:
    """The answer to one ``pay_invoice`` call."""

    outcome: PayOutcome
    decline_code: str | None = None
    detail: str | None = None

    @property
    def already_paid(self) -> bool:
        """Whether the billing system refused the charge because the invoice was paid already."""
        return self.detail == ALREADY_PAID


#: ``PayResult.detail`` when the billing system answered 409 ``invoice_already_paid``.
ALREADY_PAID = "already paid"


class InvoiceState(StrEnum):
    """An invoice's state as the billing system sees it."""

    PAID = "paid"
    OPEN = "open"


class BillingUnavailable(DunningError):
    """Transient: timeouts, connection errors, 5xx after retries; try later."""


class BillingRejected(DunningError):
    """Permanent 4xx: the request itself is wrong (unknown invoice, bad signature...)."""


class BillingPort(Protocol):
    """The billing calls the workers make. Every mutating call takes a caller-kept idempotency key."""

    def pay_invoice(self, invoice_id: str, idempotency_key: str) -> PayResult:
        """Charge the payment method on file. Never raises for timeouts: returns UNKNOWN instead."""
        ...

    def invoice_state(self, invoice_id: str) -> InvoiceState:
        """Current state of the invoice. Raises BillingUnavailable / BillingRejected."""
        ...

    def suspend(self, subscription_id: str, idempotency_key: str) -> None:
        """Cut access (grace is over)."""
        ...

    def reinstate(self, subscription_id: str, idempotency_key: str) -> None:
        """Restore access (paid after suspension)."""
        ...

    def cancel(self, subscription_id: str, idempotency_key: str, reason: str | None = None) -> None:
        """End the subscription."""
        ...

    def change_plan(
        self,
        subscription_id: str,
        idempotency_key: str,
        *,
        plan: str,
        amount_minor: int,
        currency: str,
        effective_at: datetime,
        interval: str | None = None,
        interval_count: int | None = None,
    ) -> None:
        """Downgrade, switch billing interval, or apply a migrated price, from ``effective_at``.

        ``interval`` / ``interval_count`` (contract v1.1): the new billing period, e.g. ``"year"``
        and 1 for a switch to annual billing; None keeps the subscription's own.
        """
        ...
