"""A sandbox billing system speaking contract §2 over real HTTP, for the demo and the tests.

* :mod:`.model` — what it keeps and answers (invoices, subscriptions, faults, the call log);
* :mod:`.billing` — :class:`SandboxBilling`, its state and rules: seeded payment outcomes,
  Stripe-like idempotency keys, injected faults;
* :mod:`.app` — the HTTP API on Starlette: the contract routes and the unsigned
  ``/_sandbox`` admin endpoints;
* :mod:`.server` — :class:`SandboxServer`, that app under uvicorn in a background thread.
"""

from .billing import SandboxBilling
from .model import Faults, RecordedCall, SandboxInvoice, SandboxSubscription
from .server import SandboxServer

__all__ = [
    "Faults",
    "RecordedCall",
    "SandboxBilling",
    "SandboxInvoice",
    "SandboxServer",
    "SandboxSubscription",
]
