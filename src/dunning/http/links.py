"""``GET /l/{token}``: the links of dunning emails.

A GET changes nothing (mail scanners fetch links before the customer does):
it checks the token, reads the case, and answers with a page or a redirect.

- bad or tampered token, a purpose this route does not serve, or no such case
  for that customer: 404; expired token: 410;
- ``update_payment_method`` (emails of an open case) when the case is over
  (recovered, canceled, downgraded, closed): 200 "already resolved", no redirect;
- otherwise: 303 to ``DUNNING_PAYMENT_UPDATE_URL`` with the customer id encoded and a
  short-lived ``dunning_token`` naming the purpose, or a placeholder page when no
  portal is set. ``manage_account`` (emails sent once the case is over: "go to
  your account", "subscribe again") always goes on to the portal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from dunning.engine.links import (
    MANAGE_ACCOUNT,
    UPDATE_PAYMENT_METHOD,
    LinkClaims,
    LinkError,
    case_id_of,
    derive_portal_secret,
    portal_redirect_url,
    portal_token,
)
from dunning.http.pages import render
from dunning.store.models import Case
from dunning.workflows.failed_payments.policy import TERMINAL, CaseStatus

if TYPE_CHECKING:
    from dunning.runtime import Runtime

log = logging.getLogger("dunning.engine.links")

#: On every answer: the token is in the URL, so keep it out of caches, search engines and Referer headers.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}

_RESOLVED = {
    CaseStatus.RECOVERED: "This payment has been settled. There is nothing more to do, and no card to update.",
    CaseStatus.CANCELED: "This subscription has ended, so there is no payment left to collect through this link.",
    CaseStatus.DOWNGRADED: "Your subscription was moved to another plan, and there is no payment left to collect through this link.",
    CaseStatus.CLOSED: "This subscription was canceled, so there is no payment left to collect through this link.",
}


def customer_link_endpoint(rt: Runtime) -> Callable[[Request], Response]:
    """The handler of ``GET /l/{token}`` (a plain function: Starlette runs it in its threadpool).

    Whatever the token holds, the answer is a page or a redirect, never an error 500.
    """

    def link(request: Request) -> Response:
        token = request.path_params.get("token", "")
        try:
            claims = rt.links.verify(
                token, purpose=(UPDATE_PAYMENT_METHOD, MANAGE_ACCOUNT), now=rt.clock.now()
            )
        except LinkError as exc:
            return _refused(str(exc), status=410 if exc.expired else 404)
        except SQLAlchemyError as exc:  # the simulated clock lives in the database
            return _unavailable(exc)
        case_id = case_id_of(claims.subject)
        if case_id is None:
            return _refused("this link is not valid", status=404)
        try:
            with rt.sessions() as session:
                row = session.execute(
                    select(Case.customer_id, Case.status).where(Case.id == case_id)
                ).one_or_none()
        except SQLAlchemyError as exc:
            return _unavailable(exc)
        # A case of another customer cannot come from a token we signed; refuse it all the same.
        if row is None or row.customer_id != claims.customer:
            return _refused("this link is not valid", status=404)
        if claims.purpose == UPDATE_PAYMENT_METHOD and row.status in TERMINAL:
            return _page("Already resolved", [_RESOLVED[CaseStatus(row.status)]])
        return _open(rt, claims)

    return link


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
    title, what = _PLACEHOLDERS[claims.purpose]
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
