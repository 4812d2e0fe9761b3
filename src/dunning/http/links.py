"""``/l/{token}``: the customer links of emails, for every workflow.

This module checks the token and turns a workflow's answer into a response;
what a link does is the business of the workflow that registered its purpose
and subject kind (:attr:`dunning.engine.registry.Workflow.links`,
:mod:`dunning.engine.link_pages`).

- ``GET`` changes nothing (mail scanners fetch links before the customer does):
  the workflow's ``show`` answers with a page, the billing portal, or a refusal.
- ``POST`` is the confirm button of a page that has one: the form must carry
  the page's ``confirm_code`` (:meth:`~dunning.engine.links.LinkSigner.form_code`),
  so a bare POST to the link acts on nothing; the workflow's ``act`` answers,
  and the messages its transaction left are sent once it committed.

Bad or tampered token, a purpose or subject no workflow serves: 404; expired
token: 410; database unreachable: 503. Going on to the portal is a 303 to
``DUNNING_PAYMENT_UPDATE_URL`` with the customer id encoded and a short-lived
``dunning_token`` naming the purpose, or a placeholder page when no portal is set.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from dunning.engine.link_pages import LinkAnswer, LinkPage, Page, Portal, Refused
from dunning.engine.links import (
    MANAGE_ACCOUNT,
    UPDATE_PAYMENT_METHOD,
    LinkClaims,
    LinkError,
    derive_portal_secret,
    portal_redirect_url,
    portal_token,
)
from dunning.engine.registry import link_page, link_purposes
from dunning.http.pages import render

if TYPE_CHECKING:
    from dunning.engine.jobs import Dispatch
    from dunning.runtime import Runtime

log = logging.getLogger("dunning.engine.links")

#: On every answer: the token is in the URL, so keep it out of caches, search engines and Referer headers.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}
#: On pages with a confirm button: no other site may frame it and trick a click on it.
_FORM_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}

#: A confirm form is one short field; anything longer is not one of ours.
MAX_FORM_BYTES = 4096

#: Sends job messages after a commit (the app's broker).
Send = Callable[["list[Dispatch]"], object]


def customer_link_endpoint(rt: Runtime, send: Send) -> Callable[[Request], Awaitable[Response]]:
    """The handler of ``GET`` and ``POST /l/{token}``; ``send`` enqueues the jobs a confirm wrote.

    Whatever the token or the form holds, the answer is a page or a redirect, never an error 500.
    The blocking work (database) runs in Starlette's threadpool.
    """

    async def link(request: Request) -> Response:
        token = request.path_params.get("token", "")
        if request.method != "POST":
            return await run_in_threadpool(_show, rt, token)
        form = await _read_form(request)
        return await run_in_threadpool(_act, rt, token, form, send)

    return link


def _resolve(rt: Runtime, token: str) -> tuple[LinkClaims, LinkPage] | Response:
    """The token's claims and the page that answers them, or the refusal to send."""
    try:
        claims = rt.links.verify(token, purpose=link_purposes(), now=rt.clock.now())
    except LinkError as exc:
        return _refused(str(exc), status=410 if exc.expired else 404)
    except SQLAlchemyError as exc:  # the simulated clock lives in the database
        return _unavailable(exc)
    page = link_page(claims.purpose, claims.subject)
    if page is None:
        return _refused("this link is not valid", status=404)
    return claims, page


def _show(rt: Runtime, token: str) -> Response:
    resolved = _resolve(rt, token)
    if isinstance(resolved, Response):
        return resolved
    claims, page = resolved
    try:
        answer = page.show(rt, claims)
    except SQLAlchemyError as exc:
        return _unavailable(exc)
    return _respond(rt, token, claims, answer)


def _act(rt: Runtime, token: str, form: dict[str, str], send: Send) -> Response:
    resolved = _resolve(rt, token)
    if isinstance(resolved, Response):
        return resolved
    claims, page = resolved
    if page.act is None:
        return _page("Nothing to confirm", ["This link does not take a confirmation."], status=405)
    if not hmac.compare_digest(form.get("confirm_code", "").encode(), rt.links.form_code(token).encode()):
        return _page(
            "Please use the button on the page",
            ["Nothing was changed. Open the link from your email and press the button there."],
            status=403,
        )
    try:
        answer, dispatch = page.act(rt, claims)
    except SQLAlchemyError as exc:
        return _unavailable(exc)
    if dispatch:
        try:
            send(dispatch)
        except Exception as exc:
            # Committed already: the jobs' leases bring them back if their messages are lost.
            log.warning("customer link: could not enqueue %d job(s) (%s)", len(dispatch), type(exc).__name__)
    return _respond(rt, token, claims, answer)


async def _read_form(request: Request) -> dict[str, str]:
    """The fields of a small url-encoded form (first value of each); empty for anything else."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


def _respond(rt: Runtime, token: str, claims: LinkClaims, answer: LinkAnswer) -> Response:
    if isinstance(answer, Refused):
        return _refused(answer.reason, status=answer.status)
    if isinstance(answer, Portal):
        return _open(rt, claims)
    assert isinstance(answer, Page)
    values: dict[str, object] = {"customer": None, "expires_at": "", **answer.values}
    headers = dict(_HEADERS)
    if answer.confirm:
        values.update(confirm=answer.confirm, confirm_code=rt.links.form_code(token))
        headers.update(_FORM_HEADERS)
    page = render(
        answer.template, title=answer.title, noindex=True, paragraphs=list(answer.paragraphs), **values
    )
    return HTMLResponse(page, status_code=answer.status, headers=headers)


def _open(rt: Runtime, claims: LinkClaims) -> Response:
    template = rt.settings.extra.get("payment_update_url")
    if template:
        secret = rt.settings.portal_secret or derive_portal_secret(rt.settings.link_secret)
        # Wall-clock time, not business time: the portal checks the expiry against its own clock.
        token = portal_token(
            secret, customer=claims.customer, purpose=claims.purpose, subject=claims.subject, now=time.time()
        )
        target = portal_redirect_url(template, customer=claims.customer, token=token)
        return Response(status_code=303, headers={"Location": target, **_HEADERS})
    title, what = _PLACEHOLDERS.get(claims.purpose, _PLACEHOLDERS[MANAGE_ACCOUNT])
    return _page(
        title,
        [f"This is where your billing provider's secure page {what} opens."],
        customer=_printable(claims.customer),
        expires_at=f"{claims.expires_at:%Y-%m-%d %H:%M}",
    )


_PLACEHOLDERS = {
    UPDATE_PAYMENT_METHOD: ("Update your payment method", "to update your card"),
    MANAGE_ACCOUNT: ("Your account", "for your account"),
}


def _printable(text: str) -> str:
    # A lone surrogate (possible in an id from JSON) cannot be encoded as UTF-8: show it escaped.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _refused(reason: str, *, status: int) -> Response:
    return _page(
        "Link no longer valid",
        [f"{reason.capitalize()}.", "Reply to the email you received and we will send a fresh link."],
        status=status,
    )


def _unavailable(exc: Exception) -> Response:
    log.warning("customer link: database unavailable (%s)", type(exc).__name__)
    return _page(
        "Please try again in a moment",
        ["We could not check this link just now. Nothing was changed; please try again in a few minutes."],
        status=503,
    )


def _page(
    title: str, paragraphs: list[str], *, status: int = 200, customer: str | None = None, expires_at: str = ""
) -> Response:
    page = render(
        "message.html",
        title=title,
        noindex=True,
        paragraphs=paragraphs,
        customer=customer,
        expires_at=expires_at,
    )
    return HTMLResponse(page, status_code=status, headers=_HEADERS)
