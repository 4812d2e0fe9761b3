"""The facts one customer notice is rendered from.

A ``NoticeContext`` is plain data: the caller (an actor, the demo) fills it from
the case and the customer profile, and the renderer turns it into words. It holds
raw values (minor units, UTC datetimes, reason codes); all formatting and
translation happens in the renderer, so the same context renders the same
email in any language.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dunning.domain.emails import DUNNING, TRANSACTIONAL, MailKind
from dunning.workflows.failed_payments.reasons import describe_reason

if TYPE_CHECKING:
    from dunning.mail.render import Formatter

#: Notice kinds that have templates. The lead's code passes these exact strings.
KINDS: tuple[str, ...] = (
    "payment_failed",
    "payment_reminder",
    "final_notice",
    "access_suspended",
    "payment_recovered",
    "subscription_ended",
)

#: How each kind is treated on the way out (:mod:`dunning.domain.emails`). The chase (failed,
#: reminder, final notice) is ``dunning``: at most ``max_dunning_per_day`` a day per recipient,
#: a later step outranking an earlier one. What already happened to the account or the money
#: (suspended, recovered, ended) is transactional: never held back by a cap, because the
#: customer must learn it when it happens.
MAIL_KINDS: dict[str, MailKind] = {
    "payment_failed": MailKind(DUNNING, 10),
    "payment_reminder": MailKind(DUNNING, 20),
    "final_notice": MailKind(DUNNING, 30),
    "access_suspended": MailKind(TRANSACTIONAL),
    "payment_recovered": MailKind(TRANSACTIONAL),
    "subscription_ended": MailKind(TRANSACTIONAL),
}

#: What the button of each kind lets the customer do: a purpose of :mod:`dunning.engine.links`.
#: While the case is open, update the card; once it is over (paid, ended), the
#: update-card link would only say "already resolved", so those emails open the account.
ACTION_PURPOSES: dict[str, str] = {
    "payment_failed": "update_payment_method",
    "payment_reminder": "update_payment_method",
    "final_notice": "update_payment_method",
    "access_suspended": "update_payment_method",
    "payment_recovered": "manage_account",
    "subscription_ended": "manage_account",
}

#: ``decline_class`` values with their own wording in ``payment_failed``; any
#: other value (or None) gets a neutral "we couldn't collect it" variant.
DECLINE_CLASSES: tuple[str, ...] = ("soft", "hard", "expired", "no_payment_method", "action_required")

#: What happens at the end of a case: the subscription is canceled or moved to a cheaper plan.
END_ACTIONS: tuple[str, ...] = ("cancel", "downgrade")


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeContext:
    """Everything needed to render one notice to one customer.

    Amounts are integers in the currency's minor unit (cents; yen for JPY; fils
    for KWD). Datetimes are timezone-aware UTC and are shown in ``timezone``.
    ``locale`` and ``timezone`` come from the customer's profile and may be
    wrong or empty: the renderer falls back to English and UTC rather than fail.

    Fields are keyword-only: with this many optional ones, a positional call
    would be an accident waiting to happen.
    """

    kind: str
    customer_name: str | None
    customer_email: str
    locale: str = "en"
    timezone: str = "UTC"
    plan: str
    amount_minor: int
    currency: str
    decline_class: str | None = None
    decline_reason: str | None = None
    next_retry_at: datetime | None = None
    suspend_at: datetime | None = None
    end_at: datetime | None = None
    end_action: str | None = None
    downgrade_plan: str | None = None
    downgrade_amount_minor: int | None = None
    was_suspended: bool = False
    action_url: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    product_name: str = "Acme"
    support_email: str = "support@example.com"

    def template_values(self, fmt: Formatter) -> dict[str, Any]:
        """Every variable the failed-payment templates use, formatted for this customer."""
        if self.kind not in KINDS:
            # Templates of all workflows share one loader: another workflow's kind would be
            # found, and then fail on variables this context does not give.
            raise ValueError(f"kind: unknown notice kind {self.kind!r} for a failed-payment notice")
        variant: str | None
        if self.kind == "payment_failed":
            variant = self.decline_class if self.decline_class in DECLINE_CLASSES else "generic"
        elif self.kind == "subscription_ended":
            variant = self.end_action
        else:
            variant = None
        end_action = self.end_action
        if end_action is not None and end_action not in END_ACTIONS:
            raise ValueError(f"end_action: expected one of {', '.join(END_ACTIONS)}, got {end_action!r}")
        if self.kind == "subscription_ended" and end_action is None:
            raise ValueError("end_action: required for subscription_ended")
        if end_action == "downgrade" and not self.downgrade_plan:
            raise ValueError("downgrade_plan: required when end_action is 'downgrade'")
        downgrade_amount = None
        if self.downgrade_amount_minor is not None:
            downgrade_amount = fmt.money(self.downgrade_amount_minor, self.currency)
        return {
            "variant": variant,
            "name": fmt.one_line(self.customer_name),
            "customer_email": self.customer_email,
            "product": self.product_name,
            "support_email": self.support_email,
            "plan": self.plan,
            "amount": fmt.money(self.amount_minor, self.currency),
            "reason": describe_reason(self.decline_reason, fmt.gettext),
            "card": fmt.card(self.card_brand, self.card_last4),
            "next_retry_date": fmt.date(self.next_retry_at),
            "suspend_date": fmt.date(self.suspend_at),
            "suspend_date_short": fmt.date(self.suspend_at, "long"),
            "suspend_time": fmt.time(self.suspend_at),
            "end_date": fmt.date(self.end_at),
            "end_action": end_action,
            "downgrade_plan": self.downgrade_plan,
            "downgrade_amount": downgrade_amount,
            "downgrade_free": self.downgrade_amount_minor == 0,
            "was_suspended": self.was_suspended,
            "action_url": self.action_url or None,
        }
