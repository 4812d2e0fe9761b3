"""The ops dashboard of ``dunning serve`` (``/ops``): queues, workers, dead letters, charts, a search.

Who sees what (docs/operations.md, "Dashboard"):

- Without ``DUNNING_OPS_TOKEN`` the page is read-only and served to loopback
  clients only (the rule of :mod:`dunning.http.auth`); there are no buttons.
- With it, a browser signs in once at the page's login form (the token is
  traded for an HttpOnly, SameSite=Strict session cookie, :mod:`dunning.http.ops_session`);
  a script may read the page with ``Authorization: Bearer`` as for ``/metrics``.
  Only a signed-in session can act (requeue, purge), and every POST must carry
  the session's CSRF token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dunning.http import ops_session
from dunning.http.auth import Access, ops_access
from dunning.http.pages import render

if TYPE_CHECKING:
    from dunning.runtime import Runtime

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: What a redirect after an action may ask the page to say (no free text travels in the URL).
DONE = {
    "requeued": "Dead letter {ref} sent back for another try.",
    "purged": "Dead letter {ref} purged.",
    "missing": "There is no dead letter {ref} (already requeued or purged?).",
    "refused": "Dead letter {ref} cannot be requeued: see `dunning dlq show {ref}`.",
    "failed": "Dead letter {ref}: the action failed (database or broker unavailable?); nothing changed, try again.",
    "signed_out": "Signed out.",
}
_REF_CHARS = set("0123456789")


def _valid_ref(ref: str) -> bool:
    return 2 <= len(ref) <= 20 and ref[0] in "mj" and set(ref[1:]) <= _REF_CHARS


def dashboard_routes(rt: Runtime, redis_url: Callable[[], str], send: Callable[..., None]) -> list[BaseRoute]:
    """The ``/ops`` routes; ``send(queue, actor, args, kwargs)`` re-sends a dead message (as ``dunning dlq requeue``)."""
    token = rt.settings.ops_token

    def session(request: Request) -> str | None:
        return ops_session.session_nonce(token, request.cookies.get(ops_session.SESSION_COOKIE), time.time())

    def may_read(request: Request) -> bool:
        if session(request) is not None:
            return True
        access = ops_access(
            token=token,
            client_host=request.client.host if request.client else None,
            authorization=request.headers.get("authorization"),
        )
        return access is Access.ALLOWED

    def login_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
        nonce = request.cookies.get(ops_session.LOGIN_CSRF_COOKIE) or ops_session.new_nonce()
        page = render("ops_login.html", title="Dunning: sign in", noindex=True, csrf=nonce, error=error)
        response = HTMLResponse(page, status_code=status)
        _cookie(response, request, ops_session.LOGIN_CSRF_COOKIE, nonce, max_age=3600)
        return response

    def dashboard(request: Request) -> Response:
        from dunning.http.dashboard_data import overview, search

        if not may_read(request):
            if token:
                return login_page(request, status=401)
            return _plain(
                401, "unauthorized: served to loopback clients only while DUNNING_OPS_TOKEN is not set"
            )
        nonce = session(request)
        query = request.query_params.get("q", "").strip()
        done = DONE.get(request.query_params.get("done", ""))
        ref = request.query_params.get("ref", "")
        page = render(
            "dashboard.html",
            title="Dunning: dashboard",
            noindex=True,
            data=overview(rt, redis_url()),
            found=search(rt, query) if query else None,
            query=query,
            notice=done.format(ref=ref if _valid_ref(ref) else "?") if done else None,
            # Buttons only for a signed-in operator; a bearer or loopback reader gets a read-only page.
            csrf=ops_session.csrf_for(token, nonce) if token and nonce else None,
            token_configured=bool(token),
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def login(request: Request) -> Response:
        if not token:
            return _plain(404, "no login: DUNNING_OPS_TOKEN is not set (the dashboard is read-only)")
        form = await _form(request)
        if not ops_session.same(request.cookies.get(ops_session.LOGIN_CSRF_COOKIE), form.get("csrf")):
            return _plain(403, "forbidden: the form's CSRF token does not match; reload the page")
        if not ops_session.same(token, form.get("token")):
            return login_page(request, error="That is not the ops token.", status=401)
        response = RedirectResponse("/ops", status_code=303)
        _cookie(
            response,
            request,
            ops_session.SESSION_COOKIE,
            ops_session.issue(token, time.time()),
            max_age=ops_session.SESSION_TTL_S,
        )
        response.delete_cookie(ops_session.LOGIN_CSRF_COOKIE, path="/ops")
        return response

    async def operator(request: Request) -> Response | None:
        """None if this POST comes from a signed-in session with its CSRF token, else the refusal."""
        nonce = session(request)
        if not token or nonce is None:
            return _plain(401, "unauthorized: sign in at /ops with DUNNING_OPS_TOKEN to act")
        form = await _form(request)
        sent = form.get("csrf") or request.headers.get("x-csrf-token")
        if not ops_session.same(ops_session.csrf_for(token, nonce), sent):
            return _plain(403, "forbidden: missing or wrong CSRF token; reload the page")
        return None

    async def logout(request: Request) -> Response:
        if (refused := await operator(request)) is not None:
            return refused
        response = RedirectResponse("/ops?done=signed_out", status_code=303)
        response.delete_cookie(ops_session.SESSION_COOKIE, path="/ops")
        return response

    async def act(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from dunning.store.dead_letters import CannotRequeue, purge, requeue

        if (refused := await operator(request)) is not None:
            return refused
        ref, action = request.path_params["ref"], request.path_params["action"]
        if not _valid_ref(ref) or action not in ("requeue", "purge"):
            return _plain(404, "not found")
        try:
            if action == "requeue":
                await run_in_threadpool(requeue, rt, ref, send)
                done = "requeued"
            else:
                done = "purged" if await run_in_threadpool(purge, rt, ref) else "missing"
        except KeyError:
            done = "missing"
        except CannotRequeue:
            done = "refused"
        except Exception:
            # Redis or the database down: the transaction rolled back, the dead letter is still there.
            log.warning("dashboard: %s of %s failed", action, ref, exc_info=True)
            done = "failed"
        return RedirectResponse(f"/ops?done={done}&ref={ref}#dead-letters", status_code=303)

    return [
        Route("/ops", dashboard, methods=["GET"]),
        Route("/ops/login", login, methods=["POST"]),
        Route("/ops/logout", logout, methods=["POST"]),
        Route("/ops/dead-letters/{ref}/{action}", act, methods=["POST"]),
        Mount("/ops/static", app=StaticFiles(directory=STATIC), name="ops-static"),
    ]


#: A form here is a token and a CSRF token: anything longer is not one of ours.
MAX_FORM_BYTES = 4096


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each); empty when the body is too long or not a form."""
    from urllib.parse import parse_qsl

    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields: dict[str, str] = {}
    try:
        pairs = parse_qsl(body.decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:
        return {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def _plain(status: int, text: str) -> Response:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(text + "\n", status_code=status)


def _cookie(response: Response, request: Request, name: str, value: str, **extra: Any) -> None:
    # Secure whenever the page came over HTTPS (behind a TLS proxy uvicorn reports the scheme it was told).
    response.set_cookie(
        name,
        value,
        path="/ops",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        **extra,
    )
