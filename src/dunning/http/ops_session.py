"""The dashboard's browser session and CSRF tokens, as pure functions (no HTTP, no clock of their own).

A browser cannot send ``Authorization: Bearer`` from a form, so the dashboard
(``/ops``) trades the ops token for a session once, at a login form:

- The session cookie holds ``<issued>.<nonce>.<mac>``, never the token. The MAC
  key is derived from ``DUNNING_OPS_TOKEN``, so changing the token ends every
  session; a session lasts :data:`SESSION_TTL_S` from login.
- The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
  site's page makes the browser send it) and scoped to ``/ops``.
- Every POST also carries a CSRF token: for an action, the per-session token
  :func:`csrf_for` derives from the session's nonce (a signed token: nothing to
  store server-side); for the login form itself, which has no session yet, a
  random value set in a cookie and repeated in the form (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SESSION_COOKIE = "dunning_ops_session"
LOGIN_CSRF_COOKIE = "dunning_ops_login"
#: A session ends this long after login (seconds).
SESSION_TTL_S = 12 * 3600
_VERSION = b"dunning-ops-session-v1"


def _key(token: str) -> bytes:
    return hmac.new(token.encode("utf-8"), _VERSION, hashlib.sha256).digest()


def _mac(token: str, message: str) -> str:
    return hmac.new(_key(token), message.encode("ascii"), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """A random value for a session or a login form (128 bits)."""
    return secrets.token_hex(16)


def issue(token: str, now: float, nonce: str | None = None) -> str:
    """A session cookie value issued at ``now`` (seconds since the epoch)."""
    body = f"{int(now)}.{nonce or new_nonce()}"
    return f"{body}.{_mac(token, 'session:' + body)}"


def session_nonce(token: str | None, cookie: str | None, now: float) -> str | None:
    """The nonce of a valid, unexpired session cookie, else None (also when no token is configured)."""
    if not token or not cookie or len(cookie) > 200:
        return None
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isalnum() or not parts[1].isascii():
        return None
    issued, nonce, mac = parts
    if not hmac.compare_digest(
        mac.encode("ascii", "replace"), _mac(token, f"session:{issued}.{nonce}").encode()
    ):
        return None
    age = now - int(issued)
    return nonce if 0 <= age < SESSION_TTL_S else None


def csrf_for(token: str, nonce: str) -> str:
    """The CSRF token of the session with ``nonce`` (forms repeat it in a hidden field)."""
    return _mac(token, "csrf:" + nonce)


def same(expected: str | None, sent: str | None) -> bool:
    """Constant-time equality of two non-empty strings (a missing value is never equal)."""
    if not expected or not sent:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), sent.encode("utf-8"))
