"""Producer API for a Python billing system: validate locally, enqueue on the broker.

    from dunning.client import Client
    client = Client("redis://localhost:6379/0")
    client.payment_failed(invoice_id="in_1", subscription_id="sub_1", customer_id="cus_1",
                          amount_minor=4900, currency="EUR", decline_code="insufficient_funds")

Events are validated before they leave the producer, so a bad event raises
:class:`~dunning.contract.InvalidEvent` here rather than landing in the dead
letters. The message is a plain Dramatiq message for actor ``ingest_event`` on
queue ``billing_events`` whose single argument is the envelope (contract §1).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from dunning.broker.names import EVENTS_QUEUE, INGEST_ACTOR
from dunning.contract import Event, InvalidEvent, parse_event, to_wire

__all__ = ["Client", "InvalidEvent", "build_message", "send_event"]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def build_message(envelope: dict[str, Any] | Event) -> Message[Any]:
    """Validate an envelope and wrap it as the Dramatiq message the workers consume."""
    event = envelope if not isinstance(envelope, dict) else parse_event(envelope)
    return Message(
        queue_name=EVENTS_QUEUE, actor_name=INGEST_ACTOR, args=(to_wire(event),), kwargs={}, options={}
    )


class Client:
    """Sends billing events to the dunning workers."""

    def __init__(self, redis_url: str | None = None, *, broker: dramatiq.Broker | None = None) -> None:
        if broker is None:
            if redis_url is None:
                from dunning.broker.setup import redis_url as configured
                from dunning.settings import load_settings

                redis_url = configured(load_settings())
            # No middleware: a producer only enqueues.
            broker = RedisBroker(url=redis_url, middleware=[])
        self.broker = broker

    def send_event(self, envelope: dict[str, Any] | Event) -> str:
        """Validate and enqueue one event; returns its id. Raises InvalidEvent naming the field."""
        message = build_message(envelope)
        self.broker.enqueue(message)
        return str(message.args[0]["id"])

    def _send(self, type_: str, data: dict[str, Any], event_id: str | None, occurred_at: str | None) -> str:
        return self.send_event(
            {"id": event_id or _event_id(), "type": type_, "occurred_at": occurred_at or _now(), "data": data}
        )

    def customer_upserted(
        self, customer: dict[str, Any], *, event_id: str | None = None, occurred_at: str | None = None
    ) -> str:
        """``customer.upserted``: ``{id, email, name?, locale?, timezone?}``."""
        return self._send("customer.upserted", {"customer": customer}, event_id, occurred_at)

    def subscription_upserted(
        self, subscription: dict[str, Any], *, event_id: str | None = None, occurred_at: str | None = None
    ) -> str:
        """``subscription.upserted`` with the subscription object of the contract."""
        return self._send("subscription.upserted", {"subscription": subscription}, event_id, occurred_at)

    def payment_failed(
        self,
        *,
        invoice_id: str,
        subscription_id: str,
        customer_id: str,
        amount_minor: int,
        currency: str,
        decline_code: str,
        failure_message: str | None = None,
        event_id: str | None = None,
        occurred_at: str | None = None,
    ) -> str:
        """``invoice.payment_failed``."""
        data: dict[str, Any] = {
            "invoice": {
                "id": invoice_id,
                "subscription_id": subscription_id,
                "customer_id": customer_id,
                "amount_minor": amount_minor,
                "currency": currency,
            },
            "decline_code": decline_code,
        }
        if failure_message:
            data["failure_message"] = failure_message
        return self._send("invoice.payment_failed", data, event_id, occurred_at)

    def invoice_paid(
        self,
        *,
        invoice_id: str,
        subscription_id: str,
        amount_minor: int,
        currency: str,
        event_id: str | None = None,
        occurred_at: str | None = None,
    ) -> str:
        """``invoice.paid``."""
        invoice = {
            "id": invoice_id,
            "subscription_id": subscription_id,
            "amount_minor": amount_minor,
            "currency": currency,
        }
        return self._send("invoice.paid", {"invoice": invoice}, event_id, occurred_at)

    def payment_method_updated(
        self,
        *,
        customer_id: str,
        payment_method: dict[str, Any],
        event_id: str | None = None,
        occurred_at: str | None = None,
    ) -> str:
        """``payment_method.updated``: ``payment_method = {present, brand?, last4?, exp_month?, exp_year?}``."""
        data = {"customer_id": customer_id, "payment_method": payment_method}
        return self._send("payment_method.updated", data, event_id, occurred_at)

    def subscription_canceled(
        self,
        *,
        subscription_id: str,
        reason: str | None = None,
        event_id: str | None = None,
        occurred_at: str | None = None,
    ) -> str:
        """``subscription.canceled``."""
        data: dict[str, Any] = {"subscription_id": subscription_id}
        if reason:
            data["reason"] = reason
        return self._send("subscription.canceled", data, event_id, occurred_at)


def send_event(envelope: dict[str, Any] | Event, *, broker: dramatiq.Broker | None = None) -> str:
    """Validate and enqueue one event on the configured broker (``DUNNING_REDIS_URL``)."""
    return Client(broker=broker).send_event(envelope)
