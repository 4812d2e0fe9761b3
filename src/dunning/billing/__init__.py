"""The billing system as the workers see it: a port, its HTTP client and a sandbox server."""

from dunning.billing.port import (
    BillingPort,
    BillingRejected,
    BillingUnavailable,
    InvoiceState,
    PayOutcome,
    PayResult,
)

__all__ = [
    "BillingPort",
    "BillingRejected",
    "BillingUnavailable",
    "InvoiceState",
    "PayOutcome",
    "PayResult",
]
