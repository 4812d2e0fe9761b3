"""A sandbox billing system speaking contract §2 over real HTTP, for the demo and the tests.

Payment outcomes are a pure function of (seed, invoice id, attempt number), so
two sandboxes with the same seed answer the same sequence. Idempotency follows
Stripe: the first answer for a key is replayed for every later request with
that key. Faults (timeouts, 5xx, lost answers) are drawn from their own seeded
stream, or queued explicitly with :meth:`SandboxBilling.queue_faults`.

Admin endpoints, unsigned, JSON in and out (each mirrors a SandboxBilling method):

    POST /_sandbox/invoices                      {id, subscription_id, customer_id, amount_minor,
                                                  currency, decline_code?}   -> add_invoice
    GET  /_sandbox/invoices/{id}                 -> invoice
    POST /_sandbox/invoices/{id}/mark_paid       -> mark_paid
    POST /_sandbox/subscriptions                 {id, customer_id?, plan?, amount_minor?, currency?}
    GET  /_sandbox/subscriptions/{id}            -> subscription
    POST /_sandbox/customers/{id}/payment_method {present}   -> update_payment_method
    GET  /_sandbox/calls | /_sandbox/stats | /_sandbox/faults
    POST /_sandbox/faults                        {timeout_rate?, error_rate?, lost_answer_rate?,
                                                  latency_ms?, hang_s?, next?: [kind, ...]}
    POST /_sandbox/reset
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

from dunning.signing import SIGNATURE_HEADER, SignatureError, verify

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
_T = TypeVar("_T")

_INVOICE = re.compile(r"/invoices/([^/]+)")
_PAY = re.compile(r"/invoices/([^/]+)/pay")
_SUBSCRIPTION = re.compile(r"/subscriptions/([^/]+)/(suspend|reinstate|cancel|change_plan)")


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


class _Invalid(Exception):
    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.answer = Answer(status, {"error": error} | ({"field": field} if field else {}))


def _payload(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise _Invalid(400, "invalid_json") from None
    if not isinstance(data, dict):
        raise _Invalid(400, "invalid_json")
    return data


def _is_aware_iso(value: str) -> bool:
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


class SandboxBilling:
    """The sandbox's state and rules, thread-safe; drive it directly or through :class:`SandboxServer`."""

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

    def execute(self, method: str, path: str, key: str | None, body: bytes) -> tuple[Answer, bool]:
        """Run one authenticated contract request; return the answer and whether it was a replay."""
        with self._lock:
            fingerprint = (method, path, hashlib.sha256(body).hexdigest())
            if key is not None and (stored := self._keys.get(key)) is not None:
                if stored[0] != fingerprint:
                    return Answer(422, {"error": "idempotency_key_reused"}), False
                self._replays += 1
                return stored[1], True
            try:
                answer = self._dispatch(method, path, body)
            except _Invalid as exc:
                # Like Stripe, a request refused before any work (unknown route or id, invalid body) is not
                # remembered under its key, so a retry after fixing the cause can still go through.
                return exc.answer, False
            if key is not None:
                self._keys[key] = (fingerprint, answer)
            return answer, False

    def _dispatch(self, method: str, path: str, body: bytes) -> Answer:
        if (m := _PAY.fullmatch(path)) and method == "POST":
            return self._pay(self._get(self._invoices, m[1]))
        if (m := _INVOICE.fullmatch(path)) and method == "GET":
            return Answer(200, {"status": self._get(self._invoices, m[1]).status})
        if (m := _SUBSCRIPTION.fullmatch(path)) and method == "POST":
            return self._subscription_action(self._get(self._subscriptions, m[1]), m[2], _payload(body))
        raise _Invalid(404, "not_found")

    @staticmethod
    def _get(table: dict[str, _T], quoted_id: str) -> _T:
        try:
            return table[unquote(quoted_id)]
        except KeyError:
            raise _Invalid(404, "not_found") from None

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

    def _subscription_action(self, sub: SandboxSubscription, action: str, payload: dict[str, Any]) -> Answer:
        if sub.canceled and action != "cancel":
            return Answer(409, {"error": "subscription_canceled"})
        if action == "suspend":
            sub.access = "suspended"
        elif action == "reinstate":
            sub.access = "active"
        elif action == "cancel":
            reason = payload.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise _Invalid(422, "invalid_field", "reason")
            sub.canceled, sub.cancel_reason = True, reason
        else:
            plan, amount, currency = payload.get("plan"), payload.get("amount_minor"), payload.get("currency")
            if not isinstance(plan, str) or not plan:
                raise _Invalid(422, "invalid_field", "plan")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
                raise _Invalid(422, "invalid_field", "amount_minor")
            if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
                raise _Invalid(422, "invalid_field", "currency")
            effective_at = payload.get("effective_at")
            if not isinstance(effective_at, str) or not _is_aware_iso(effective_at):
                raise _Invalid(422, "invalid_field", "effective_at")
            sub.plan, sub.amount_minor, sub.currency = plan, amount, currency
            sub.plan_effective_at = effective_at
        return Answer(200, {"status": "ok", "subscription": asdict(sub)})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], billing: SandboxBilling, secret: str) -> None:
        super().__init__(address, _Handler)
        self.billing = billing
        self.secret = secret
        self.closing = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API behind a load balancer
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would add 40 ms each
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the call log is the record; stderr noise would drown test output

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _send(self, answer: Answer) -> None:
        data = json.dumps(answer.body, separators=(",", ":")).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client gave up waiting; nothing to tell it

    def _hang_up(self, seconds: float) -> None:
        # Waiting on the server's event lets stop() cut a hang short.
        self.server.closing.wait(seconds)
        self.close_connection = True

    def _handle(self, method: str) -> None:
        path = urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path.startswith("/_sandbox/"):
            try:
                self._send(self._admin(method, path, body))
            except _Invalid as exc:
                self._send(exc.answer)
            except KeyError:
                self._send(Answer(404, {"error": "not_found"}))
            except (TypeError, ValueError) as exc:
                self._send(Answer(422, {"error": "invalid_request", "reason": str(exc)}))
            return
        self._contract(method, path, body)

    def _contract(self, method: str, path: str, body: bytes) -> None:
        billing, arrived = self.server.billing, time.time()
        key = self.headers.get("Idempotency-Key")
        faults = billing.faults
        if faults.latency_ms:
            self.server.closing.wait(faults.latency_ms / 1000)
        fault = billing.draw_fault()
        answer: Answer | None = None
        replay = False
        if fault == "error":
            answer = Answer(503, {"error": "injected_fault"})
        elif fault != "timeout":
            try:
                verify(self.server.secret, body, self.headers.get(SIGNATURE_HEADER))
            except SignatureError as exc:
                answer = Answer(401, {"error": "invalid_signature", "reason": str(exc)})
            else:
                if method == "POST" and not key:
                    answer = Answer(400, {"error": "idempotency_key_required"})
                else:
                    answer, replay = billing.execute(method, path, key if method == "POST" else None, body)
        status = None if answer is None else answer.status
        outcome = None if answer is None else answer.body.get("status", answer.body.get("error"))
        # Recorded before answering, so a client that has its answer also sees the call in the log.
        billing.record(RecordedCall(method, path, key, status, outcome, fault, replay, arrived))
        if answer is None or fault == "lost_answer":
            self._hang_up(faults.hang_s)
        else:
            self._send(answer)

    def _admin(self, method: str, path: str, body: bytes) -> Answer:
        billing, parts = self.server.billing, [unquote(p) for p in path.split("/")[2:]]
        data = _payload(body) if method == "POST" else {}
        match method, parts:
            case "POST", ["invoices"]:
                invoice_id = data.pop("id")
                return Answer(201, asdict(billing.add_invoice(invoice_id, **data)))
            case "GET", ["invoices", invoice_id]:
                return Answer(200, asdict(billing.invoice(invoice_id)))
            case "POST", ["invoices", invoice_id, "mark_paid"]:
                billing.mark_paid(invoice_id)
                return Answer(200, asdict(billing.invoice(invoice_id)))
            case "POST", ["subscriptions"]:
                subscription_id = data.pop("id")
                return Answer(201, asdict(billing.add_subscription(subscription_id, **data)))
            case "GET", ["subscriptions", subscription_id]:
                return Answer(200, asdict(billing.subscription(subscription_id)))
            case "POST", ["customers", customer_id, "payment_method"]:
                billing.update_payment_method(customer_id, present=bool(data["present"]))
                return Answer(200, {"status": "ok"})
            case "GET", ["calls"]:
                return Answer(200, {"calls": [asdict(c) for c in billing.calls()]})
            case "GET", ["stats"]:
                return Answer(200, billing.stats())
            case "GET", ["faults"]:
                return Answer(200, asdict(billing.faults))
            case "POST", ["faults"]:
                queued = data.pop("next", [])
                faults = billing.set_faults(**data)
                billing.queue_faults(*queued)
                return Answer(200, asdict(faults))
            case "POST", ["reset"]:
                billing.reset()
                return Answer(200, {"status": "ok"})
        return Answer(404, {"error": "not_found"})


class SandboxServer:
    """The sandbox billing API on a real socket, served from a background thread."""

    def __init__(self, *, secret: str, seed: int = 7, host: str = "127.0.0.1", port: int = 0) -> None:
        """Prepare a server; ``port=0`` picks a free port at :meth:`start`."""
        self.state = SandboxBilling(seed=seed)
        self._secret, self._host, self._port = secret, host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._server is None:
            raise RuntimeError("sandbox server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Start serving (idempotent) and return the base URL."""
        if self._server is None:
            self._server = _Server((self._host, self._port), self.state, self._secret)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="sandbox-billing",
                daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and release the port; hanging requests are cut short."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        server.closing.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
