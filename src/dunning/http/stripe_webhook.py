"""``POST /stripe/webhook``: Stripe's own webhook events, verified, mapped and ingested.

The answers follow what Stripe retries: a 2xx ends Stripe's retries, anything
else makes it try again for up to three days. So:

* a bad or stale ``Stripe-Signature``: 400 (Stripe's documented answer);
* a type we do not act on: 200 ``{"ignored": ...}``, counted, never parked;
* a mapped event that fails our checks (a customer without an email, say): the
  same bytes would fail on every retry, so it is parked as a dead letter naming
  the field (``dunning dlq list``) and answered 200 ``{"parked": ...}``;
* accepted: 200 ``{"accepted": <event id>}`` once it is on the queue;
* the queue or the database down: 503, so that Stripe delivers it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dunning.contract import ACTOR, QUEUE, InvalidEvent, parse_event
from dunning.contract.stripe import Ignored, map_stripe_event
from dunning.contract.untrusted_json import JsonRefused, loads
from dunning.signing import SignatureError, verify_any

if TYPE_CHECKING:
    from dunning.client import Client
    from dunning.contract import Event
    from dunning.runtime import Runtime

STRIPE_SIGNATURE_HEADER = "Stripe-Signature"
#: Stripe events carry whole objects (an invoice with its lines): larger than our own envelopes.
MAX_STRIPE_BODY_BYTES = 1024 * 1024

#: Served on ``/metrics`` (registered by :func:`dunning.metrics.registry_for`).
STRIPE_WEBHOOKS = Counter(
    "dunning_stripe_webhooks",
    "Stripe webhook deliveries by Stripe event type and outcome (accepted, ignored, parked, refused)",
    ["stripe_type", "outcome"],
    registry=None,
)


def _answer(stripe_type: str, outcome: str, body: dict[str, Any], status: int = 200) -> Response:
    STRIPE_WEBHOOKS.labels(stripe_type=stripe_type, outcome=outcome).inc()
    return JSONResponse(body, status_code=status)


def park_mapped(rt: Runtime, envelope: dict[str, Any], stripe_type: str, exc: InvalidEvent) -> str:
    """Keep a mapped event we refuse as a dead letter, requeueable as an ingest message once fixed."""
    from dunning.store.dead_letters import park

    message_id = f"stripe:{str(envelope.get('id'))[:200]}"
    payload = {
        "queue_name": QUEUE,
        "actor_name": ACTOR,
        "args": [envelope],
        "kwargs": {},
        "message_id": message_id,
    }
    park(
        rt,
        {
            "message_id": message_id,
            "queue": QUEUE,
            "actor": ACTOR,
            "payload": json.dumps(payload, separators=(",", ":"), default=str),
            "field": exc.field,
            "reason": f"from Stripe {stripe_type}: {exc.reason}",
            "error_type": "InvalidEvent",
            "parked_at": datetime.now(UTC),
        },
    )
    return message_id


def stripe_webhook_endpoint(
    rt: Runtime,
    client: Callable[[], Client],
    read_body: Callable[[Request, int], Awaitable[bytes | None]],
) -> Callable[[Request], Awaitable[Response]]:
    """The route handler; ``read_body`` reads at most a limit (None when over it)."""

    async def webhook(request: Request) -> Response:
        secrets = rt.settings.stripe_webhook_secrets
        if not secrets:
            return JSONResponse(
                {"error": "Stripe webhooks disabled: DUNNING_STRIPE_WEBHOOK_SECRETS is not set"},
                status_code=401,
            )
        body = await read_body(request, MAX_STRIPE_BODY_BYTES)
        if body is None:
            return _answer(
                "(unknown)", "refused", {"error": "too large", "limit_bytes": MAX_STRIPE_BODY_BYTES}, 413
            )
        try:
            verify_any(secrets, body, request.headers.get(STRIPE_SIGNATURE_HEADER), now=time.time())
        except SignatureError as exc:
            return _answer("(unknown)", "refused", {"error": "bad signature", "reason": str(exc)}, 400)
        try:
            stripe_event = loads(body)
        except JsonRefused as exc:
            return _answer("(unknown)", "refused", {"error": "not JSON", "reason": exc.reason}, 400)
        mapped = map_stripe_event(stripe_event)
        if isinstance(mapped, Ignored):
            return _answer(
                mapped.stripe_type[:100], "ignored", {"ignored": mapped.stripe_type, "reason": mapped.reason}
            )
        stripe_type = str(stripe_event["type"])
        envelope = mapped.envelope
        try:
            event: Event = parse_event(envelope)
        except InvalidEvent as exc:
            try:
                ref = await run_in_threadpool(park_mapped, rt, envelope, stripe_type, exc)
            except Exception as park_exc:
                return _answer(
                    stripe_type,
                    "unavailable",
                    {"error": "database unavailable", "reason": type(park_exc).__name__, "retry": True},
                    503,
                )
            return _answer(
                stripe_type,
                "parked",
                {"parked": ref, "fields": [{"path": exc.field, "reason": exc.reason}]},
            )
        try:
            await run_in_threadpool(client().send_event, event)
        except Exception as exc:
            return _answer(
                stripe_type,
                "unavailable",
                {"error": "broker unavailable", "reason": type(exc).__name__, "retry": True},
                503,
            )
        return _answer(stripe_type, "accepted", {"accepted": event.id, "type": event.type})

    return webhook
