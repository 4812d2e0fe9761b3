"""The sandbox billing API over HTTP: Starlette routes for contract §2 and the unsigned admin endpoints.

A contract request goes through what a real billing API behind a flaky network
would put it through, in this order: the added latency, a fault drawn (or
queued), the signature check, the ``Idempotency-Key`` a POST must carry, then
the operation its route names, run at most once per key by
:meth:`~.billing.SandboxBilling.execute`. Every contract request is recorded
before it is answered, so a client that has its answer also sees the call in
the log. A "timeout" or a "lost answer" answers nothing: the connection hangs
for ``hang_s`` and is then closed.

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

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dunning.signing import SIGNATURE_HEADER, SignatureError, verify

from .billing import SandboxBilling
from .model import SUBSCRIPTION_ACTIONS, Answer, Invalid, RecordedCall, payload

#: Closes the connection a request came on without answering it (given the request's scope).
Drop = Callable[[Scope], None]
_Endpoint = Callable[[Request], Awaitable[Response]]


class _RawPath:
    """Route on the path as sent, so an id holding an escaped ``/`` (``%2F``) stays one segment.

    The billing client quotes ids with ``safe=""``; the server decodes each
    segment after matching, as the real API would.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = {**scope, "path": scope["raw_path"].decode("latin-1")}
        await self.app(scope, receive, send)


class _NoAnswer(Response):
    """What a dropped request gets: nothing. Waits until the server has seen the connection go."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


def _json(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status)


def _param(request: Request, name: str) -> str:
    return unquote(request.path_params[name])


def create_app(billing: SandboxBilling, secret: str, *, closing: asyncio.Event, drop: Drop) -> Starlette:
    """The sandbox API on ``billing``, checking signatures with ``secret``.

    ``closing`` is set when the server stops: it cuts injected latency and hangs
    short. ``drop`` closes a request's connection without an answer (ASGI has
    no message for that; the server running the app provides it).
    """

    async def pause(seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), seconds)

    async def contract(request: Request, operation: Callable[[bytes], Answer]) -> Response:
        body = await request.body()
        arrived, method, path = time.time(), request.method, request.scope["path"]
        key = request.headers.get("Idempotency-Key")
        faults = billing.faults
        await pause(faults.latency_ms / 1000)
        fault = billing.draw_fault()
        answer: Answer | None = None
        replay = False
        if fault == "error":
            answer = Answer(503, {"error": "injected_fault"})
        elif fault != "timeout":
            try:
                verify(secret, body, request.headers.get(SIGNATURE_HEADER))
            except SignatureError as exc:
                answer = Answer(401, {"error": "invalid_signature", "reason": str(exc)})
            else:
                if method == "POST" and not key:
                    answer = Answer(400, {"error": "idempotency_key_required"})
                else:
                    stored_key = key if method == "POST" else None
                    answer, replay = billing.execute(method, path, stored_key, body, lambda: operation(body))
        status = None if answer is None else answer.status
        outcome = None if answer is None else answer.body.get("status", answer.body.get("error"))
        billing.record(RecordedCall(method, path, key, status, outcome, fault, replay, arrived))
        if answer is None or fault == "lost_answer":
            await pause(faults.hang_s)
            drop(request.scope)
            return _NoAnswer()
        return _json(answer)

    async def pay(request: Request) -> Response:
        invoice_id = _param(request, "invoice_id")
        return await contract(request, lambda _body: billing.pay(invoice_id))

    async def invoice_status(request: Request) -> Response:
        invoice_id = _param(request, "invoice_id")
        return await contract(request, lambda _body: billing.invoice_status(invoice_id))

    def subscription_action(action: str) -> _Endpoint:
        async def endpoint(request: Request) -> Response:
            subscription_id = _param(request, "subscription_id")
            return await contract(
                request, lambda body: billing.act_on_subscription(subscription_id, action, body)
            )

        return endpoint

    async def unknown(request: Request) -> Response:
        # Still a contract request: it is delayed, faulted, verified and recorded like the others.
        def not_found(_body: bytes) -> Answer:
            raise Invalid(404, "not_found")

        return await contract(request, not_found)

    routes: list[BaseRoute] = [
        Mount("/_sandbox", routes=_admin_routes(billing)),
        Route("/invoices/{invoice_id}/pay", pay, methods=["POST"]),
        Route("/invoices/{invoice_id}", invoice_status, methods=["GET"]),
        *(
            Route(
                f"/subscriptions/{{subscription_id}}/{action}", subscription_action(action), methods=["POST"]
            )
            for action in SUBSCRIPTION_ACTIONS
        ),
        # Anything else (a wrong method included) is answered 404 after the usual checks.
        Route("/{path:path}", unknown, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_RawPath)])


def _admin(handler: Callable[[Request, dict[str, Any]], Answer]) -> _Endpoint:
    """An admin endpoint: the JSON body (POST) in, ``handler``'s answer out, errors as 4xx JSON."""

    async def endpoint(request: Request) -> Response:
        try:
            data = payload(await request.body()) if request.method == "POST" else {}
            answer = handler(request, data)
        except Invalid as exc:
            answer = exc.answer
        except KeyError:
            answer = Answer(404, {"error": "not_found"})
        except (TypeError, ValueError) as exc:
            answer = Answer(422, {"error": "invalid_request", "reason": str(exc)})
        return _json(answer)

    return endpoint


def _admin_routes(billing: SandboxBilling) -> list[BaseRoute]:
    def add_invoice(_request: Request, data: dict[str, Any]) -> Answer:
        invoice_id = data.pop("id")
        return Answer(201, asdict(billing.add_invoice(invoice_id, **data)))

    def invoice(request: Request, _data: dict[str, Any]) -> Answer:
        return Answer(200, asdict(billing.invoice(_param(request, "invoice_id"))))

    def mark_paid(request: Request, _data: dict[str, Any]) -> Answer:
        invoice_id = _param(request, "invoice_id")
        billing.mark_paid(invoice_id)
        return Answer(200, asdict(billing.invoice(invoice_id)))

    def add_subscription(_request: Request, data: dict[str, Any]) -> Answer:
        subscription_id = data.pop("id")
        return Answer(201, asdict(billing.add_subscription(subscription_id, **data)))

    def subscription(request: Request, _data: dict[str, Any]) -> Answer:
        return Answer(200, asdict(billing.subscription(_param(request, "subscription_id"))))

    def payment_method(request: Request, data: dict[str, Any]) -> Answer:
        billing.update_payment_method(_param(request, "customer_id"), present=bool(data["present"]))
        return Answer(200, {"status": "ok"})

    def calls(_request: Request, _data: dict[str, Any]) -> Answer:
        return Answer(200, {"calls": [asdict(c) for c in billing.calls()]})

    def stats(_request: Request, _data: dict[str, Any]) -> Answer:
        return Answer(200, billing.stats())

    def faults(_request: Request, _data: dict[str, Any]) -> Answer:
        return Answer(200, asdict(billing.faults))

    def set_faults(_request: Request, data: dict[str, Any]) -> Answer:
        queued = data.pop("next", [])
        changed = billing.set_faults(**data)
        billing.queue_faults(*queued)
        return Answer(200, asdict(changed))

    def reset(_request: Request, _data: dict[str, Any]) -> Answer:
        billing.reset()
        return Answer(200, {"status": "ok"})

    def not_found(_request: Request, _data: dict[str, Any]) -> Answer:
        return Answer(404, {"error": "not_found"})

    def route(path: str, handler: Callable[[Request, dict[str, Any]], Answer], method: str) -> Route:
        return Route(path, _admin(handler), methods=[method])

    return [
        route("/invoices", add_invoice, "POST"),
        route("/invoices/{invoice_id}", invoice, "GET"),
        route("/invoices/{invoice_id}/mark_paid", mark_paid, "POST"),
        route("/subscriptions", add_subscription, "POST"),
        route("/subscriptions/{subscription_id}", subscription, "GET"),
        route("/customers/{customer_id}/payment_method", payment_method, "POST"),
        route("/calls", calls, "GET"),
        route("/stats", stats, "GET"),
        route("/faults", faults, "GET"),
        route("/faults", set_faults, "POST"),
        route("/reset", reset, "POST"),
        Route("/{rest:path}", _admin(not_found), methods=["GET", "POST"]),
    ]
