"""Who may read the ops page (``/``) and ``/metrics`` of ``dunning serve``: the rule, as pure functions.

Both show the business (queue depths, cases by status, revenue recovered and at
risk), so neither is public:

- With ``DUNNING_OPS_TOKEN`` set, every request must carry
  ``Authorization: Bearer <token>``, wherever it comes from (compared in
  constant time).
- Without it, only clients on the loopback itself (``127.0.0.1``, ``::1``) are
  served, so the demo and a laptop work with nothing to configure. Any other
  address, including other ``127.x`` addresses and whatever a reverse proxy
  reports in ``X-Forwarded-For`` (uvicorn trusts that header from the loopback
  only), gets 401.

A reverse proxy on the same host that does not set ``X-Forwarded-For`` makes
every client look local: set the token there (docs/operations.md).
"""

from __future__ import annotations

import hmac
import ipaddress
from enum import Enum

#: Realm named in ``WWW-Authenticate`` challenges.
REALM = "dunning-ops"


class Access(Enum):
    """The outcome of :func:`ops_access`."""

    ALLOWED = "allowed"
    #: No usable credentials: a token is required, or the client is not on the loopback.
    MISSING = "missing"
    #: A bearer token was sent, but not the configured one.
    INVALID = "invalid"


def is_loopback_client(host: str | None) -> bool:
    """Whether ``host`` (the client address as the server sees it) is ``127.0.0.1`` or ``::1``.

    Deliberately narrow: ``127.0.0.2`` is loopback too, but nothing legitimate
    connects from it, and names ("localhost", "testclient") are not addresses.
    """
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def ops_access(*, token: str | None, client_host: str | None, authorization: str | None) -> Access:
    """May this request read the ops page and ``/metrics``? See the module docstring for the rule."""
    sent = bearer_token(authorization)
    if token:
        if sent is None:
            return Access.MISSING
        # Constant time: how many leading characters match must not show in the response time.
        same = hmac.compare_digest(sent.encode("utf-8"), token.encode("utf-8"))
        return Access.ALLOWED if same else Access.INVALID
    return Access.ALLOWED if is_loopback_client(client_host) else Access.MISSING


def challenge(access: Access) -> str:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750)."""
    if access is Access.INVALID:
        return f'Bearer realm="{REALM}", error="invalid_token"'
    return f'Bearer realm="{REALM}"'
