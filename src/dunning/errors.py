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


#: What a dead letter keeps of a reason.
MAX_REASON = 4000


def refusal_reason(exc: Refused) -> str:
    """The reason a dead letter shows: the first problem's, then every other invalid field.

    ``problems`` (``(path, reason)`` pairs, the first being ``(field, reason)``) is set by
    refusals that list several fields (``InvalidEvent``); the others have one.
    """
    others = list(getattr(exc, "problems", None) or [])[1:]
    if not others:
        return exc.reason
    return exc.reason + "".join(f"\n+ {path}: {reason}" for path, reason in others)


def describe_failure(exc: BaseException | None) -> tuple[str | None, str, str]:
    """(field, reason, error type) of a failure, safe to store and show to ops."""
    if exc is None:
        return None, "unknown failure", "Unknown"
    if isinstance(exc, Refused):
        return exc.field, refusal_reason(exc)[:MAX_REASON], type(exc).__name__
    if isinstance(exc, DunningError):
        return getattr(exc, "field", None), str(getattr(exc, "reason", exc))[:1000], type(exc).__name__
    return None, f"{type(exc).__name__} (details in worker logs)", type(exc).__name__
