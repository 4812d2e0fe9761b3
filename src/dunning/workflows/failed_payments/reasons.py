"""Plain words for decline reason codes, as shown to the customer.

The billing system reports why a charge failed with a code (Stripe-style
``decline_code`` values such as ``insufficient_funds``). Customers should read
what it means for them, in their language, not the code. The phrases here are
the English msgids of the gettext catalogs; the renderer translates them. They
are written to fit in parentheses after "your bank declined it".
"""

from __future__ import annotations

from collections.abc import Callable

from dunning.mail.render import N_

# Several codes mean the same thing to a customer; grouping them keeps the
# catalog small and the wording consistent.
_INSUFFICIENT_FUNDS = N_("insufficient funds")
_LIMIT = N_("the card's spending limit was reached")
_TEMPORARY = N_("a temporary problem at the bank")
_CALL_BANK = N_("your bank asks you to contact them")
_EXPIRED = N_("the card has expired")
_CVC = N_("the security code was not accepted")
_NUMBER = N_("the card number is not valid")
_DETAILS = N_("the card details were not accepted")
# Stripe and the card networks ask merchants not to tell a customer that a card
# was reported lost or stolen or flagged as fraud (it would tip off a fraudster);
# "blocked by the bank" is true and tells the real owner what to do.
_BLOCKED = N_("the card has been blocked by the bank")
_NOT_ALLOWED = N_("the card can't be used for this kind of payment")
_CONFIRM = N_("your bank needs you to confirm the payment")
_CLOSED = N_("the card or its account is no longer valid")
_CHANGED = N_("the card details have changed")
_STOPPED = N_("a stop-payment instruction is in place for this card")
_DUPLICATE = N_("the bank took it for a duplicate payment")
_AMOUNT = N_("the bank did not accept the amount")
_PIN = N_("the bank asked for the card's PIN")

#: Shown for a code we have no words for: honest, and never the raw code.
GENERIC_REASON = N_("no specific reason was given by the bank")

REASONS: dict[str, str] = {
    "insufficient_funds": _INSUFFICIENT_FUNDS,
    "withdrawal_count_limit_exceeded": _LIMIT,
    "card_velocity_exceeded": _LIMIT,
    "processing_error": _TEMPORARY,
    "issuer_not_available": _TEMPORARY,
    "try_again_later": _TEMPORARY,
    "reenter_transaction": _TEMPORARY,
    "call_issuer": _CALL_BANK,
    "do_not_try_again": _CALL_BANK,
    "expired_card": _EXPIRED,
    "incorrect_cvc": _CVC,
    "invalid_cvc": _CVC,
    "incorrect_number": _NUMBER,
    "invalid_number": _NUMBER,
    "invalid_expiry_month": _DETAILS,
    "invalid_expiry_year": _DETAILS,
    "incorrect_zip": _DETAILS,
    "lost_card": _BLOCKED,
    "stolen_card": _BLOCKED,
    "pickup_card": _BLOCKED,
    "fraudulent": _BLOCKED,
    "merchant_blacklist": _BLOCKED,
    "security_violation": _BLOCKED,
    "restricted_card": _BLOCKED,
    "card_not_supported": _NOT_ALLOWED,
    "currency_not_supported": _NOT_ALLOWED,
    "transaction_not_allowed": _NOT_ALLOWED,
    "not_permitted": _NOT_ALLOWED,
    "service_not_allowed": _NOT_ALLOWED,
    "authentication_required": _CONFIRM,
    "approve_with_id": _CONFIRM,
    "invalid_account": _CLOSED,
    "account_closed": _CLOSED,
    "new_account_information_available": _CHANGED,
    "revocation_of_authorization": _STOPPED,
    "revocation_of_all_authorizations": _STOPPED,
    "stop_payment_order": _STOPPED,
    "duplicate_transaction": _DUPLICATE,
    "invalid_amount": _AMOUNT,
    "offline_pin_required": _PIN,
    "online_or_offline_pin_required": _PIN,
    "generic_decline": GENERIC_REASON,
    "card_declined": GENERIC_REASON,
    "do_not_honor": GENERIC_REASON,
    "no_action_taken": GENERIC_REASON,
}


def reason_msgid(code: str | None) -> str | None:
    """The English phrase for a decline code, ``GENERIC_REASON`` if unknown, None if no code.

    Codes are matched leniently (case, dashes, spaces) because they come from
    other systems that do not all spell them alike.
    """
    if code is None:
        return None
    key = code.strip().lower().replace("-", "_").replace(" ", "_")
    if not key:
        return None
    return REASONS.get(key, GENERIC_REASON)


def describe_reason(code: str | None, gettext: Callable[[str], str] = N_) -> str | None:
    """The customer-facing words for a decline code, translated with ``gettext``."""
    msgid = reason_msgid(code)
    return None if msgid is None else gettext(msgid)
