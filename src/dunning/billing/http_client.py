"""The billing port over HTTP (contract §2): signed requests, idempotency keys, bounded retries."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from dunning.billing.port import (
    ALREADY_PAID,
    BillingRejected,
    BillingUnavailable,
    InvoiceState,
    PayOutcome,
    PayResult,
)
from dunning.signing import SIGNATURE_HEADER, sign

IDEMPOTENCY_HEADER = "Idempotency-Key"
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")


class _RetryableStatus(Exception):
    """A 5xx or 429 answer: the server may succeed if asked again under the same key."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


_RETRYABLE: tuple[type[Exception], ...] = (httpx.TransportError, _RetryableStatus)

#: Told of every request: ``(operation, seconds, error)``, error None, "server_error", "transport"
#: or "rejected" (:func:`dunning.telemetry.billing_call` in a worker).
Observer = Callable[[str, float, str | None], None]


def _segment(value: str) -> str:
    return quote(value, safe="")


def _iso_utc(value: datetime) -> str:
    # Naive datetimes are taken as UTC: that is what SQLite hands back for columns we wrote in UTC.
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")


def _describe(exc: BaseException) -> str:
    # The exception's type says enough ("ReadTimeout", "HTTP 503"); its text may echo URLs and headers.
    return str(exc) if isinstance(exc, _RetryableStatus) else type(exc).__name__


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_code(response: httpx.Response) -> str | None:
    # Only a short machine code is kept: a free-text error could carry customer data into our logs.
    code = _json_object(response).get("error")
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


class HttpBillingClient:
    """:class:`~dunning.billing.port.BillingPort` over HTTP; one instance may be shared by threads."""

    def __init__(
        self,
        base_url: str,
        secret: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        backoff_jitter_s: float = 0.05,
        observer: Observer | None = None,
    ) -> None:
        """Talk to the billing API at ``base_url``, signing every request with ``secret``.

        Each call makes at most ``attempts`` requests, waiting
        ``backoff_initial_s * 2**n`` (capped at ``backoff_max_s``) plus up to
        ``backoff_jitter_s`` of random jitter between them. ``observer`` (optional) is
        told each request's duration and error, for metrics.
        """
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._secret = secret
        self._attempts = attempts
        self._observer = observer
        self._wait = wait_exponential(multiplier=backoff_initial_s, max=backoff_max_s) + wait_random(
            0, backoff_jitter_s
        )
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            headers={"User-Agent": "dunning-billing-client/1"},
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        key: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send with retries; return the first non-retryable answer or raise the last retryable error."""
        if key is not None and not key:
            raise ValueError("idempotency key must not be empty")
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()

        def attempt() -> httpx.Response:
            # Signed per attempt so a retry after a long backoff does not go out with a stale timestamp.
            headers = {SIGNATURE_HEADER: sign(self._secret, body)}
            if key is not None:
                headers[IDEMPOTENCY_HEADER] = key
            if body:
                headers["Content-Type"] = "application/json"
            started = time.perf_counter()
            try:
                response = self._client.request(method, path, content=body, headers=headers)
            except httpx.TransportError:
                self._observe(operation, started, "transport")
                raise
            if response.status_code >= 500 or response.status_code == 429:
                self._observe(operation, started, "server_error")
                raise _RetryableStatus(response.status_code)
            # A 409 "already paid" is an answer, not an error of the API.
            rejected = not response.is_success and _error_code(response) != "invoice_already_paid"
            self._observe(operation, started, "rejected" if rejected else None)
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_RETRYABLE),
            reraise=True,
        )
        return retrying(attempt)

    def _observe(self, operation: str, started: float, error: str | None) -> None:
        if self._observer is not None:
            # Metrics must never fail a charge.
            with contextlib.suppress(Exception):
                self._observer(operation, time.perf_counter() - started, error)

    def _rejected(self, method: str, path: str, response: httpx.Response) -> BillingRejected:
        code = _error_code(response)
        return BillingRejected(f"{method} {path}: HTTP {response.status_code}" + (f" {code}" if code else ""))

    def _unavailable(self, method: str, path: str, exc: BaseException) -> BillingUnavailable:
        return BillingUnavailable(
            f"{method} {path}: no answer after {self._attempts} attempts ({_describe(exc)})"
        )

    def pay_invoice(self, invoice_id: str, idempotency_key: str) -> PayResult:
        """Charge the payment method on file; UNKNOWN when no attempt got an answer."""
        path = f"/invoices/{_segment(invoice_id)}/pay"
        try:
            response = self._request("POST", path, operation="pay_invoice", key=idempotency_key)
        except _RETRYABLE as exc:
            return PayResult(
                PayOutcome.UNKNOWN, detail=f"no answer after {self._attempts} attempts ({_describe(exc)})"
            )
        if response.status_code == 409 and _error_code(response) == "invoice_already_paid":
            # Paid already (out of band, or by an earlier intent): the money we wanted is in.
            return PayResult(PayOutcome.SUCCEEDED, detail=ALREADY_PAID)
        if not response.is_success:
            raise self._rejected("POST", path, response)
        data = _json_object(response)
        status = data.get("status")
        if status == PayOutcome.SUCCEEDED:
            return PayResult(PayOutcome.SUCCEEDED)
        if status == PayOutcome.FAILED:
            code = data.get("decline_code")
            return PayResult(PayOutcome.FAILED, decline_code=code if isinstance(code, str) and code else None)
        # A 2xx we cannot read says nothing about whether money moved: let the caller reconcile.
        return PayResult(PayOutcome.UNKNOWN, detail=f"unreadable answer (HTTP {response.status_code})")

    def invoice_state(self, invoice_id: str) -> InvoiceState:
        """The invoice's current state, to reconcile an attempt whose answer was lost."""
        path = f"/invoices/{_segment(invoice_id)}"
        try:
            response = self._request("GET", path, operation="invoice_state")
        except _RETRYABLE as exc:
            raise self._unavailable("GET", path, exc) from exc
        if not response.is_success:
            raise self._rejected("GET", path, response)
        status = _json_object(response).get("status")
        try:
            return InvoiceState(status)
        except ValueError:
            raise BillingUnavailable(f"GET {path}: unreadable answer (HTTP {response.status_code})") from None

    def _mutate(self, path: str, key: str, payload: dict[str, Any] | None = None) -> None:
        # The operation is the path's last segment (suspend, reinstate, cancel, change_plan): a fixed set.
        try:
            response = self._request(
                "POST", path, operation=path.rsplit("/", 1)[-1], key=key, payload=payload
            )
        except _RETRYABLE as exc:
            raise self._unavailable("POST", path, exc) from exc
        if not response.is_success:
            raise self._rejected("POST", path, response)

    def suspend(self, subscription_id: str, idempotency_key: str) -> None:
        """Cut access (grace is over)."""
        self._mutate(f"/subscriptions/{_segment(subscription_id)}/suspend", idempotency_key)

    def reinstate(self, subscription_id: str, idempotency_key: str) -> None:
        """Restore access (paid after suspension)."""
        self._mutate(f"/subscriptions/{_segment(subscription_id)}/reinstate", idempotency_key)

    def cancel(self, subscription_id: str, idempotency_key: str, reason: str | None = None) -> None:
        """End the subscription, with an optional machine-readable reason."""
        payload = None if reason is None else {"reason": reason}
        self._mutate(f"/subscriptions/{_segment(subscription_id)}/cancel", idempotency_key, payload)

    def change_plan(
        self,
        subscription_id: str,
        idempotency_key: str,
        *,
        plan: str,
        amount_minor: int,
        currency: str,
        effective_at: datetime,
        interval: str | None = None,
        interval_count: int | None = None,
    ) -> None:
        """Downgrade, switch billing interval, or apply a migrated price, from ``effective_at``.

        Naive datetimes are taken as UTC. ``interval`` and ``interval_count`` go in the body
        only when given (contract v1.1), so a v1 billing API sees exactly what it did before.
        """
        payload: dict[str, Any] = {
            "plan": plan,
            "amount_minor": amount_minor,
            "currency": currency,
            "effective_at": _iso_utc(effective_at),
        }
        if interval is not None:
            payload["interval"] = interval
        if interval_count is not None:
            payload["interval_count"] = interval_count
        self._mutate(f"/subscriptions/{_segment(subscription_id)}/change_plan", idempotency_key, payload)
