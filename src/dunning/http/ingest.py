"""``POST /events``: signed HTTP ingest (contract §1), every refusal explained.

Checks, in order: ingest enabled (401), size (413), signature (401), content
type (415), JSON (400), the event itself (422, listing every invalid field).
An unsigned request therefore never learns anything about its body.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from dunning.contract import MAX_EVENT_BYTES, Event, InvalidEvent, parse_event
from dunning.signing import SIGNATURE_HEADER, SignatureError, verify

#: How much of an oversized body is read and discarded before answering 413, by default (8 MiB, 128x
#: the limit): enough for the multi-megabyte mistakes clients make (a file posted by error), bounded so
#: that an unauthenticated client cannot keep a server reading for long.
DEFAULT_DRAIN_BYTES = 128 * MAX_EVENT_BYTES

TOO_LARGE = {
    "error": "invalid event",
    "field": "(envelope)",
    "reason": "too large",
    "fields": [{"path": "(envelope)", "reason": "too large"}],
}

Send = Callable[[Event], Awaitable[Any]]
#: Told the reason of each refusal (``dunning_ingest_refusals_total{reason}``): disabled, too_large,
#: bad_signature, unsupported_media_type, invalid_event (400 and 422), broker_unavailable.
Count = Callable[[str], Awaitable[Any]]


async def _not_counted(reason: str) -> None:
    return None


def refusal(exc: InvalidEvent) -> JSONResponse:
    """The answer to a refused event: 400 if the body is not JSON at all, else 422; both list every field."""
    body = {"error": "invalid event", "field": exc.field, "reason": exc.reason, "fields": exc.fields}
    return JSONResponse(body, status_code=400 if exc.malformed else 422)


def json_media_type(content_type: str | None) -> bool:
    """True for a missing Content-Type (v1 never checked it), ``application/json`` or ``application/*+json``."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, limit: int, drain: int) -> bytes | None:
    """The request body, or None if it exceeds ``limit`` bytes.

    An oversized body is still read, and thrown away, up to ``drain`` bytes in all
    before the caller answers 413: a client that sends its whole body before it
    reads the answer (Python's urllib, many simple clients) would otherwise see
    the connection reset mid-upload instead of the 413. Past ``drain`` the answer
    goes out at once; uvicorn then discards the rest of the body until its
    keep-alive timeout (5 s), and a client that is still sending may or may not
    see the answer before the connection is closed.
    """
    declared = request.headers.get("content-length", "")
    # A length of thousands of digits is refused unread (int() of it would raise: Python's 4,300-digit guard).
    if declared.isascii() and declared.isdigit() and len(declared) > 20:
        return None
    body = bytearray()
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > drain:
                return None
            if seen <= limit:
                body += chunk
    except ClientDisconnect:
        return None if seen > limit else bytes(body)
    return None if seen > limit else bytes(body)


def events_endpoint(
    secret_of: Callable[[], str | None],
    send: Send,
    drain_bytes: int | None = None,
    count: Count = _not_counted,
) -> Callable[[Request], Awaitable[Response]]:
    """The ``POST /events`` handler: ``send`` enqueues an accepted event, ``count`` counts refusals
    (both blocking work the caller keeps off the event loop)."""
    drain = max(drain_bytes or DEFAULT_DRAIN_BYTES, MAX_EVENT_BYTES)

    async def refused(reason: str, answer: JSONResponse) -> Response:
        await count(reason)
        return answer

    async def events(request: Request) -> Response:
        secret = secret_of()
        if not secret:
            return await refused(
                "disabled",
                JSONResponse({"error": "ingest disabled: DUNNING_INGEST_SECRET is not set"}, status_code=401),
            )
        # Read at most ``drain``: an unauthenticated client must not make us buffer an unbounded body.
        body = await read_body(request, MAX_EVENT_BYTES, drain)
        if body is None:
            return await refused("too_large", JSONResponse(TOO_LARGE, 413))
        try:
            verify(secret, body, request.headers.get(SIGNATURE_HEADER), now=time.time())
        except SignatureError as exc:
            return await refused(
                "bad_signature", JSONResponse({"error": "bad signature", "reason": str(exc)}, status_code=401)
            )
        if not json_media_type(request.headers.get("content-type")):
            return await refused(
                "unsupported_media_type",
                JSONResponse(
                    {"error": "unsupported media type", "reason": "send Content-Type: application/json"},
                    status_code=415,
                ),
            )
        try:
            event = parse_event(body)
        except InvalidEvent as exc:
            return await refused("invalid_event", refusal(exc))
        try:
            await send(event)
        except Exception as exc:
            return await refused(
                "broker_unavailable",
                JSONResponse(
                    {"error": "broker unavailable", "reason": type(exc).__name__, "retry": True},
                    status_code=503,
                ),
            )
        return JSONResponse({"accepted": event.id}, status_code=202)

    return events
