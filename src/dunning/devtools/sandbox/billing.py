"""The sandbox billing system's state and rules, without HTTP (served by :mod:`.app`).

Payment outcomes are a pure function of (seed, invoice id, attempt number), so
two sandboxes with the same seed answer the same sequence. Idempotency follows
Stripe: the first answer for a key is replayed for every later request with
that key. Faults (timeouts, 5xx, lost answers) are drawn from their own seeded
stream, or queued explicitly with :meth:`SandboxBilling.queue_faults`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

from .model import (
    FAULT_KINDS,
    HARD_DECLINES,
    INTERVALS,
    NEW_CARD_SUCCESS,
    SOFT_DECLINES,
    SUBSCRIPTION_ACTIONS,
    UNLISTED_DECLINE_SUCCESS,
    Answer,
    Faults,
    Invalid,
    RecordedCall,
    SandboxInvoice,
    SandboxSubscription,
    is_aware_iso,
    payload,
)

_T = TypeVar("_T")


class SandboxBilling:
    """The sandbox's state and rules, thread-safe; drive it directly or through :class:`~.server.SandboxServer`."""

    def __init__(self, seed: int = 7) -> None:
        """Start empty; ``seed`` fixes payment outcomes and drawn faults."""
        self.seed = seed
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget everything except the seed."""
        with self._lock:
            self._invoices: dict[str, SandboxInvoice] = {}
            self._subscriptions: dict[str, SandboxSubscription] = {}
            self._keys: dict[str, tuple[tuple[str, str, str], Answer]] = {}
            self._calls: list[RecordedCall] = []
            self._faults = Faults()
            self._queued: list[str] = []
            self._fault_rng = random.Random(f"{self.seed}:faults")
            self._replays = 0
            self._double_charges = 0
            self._paid_elsewhere_requests = 0

    # -- admin -----------------------------------------------------------------------------------

    def add_invoice(
        self,
        invoice_id: str,
        *,
        subscription_id: str,
        customer_id: str,
        amount_minor: int,
        currency: str,
        decline_code: str | None = None,
        succeed_on_attempt: int | None = None,
    ) -> SandboxInvoice:
        """Register an open invoice (and its subscription if new); re-adding identical data is a no-op.

        ``succeed_on_attempt`` scripts the card on file instead of drawing outcomes:
        attempts before it decline with ``decline_code``, that attempt pays; 0 never pays.
        """
        invoice = SandboxInvoice(
            invoice_id,
            subscription_id,
            customer_id,
            amount_minor,
            currency,
            decline_code,
            succeed_on_attempt=succeed_on_attempt,
        )
        with self._lock:
            existing = self._invoices.get(invoice_id)
            if existing is not None:
                # Compare what the caller described, not what has happened to the invoice since.
                as_registered = dataclasses.replace(
                    existing,
                    status="open",
                    attempts=0,
                    charges=0,
                    new_card=False,
                    card_present=True,
                    new_card_chance=NEW_CARD_SUCCESS,
                )
                if as_registered != invoice:
                    raise ValueError(f"invoice {invoice_id} already exists with other data")
                return dataclasses.replace(existing)
            self._invoices[invoice_id] = invoice
            self._subscriptions.setdefault(
                subscription_id,
                SandboxSubscription(
                    subscription_id, customer_id, amount_minor=amount_minor, currency=currency
                ),
            )
            return dataclasses.replace(invoice)

    def add_subscription(
        self,
        subscription_id: str,
        *,
        customer_id: str | None = None,
        plan: str | None = None,
        amount_minor: int | None = None,
        currency: str | None = None,
    ) -> SandboxSubscription:
        """Register (or replace) an active subscription."""
        sub = SandboxSubscription(subscription_id, customer_id, plan, amount_minor, currency)
        with self._lock:
            self._subscriptions[subscription_id] = sub
            return dataclasses.replace(sub)

    def update_payment_method(self, customer_id: str, *, present: bool, works: bool | None = None) -> None:
        """A new card (present) makes the customer's open invoices likely to succeed; none makes them fail.

        ``works`` scripts the new card for tests: True always pays, False always declines.
        """
        with self._lock:
            for invoice in self._invoices.values():
                if invoice.customer_id == customer_id and invoice.status == "open":
                    invoice.card_present = present
                    invoice.new_card = invoice.new_card or present
                    if present and works is not None:
                        invoice.new_card_chance = 1.0 if works else 0.0

    def mark_paid(self, invoice_id: str) -> None:
        """Mark an invoice paid out of band (bank transfer, another system). KeyError if unknown."""
        with self._lock:
            invoice = self._invoices[invoice_id]
            invoice.status, invoice.paid_elsewhere = "paid", True

    def invoice(self, invoice_id: str) -> SandboxInvoice:
        """A snapshot of one invoice. KeyError if unknown."""
        with self._lock:
            return dataclasses.replace(self._invoices[invoice_id])

    def subscription(self, subscription_id: str) -> SandboxSubscription:
        """A snapshot of one subscription. KeyError if unknown."""
        with self._lock:
            return dataclasses.replace(self._subscriptions[subscription_id])

    def calls(self) -> list[RecordedCall]:
        """Every contract request so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def stats(self) -> dict[str, Any]:
        """``{charges: {invoice_id: n}, double_charges, paid_elsewhere_requests, replays, calls}``.

        ``double_charges``: new intents to pay an invoice a charge of ours had paid.
        ``paid_elsewhere_requests``: intents to pay an invoice paid out of band
        (``mark_paid``) before we heard of it (a race the billing API refuses).
        """
        with self._lock:
            return {
                "charges": {i.id: i.charges for i in self._invoices.values()},
                "double_charges": self._double_charges,
                "paid_elsewhere_requests": self._paid_elsewhere_requests,
                "replays": self._replays,
                "calls": len(self._calls),
            }

    @property
    def faults(self) -> Faults:
        """A copy of the current fault settings."""
        with self._lock:
            return dataclasses.replace(self._faults)

    def set_faults(self, **settings: float) -> Faults:
        """Change some fault settings (names as in :class:`Faults`); unnamed ones stay as they are."""
        with self._lock:
            faults = dataclasses.replace(self._faults, **settings)
            if faults.timeout_rate + faults.error_rate + faults.lost_answer_rate > 1:
                raise ValueError("fault rates add up to more than 1")
            self._faults = faults
            return dataclasses.replace(faults)

    def queue_faults(self, *kinds: str) -> None:
        """Force the next contract requests to fail, one kind each ("timeout", "error", "lost_answer")."""
        if unknown := set(kinds) - set(FAULT_KINDS):
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        with self._lock:
            self._queued.extend(kinds)

    # -- contract --------------------------------------------------------------------------------

    def draw_fault(self) -> str | None:
        """The fault for the next contract request: a queued one first, then drawn at the set rates."""
        with self._lock:
            if self._queued:
                return self._queued.pop(0)
            u = self._fault_rng.random()
            f = self._faults
            rates = (f.timeout_rate, f.error_rate, f.lost_answer_rate)
            for kind, rate in zip(FAULT_KINDS, rates, strict=True):
                if u < rate:
                    return kind
                u -= rate
            return None

    def record(self, call: RecordedCall) -> None:
        """Append a contract request to the call log."""
        with self._lock:
            self._calls.append(call)

    def execute(
        self, method: str, path: str, key: str | None, body: bytes, operation: Callable[[], Answer]
    ) -> tuple[Answer, bool]:
        """Run one authenticated contract request; return the answer and whether it was a replay.

        ``operation`` is what the request asks for (:meth:`pay`, :meth:`invoice_status`,
        :meth:`act_on_subscription`); it runs only if ``key`` has no answer yet. A key names one
        intent: reused with another method, path or body, it is refused.
        """
        with self._lock:
            fingerprint = (method, path, hashlib.sha256(body).hexdigest())
            if key is not None and (stored := self._keys.get(key)) is not None:
                if stored[0] != fingerprint:
                    return Answer(422, {"error": "idempotency_key_reused"}), False
                self._replays += 1
                return stored[1], True
            try:
                answer = operation()
            except Invalid as exc:
                # Like Stripe, a request refused before any work (unknown route or id, invalid body) is not
                # remembered under its key, so a retry after fixing the cause can still go through.
                return exc.answer, False
            if key is not None:
                self._keys[key] = (fingerprint, answer)
            return answer, False

    def pay(self, invoice_id: str) -> Answer:
        """``POST /invoices/{id}/pay``: try the card on file. :class:`Invalid` (404) if unknown."""
        with self._lock:
            return self._pay(self._get(self._invoices, invoice_id))

    def invoice_status(self, invoice_id: str) -> Answer:
        """``GET /invoices/{id}``: ``{"status": "open" | "paid"}``. :class:`Invalid` (404) if unknown."""
        with self._lock:
            return Answer(200, {"status": self._get(self._invoices, invoice_id).status})

    def act_on_subscription(self, subscription_id: str, action: str, body: bytes) -> Answer:
        """``POST /subscriptions/{id}/{action}`` (one of ``SUBSCRIPTION_ACTIONS``) with its JSON body.

        :class:`Invalid`: 404 for an unknown subscription, 400 for a body that is not a JSON
        object, 422 naming the field for a bad value.
        """
        if action not in SUBSCRIPTION_ACTIONS:
            raise Invalid(404, "not_found")
        with self._lock:
            sub = self._get(self._subscriptions, subscription_id)
            return self._subscription_action(sub, action, payload(body))

    @staticmethod
    def _get(table: dict[str, _T], key: str) -> _T:
        try:
            return table[key]
        except KeyError:
            raise Invalid(404, "not_found") from None

    def _pay(self, invoice: SandboxInvoice) -> Answer:
        if invoice.status == "paid":
            if invoice.paid_elsewhere:
                # Paid out of band while our retry was on its way (the event telling us had not
                # arrived yet): refused here; a gateway that kept no invoice state would have
                # charged the card a second time.
                self._paid_elsewhere_requests += 1
            else:
                # We were told it succeeded and asked again under a new key: a product bug.
                self._double_charges += 1
            return Answer(409, {"error": "invoice_already_paid"})
        invoice.attempts += 1
        if not invoice.card_present:
            chance = 0.0
        elif invoice.new_card:
            chance = invoice.new_card_chance
        elif invoice.succeed_on_attempt is not None:
            target = invoice.succeed_on_attempt
            chance = 1.0 if target and invoice.attempts >= target else 0.0
        elif invoice.decline_code is None:
            chance = 1.0
        elif invoice.decline_code in HARD_DECLINES:
            chance = 0.0
        else:
            chance = SOFT_DECLINES.get(invoice.decline_code, UNLISTED_DECLINE_SUCCESS)
        draw = random.Random(f"{self.seed}:{invoice.id}:{invoice.attempts}").random()
        if draw < chance:
            invoice.status = "paid"
            invoice.charges += 1
            return Answer(200, {"status": "succeeded"})
        code = "generic_decline" if invoice.new_card or invoice.decline_code is None else invoice.decline_code
        return Answer(200, {"status": "failed", "decline_code": code})

    def _subscription_action(self, sub: SandboxSubscription, action: str, data: dict[str, Any]) -> Answer:
        if sub.canceled and action != "cancel":
            return Answer(409, {"error": "subscription_canceled"})
        if action == "suspend":
            sub.access = "suspended"
        elif action == "reinstate":
            sub.access = "active"
        elif action == "cancel":
            reason = data.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise Invalid(422, "invalid_field", "reason")
            sub.canceled, sub.cancel_reason = True, reason
        else:
            plan, amount, currency = data.get("plan"), data.get("amount_minor"), data.get("currency")
            if not isinstance(plan, str) or not plan:
                raise Invalid(422, "invalid_field", "plan")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
                raise Invalid(422, "invalid_field", "amount_minor")
            if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
                raise Invalid(422, "invalid_field", "currency")
            effective_at = data.get("effective_at")
            if not isinstance(effective_at, str) or not is_aware_iso(effective_at):
                raise Invalid(422, "invalid_field", "effective_at")
            interval, count = data.get("interval"), data.get("interval_count")
            if interval is not None and interval not in INTERVALS:
                raise Invalid(422, "invalid_field", "interval")
            if count is not None and (
                not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 36
            ):
                raise Invalid(422, "invalid_field", "interval_count")
            sub.plan, sub.amount_minor, sub.currency = plan, amount, currency
            sub.plan_effective_at = effective_at
            if interval is not None:
                sub.interval = interval
            if count is not None:
                sub.interval_count = count
        return Answer(200, {"status": "ok", "subscription": asdict(sub)})
