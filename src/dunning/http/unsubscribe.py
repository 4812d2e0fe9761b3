"""``/unsubscribe/{token}``: the List-Unsubscribe link of prompts (RFC 2369, RFC 8058 one-click).

- ``POST`` with ``List-Unsubscribe=One-Click`` (what a mail client's unsubscribe button sends,
  url-encoded or multipart) records the address in the suppression list at once: no
  confirmation, as RFC 8058 requires. Doing it twice is harmless.
- ``GET`` changes nothing (scanners fetch links): it shows a page whose button makes that POST.

The token is a customer link like every other (:class:`~dunning.engine.links.LinkSigner`),
purpose ``unsubscribe``, subject ``outbox:<id>``: the email it came in, whose address is the
one suppressed. Only prompts stop; emails about the customer's account and payments still go.
Bad token or unknown email: 404; expired: 410; database unreachable: 503.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from dunning.engine.links import UNSUBSCRIBE, LinkError, outbox_id_of
from dunning.engine.recipients import suppress, suppression
from dunning.http.pages import render
from dunning.store.db import transaction
from dunning.store.models import Outbox
from dunning.store.unit import unit_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dunning.runtime import Runtime

log = logging.getLogger("dunning.engine.links")

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}
#: A one-click body is one short field; anything longer is not one.
MAX_BODY_BYTES = 4096
_STILL_SENT = "Emails about your account and payments (receipts, renewals, failed payments) still reach you."


def unsubscribe_endpoint(rt: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """The handler of ``GET`` and ``POST /unsubscribe/{token}``: a page, never an error 500."""

    async def endpoint(request: Request) -> Response:
        token = request.path_params.get("token", "")
        if request.method != "POST":
            return await run_in_threadpool(_show, rt, token)
        if not await _one_click(request):
            return _page(
                "Please use the button on the page",
                ["Nothing was changed. Open the link from your email and press the button there."],
                status=400,
            )
        return await run_in_threadpool(_act, rt, token)

    return endpoint


def _outbox(rt: Runtime, session: Session, token: str) -> Outbox | Response:
    try:
        claims = rt.links.verify(token, purpose=UNSUBSCRIBE, now=rt.clock.now())
    except LinkError as exc:
        return _page(
            "Link no longer valid", [f"{str(exc).capitalize()}."], status=410 if exc.expired else 404
        )
    outbox_id = outbox_id_of(claims.subject)
    row = session.get(Outbox, outbox_id) if outbox_id is not None else None
    if row is None or row.customer_id != claims.customer:
        return _page("Link no longer valid", ["This link is not valid."], status=404)
    return row


def _show(rt: Runtime, token: str) -> Response:
    try:
        with rt.sessions() as session:
            row = _outbox(rt, session, token)
            if isinstance(row, Response):
                return row
            if suppression(session, row.to_email) is not None:
                return _page("You're unsubscribed", ["You will get no more offers from us.", _STILL_SENT])
    except SQLAlchemyError as exc:
        return _unavailable(exc)
    return _page(
        "Unsubscribe from offers?",
        ["You will get no more offers and suggestions from us by email.", _STILL_SENT],
        confirm="Unsubscribe",
    )


def _act(rt: Runtime, token: str) -> Response:
    now = rt.clock.now()
    try:
        with transaction(rt.sessions) as session:
            row = _outbox(rt, session, token)
            if isinstance(row, Response):
                return row
            added = suppress(
                session, address=row.to_email, customer_id=row.customer_id, outbox_id=row.id, now=now
            )
            if added and row.subscription_id:
                unit_of(session).add_timeline(
                    row.subscription_id,
                    row.case_id,
                    now,
                    "email",
                    f"the recipient unsubscribed from offers (List-Unsubscribe of {row.kind}); "
                    "account and payment emails still go",
                )
    except IntegrityError:
        pass  # the same click, twice at once: the other one recorded it
    except SQLAlchemyError as exc:
        return _unavailable(exc)
    return _page("You're unsubscribed", ["You will get no more offers from us.", _STILL_SENT])


async def _one_click(request: Request) -> bool:
    """Whether the body is RFC 8058's ``List-Unsubscribe=One-Click`` (url-encoded or multipart)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return False
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("ascii"), max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            return False
        return fields.get("List-Unsubscribe", [""])[0] == "One-Click"
    if kind == "multipart/form-data":
        # One field; a parser for the general case would accept far more than this needs.
        return b'name="List-Unsubscribe"' in body and b"\r\n\r\nOne-Click\r\n" in body
    return False


def _unavailable(exc: Exception) -> Response:
    log.warning("unsubscribe link: database unavailable (%s)", type(exc).__name__)
    return _page(
        "Please try again in a moment",
        ["We could not check this link just now. Nothing was changed; please try again in a few minutes."],
        status=503,
    )


def _page(title: str, paragraphs: list[str], *, status: int = 200, confirm: str | None = None) -> Response:
    page = render("unsubscribe.html", title=title, noindex=True, paragraphs=paragraphs, confirm=confirm)
    return HTMLResponse(page, status_code=status, headers=_HEADERS)
