"""The product's one error tree.

:class:`DunningError` is the base of every error the product raises on
purpose. Their texts are written to carry ids, codes and field names only,
never customer data, so they may be stored with a dead letter and shown to
ops; any other exception is described by its type alone
(:func:`describe_failure`).

:class:`Refused` is bad input: a field and a reason. It is never retried (the
same input fails the same way): the message is parked with both, where
``dunning dlq list`` shows it.
"""

from __future__ import annotations


class DunningError(Exception):
    """Base of the product's own errors; the text names ids and codes, never customer data."""


class Refused(DunningError):
    """Input we refuse: ``field`` is a dotted path (or ``None`` for the whole message), ``reason`` says why."""

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class PermanentJobError(DunningError):
    """Retrying will not help (the billing API refused the request itself, a row is missing): park the job."""


def describe_failure(exc: BaseException | None) -> tuple[str | None, str, str]:
    """(field, reason, error type) of a failure, safe to store and show to ops."""
    if exc is None:
        return None, "unknown failure", "Unknown"
    if isinstance(exc, Refused):
        return exc.field, exc.reason[:1000], type(exc).__name__
    if isinstance(exc, DunningError):
        return getattr(exc, "field", None), str(getattr(exc, "reason", exc))[:1000], type(exc).__name__
    return None, f"{type(exc).__name__} (details in worker logs)", type(exc).__name__
