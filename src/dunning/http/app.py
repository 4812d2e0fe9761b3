"""``dunning serve``: signed HTTP ingest, Stripe webhooks, customer links, health, a small ops page and the dashboard (``/ops``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dramatiq
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from dunning import telemetry
from dunning.contract import Event
from dunning.http.ingest import DEFAULT_DRAIN_BYTES, events_endpoint, read_body
from dunning.http.links import customer_link_endpoint
from dunning.http.stripe_webhook import stripe_webhook_endpoint
from dunning.http.unsubscribe import unsubscribe_endpoint

if TYPE_CHECKING:
    from dunning.engine.jobs import Dispatch
    from dunning.runtime import Runtime


def create_app(rt: Runtime, broker: dramatiq.Broker | None = None) -> Starlette:
    """The ASGI app; ``broker`` defaults to the configured one.

    Handlers that touch the database or Redis are plain functions (Starlette runs
    them in its threadpool) or hand their blocking call to the threadpool.
    """
    from dunning.client import Client

    client = Client(broker=broker) if broker is not None else None

    def _client() -> Client:
        nonlocal client
        if client is None:
            from dunning.broker.setup import redis_url

            client = Client(redis_url(rt.settings))
        return client

    async def send_event(event: Event) -> None:
        # Blocking Redis I/O: off the event loop, so one slow Redis call doesn't stall every request.
        await run_in_threadpool(_client().send_event, event)

    async def count_refusal(reason: str) -> None:
        # Counted in Redis (dunning.telemetry), from the threadpool: a flood of refusals must not
        # stall the event loop on Redis.
        await run_in_threadpool(telemetry.inc, telemetry.INGEST_REFUSALS, reason)

    events = events_endpoint(
        lambda: rt.settings.ingest_secret, send_event, rt.settings.ingest_drain_bytes, count_refusal
    )

    def send_jobs_now(dispatch: list[Dispatch]) -> None:
        from dunning.broker.enqueue import send_jobs

        send_jobs(_client().broker, dispatch, mail_batch=rt.tuning.mail_batch)

    link = customer_link_endpoint(rt, send_jobs_now)

    async def read_capped(request: Request, limit: int) -> bytes | None:
        # The Stripe webhook's body, read (and an oversized one drained) like POST /events's.
        return await read_body(
            request, limit, max(limit, rt.settings.ingest_drain_bytes or DEFAULT_DRAIN_BYTES)
        )

    stripe_webhook = stripe_webhook_endpoint(rt, _client, read_capped)

    def ops_denied(request: Request) -> Response | None:
        """None if the request may read ops data (``/``, ``/metrics``), else the 401 to send (dunning.http.auth)."""
        from dunning.http.auth import Access, challenge, ops_access

        access = ops_access(
            token=rt.settings.ops_token,
            client_host=request.client.host if request.client else None,
            authorization=request.headers.get("authorization"),
        )
        if access is Access.ALLOWED:
            return None
        if access is Access.INVALID:
            reason = "wrong bearer token"
        elif rt.settings.ops_token:
            reason = "send Authorization: Bearer <DUNNING_OPS_TOKEN>"
        else:
            reason = "served to loopback clients only while DUNNING_OPS_TOKEN is not set"
        return PlainTextResponse(
            f"unauthorized: {reason}\n", status_code=401, headers={"WWW-Authenticate": challenge(access)}
        )

    def health(request: Request) -> Response:
        # Open to anyone (load balancers, container healthchecks): it says "ok" or which dependency
        # is down, by exception type only, and nothing about the business.
        from sqlalchemy import text

        try:
            with rt.engine.connect() as conn:
                conn.execute(text("select 1"))
        except Exception as exc:
            return PlainTextResponse(f"database unavailable: {type(exc).__name__}", status_code=503)
        try:
            _client().broker.client.ping()  # type: ignore[attr-defined]
        except Exception as exc:
            return PlainTextResponse(f"broker unavailable: {type(exc).__name__}", status_code=503)
        return PlainTextResponse("ok")

    def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from dunning.metrics import registry_for

        if (denied := ops_denied(request)) is not None:
            return denied
        return Response(
            generate_latest(registry_for(rt, _client().broker.client)), media_type=CONTENT_TYPE_LATEST
        )  # type: ignore[attr-defined]

    def ops(request: Request) -> Response:
        from dunning.broker.setup import redis_url
        from dunning.http.pages import render
        from dunning.ops import queue_snapshot
        from dunning.report import build_report

        if (denied := ops_denied(request)) is not None:
            return denied
        snap = queue_snapshot(rt, redis_url(rt.settings))
        rep = build_report(rt)
        page = render(
            "ops.html",
            title="Dunning: operations",
            noindex=True,
            now=f"{snap.now:%Y-%m-%d %H:%M}",
            dead_letters=snap.dead_letters,
            queues=snap.queues,
            jobs=list(snap.jobs.items()),
            cases=sorted(rep.by_status.items()),
        )
        return HTMLResponse(page)

    def openapi(request: Request) -> Response:
        from dunning.http.openapi import openapi_text

        return Response(openapi_text(), media_type="application/json")

    def api_docs(request: Request) -> Response:
        from dunning.http.apidocs import page_values
        from dunning.http.pages import render

        return HTMLResponse(render("api_docs.html", noindex=False, **page_values()))

    def resend(queue: str, actor: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        # What `dunning dlq requeue` does with a dead message: the original, sent again as is.
        from dramatiq import Message

        _client().broker.enqueue(
            Message(queue_name=queue, actor_name=actor, args=tuple(args), kwargs=kwargs, options={})
        )

    def configured_redis_url() -> str:
        from dunning.broker.setup import redis_url

        return redis_url(rt.settings)

    from dunning.http.dashboard import dashboard_routes

    return Starlette(
        routes=[
            *dashboard_routes(rt, configured_redis_url, resend),
            Route("/events", events, methods=["POST"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", api_docs, methods=["GET"]),
            Route("/stripe/webhook", stripe_webhook, methods=["POST"]),
            Route("/l/{token}", link, methods=["GET", "POST"]),
            Route("/unsubscribe/{token}", unsubscribe_endpoint(rt), methods=["GET", "POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/", ops, methods=["GET"]),
        ]
    )


__all__: list[Any] = ["create_app"]
