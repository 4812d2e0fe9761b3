"""Decline classification: which codes stop retries of the card on file."""

from __future__ import annotations

import pytest

from dunning.workflows.failed_payments.declines import DeclineClass, classify_decline, retries_same_card

HARD_CODES = [
    "stolen_card",
    "lost_card",
    "fraudulent",
    "pickup_card",
    "account_closed",
    "merchant_blacklist",
    "restricted_card",
    "security_violation",
    "do_not_try_again",
    "revocation_of_authorization",
    "invalid_account",
    "new_account_information_available",
    "incorrect_number",
    "transaction_not_allowed",
]

SOFT_CODES = [
    "insufficient_funds",
    "processing_error",
    "generic_decline",
    "card_velocity_exceeded",
    "try_again_later",
    "issuer_not_available",
]


@pytest.mark.parametrize("code", HARD_CODES)
def test_hard_codes(code: str) -> None:
    assert classify_decline(code) is DeclineClass.HARD


def test_expired_card_is_its_own_class() -> None:
    assert classify_decline("expired_card") is DeclineClass.EXPIRED


@pytest.mark.parametrize(
    "code", ["authentication_required", "card_verification_required", "online_or_offline_pin_required"]
)
def test_action_required_codes(code: str) -> None:
    assert classify_decline(code) is DeclineClass.ACTION_REQUIRED


@pytest.mark.parametrize("code", SOFT_CODES)
def test_soft_codes(code: str) -> None:
    assert classify_decline(code) is DeclineClass.SOFT


@pytest.mark.parametrize("code", ["some_new_code_2031", "", "   ", "stolen", "card_stolen"])
def test_unknown_codes_are_soft(code: str) -> None:
    # Calling an unknown decline hard would stop collection for a customer who could pay.
    assert classify_decline(code) is DeclineClass.SOFT


def test_none_is_soft() -> None:
    assert classify_decline(None) is DeclineClass.SOFT


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("Stolen_Card", DeclineClass.HARD),
        ("  LOST_CARD\n", DeclineClass.HARD),
        ("\tFraudulent ", DeclineClass.HARD),
        (" EXPIRED_card", DeclineClass.EXPIRED),
        ("Authentication_Required  ", DeclineClass.ACTION_REQUIRED),
        (" INSUFFICIENT_FUNDS ", DeclineClass.SOFT),
    ],
)
def test_case_and_whitespace_are_normalised(code: str, expected: DeclineClass) -> None:
    assert classify_decline(code) is expected


def test_only_soft_declines_retry_the_same_card() -> None:
    assert retries_same_card(DeclineClass.SOFT) is True
    for cls in (DeclineClass.HARD, DeclineClass.EXPIRED, DeclineClass.ACTION_REQUIRED):
        assert retries_same_card(cls) is False


def test_class_values_are_the_notice_variants() -> None:
    # The values are used as email variants and stored; renaming them would break templates.
    assert [c.value for c in DeclineClass] == ["soft", "hard", "expired", "action_required"]
