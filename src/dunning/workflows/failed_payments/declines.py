"""Decline classification: what a decline code tells us to do next."""

from __future__ import annotations

from enum import StrEnum


class DeclineClass(StrEnum):
    """How to react to a decline."""

    SOFT = "soft"  # try the same card again later
    HARD = "hard"  # never retry this card; ask for another one
    EXPIRED = "expired"  # the card is no longer valid; ask for a new one
    ACTION_REQUIRED = "action_required"  # the customer must authenticate; a blind retry will not help


# Stripe's decline codes, which most gateways mirror. Anything unknown is soft:
# retrying a soft decline on a schedule is harmless, while wrongly calling a
# decline hard would stop collection for a customer who could have paid.
_HARD = frozenset(
    {
        "stolen_card",
        "lost_card",
        "fraudulent",
        "merchant_blacklist",
        "pickup_card",
        "restricted_card",
        "security_violation",
        "do_not_try_again",
        "revocation_of_authorization",
        "revocation_of_all_authorizations",
        "invalid_account",
        "account_closed",
        "new_account_information_available",
        "card_not_supported",
        "currency_not_supported",
        "incorrect_number",
        "invalid_number",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "stop_payment_order",
        "transaction_not_allowed",
    }
)
_EXPIRED = frozenset({"expired_card"})
_ACTION = frozenset(
    {"authentication_required", "card_verification_required", "online_or_offline_pin_required"}
)


def classify_decline(code: str | None) -> DeclineClass:
    """Map a gateway decline code to what we should do about it."""
    normalized = (code or "").strip().lower()
    if normalized in _HARD:
        return DeclineClass.HARD
    if normalized in _EXPIRED:
        return DeclineClass.EXPIRED
    if normalized in _ACTION:
        return DeclineClass.ACTION_REQUIRED
    return DeclineClass.SOFT


def retries_same_card(decline_class: DeclineClass) -> bool:
    """Whether a scheduled retry of the card on file can succeed."""
    return decline_class is DeclineClass.SOFT
