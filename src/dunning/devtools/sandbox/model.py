"""What the sandbox billing system keeps and answers: invoices, subscriptions, faults, calls, answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Chance that one more try of the same card succeeds, per decline code.
SOFT_DECLINES: dict[str, float] = {
    "insufficient_funds": 0.30,
    "processing_error": 0.70,
    "try_again_later": 0.60,
    "do_not_honor": 0.25,
    "generic_decline": 0.20,
    "card_velocity_exceeded": 0.40,
    "authentication_required": 0.15,
}
HARD_DECLINES: frozenset[str] = frozenset(
    {
        "stolen_card", "lost_card", "fraudulent", "pickup_card", "restricted_card", "security_violation",
        "do_not_try_again", "revocation_of_authorization", "invalid_account", "account_closed",
        "card_not_supported", "incorrect_number", "expired_card",
    }
)  # fmt: skip
UNLISTED_DECLINE_SUCCESS = 0.20
NEW_CARD_SUCCESS = 0.92
FAULT_KINDS = ("timeout", "error", "lost_answer")
SUBSCRIPTION_ACTIONS = ("suspend", "reinstate", "cancel", "change_plan")
INTERVALS = ("day", "week", "month", "year")  # as in subscription.upserted


@dataclass
class SandboxInvoice:
    """An invoice as the sandbox keeps it."""

    id: str
    subscription_id: str
    customer_id: str
    amount_minor: int
    currency: str
    decline_code: str | None  # what the current card declines with; None: the card works
    status: str = "open"
    paid_elsewhere: bool = False  # marked paid out of band (mark_paid), not by a charge
    attempts: int = 0  # charge attempts processed (replays and injected faults excluded)
    charges: int = 0  # successful charges
    new_card: bool = False
    card_present: bool = True
    # Scripted outcome for tests: the same card fails until this attempt, then pays (0: never pays).
    succeed_on_attempt: int | None = None
    new_card_chance: float = NEW_CARD_SUCCESS


@dataclass
class SandboxSubscription:
    """A subscription's state as the billing system would show it."""

    id: str
    customer_id: str | None = None
    plan: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    access: str = "active"  # or "suspended"
    canceled: bool = False
    cancel_reason: str | None = None
    plan_effective_at: str | None = None
    # Set by a change_plan that names them (contract v1.1); None: never changed through the API.
    interval: str | None = None
    interval_count: int | None = None


@dataclass
class Faults:
    """Injected trouble on contract endpoints. Rates are per request and add up (at most 1)."""

    timeout_rate: float = 0.0  # not processed, nothing answered
    error_rate: float = 0.0  # not processed, 503 answered
    lost_answer_rate: float = 0.0  # processed (a charge is applied) but nothing answered
    latency_ms: int = 0  # added to every request
    hang_s: float = 0.0  # how long an unanswered request hangs before its connection is dropped


@dataclass(frozen=True)
class RecordedCall:
    """One contract request. ``status`` is what was produced; with a fault it may never have been sent."""

    method: str
    path: str
    idempotency_key: str | None
    status: int | None
    outcome: str | None  # the answer's "status" or "error"
    fault: str | None
    replay: bool
    at: float  # unix time the request arrived


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status and JSON body."""

    status: int
    body: dict[str, Any]


class Invalid(Exception):
    """A request refused before any work was done; ``answer`` says why."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.answer = Answer(status, {"error": error} | ({"field": field} if field else {}))


def payload(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object (an empty body is ``{}``); :class:`Invalid` (400) otherwise."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise Invalid(400, "invalid_json") from None
    if not isinstance(data, dict):
        raise Invalid(400, "invalid_json")
    return data


def is_aware_iso(value: str) -> bool:
    """Whether ``value`` is an ISO 8601 date-time with a UTC offset."""
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False
