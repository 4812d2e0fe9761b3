"""Signed, expiring customer links (update card, pick an option), and the portal hand-off.

A link token is ``base64url(json).base64url(hmac)``. Its claims are separate
fields: the purpose (what the link may do), the customer, the subject it is
about (``case:<id>``, ``sub:<id>``, ``price:<migration>:<sub>:<offer>``) and an expiry. :meth:`LinkSigner.verify` takes the
purpose the page expects and refuses any other, so a leaked link is good for
one thing, for one customer, for a limited time.

When the customer is sent on to the billing portal, the redirect carries a
second, short-lived token (``dunning_token``) signed with the portal secret,
which the portal checks with :func:`verify_portal_token` (or the few lines of
Python in docs/configuration.md) before it shows the card form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from dunning.errors import DunningError

#: Link purposes. While a case is open its emails link to the page where the card is
#: updated; once it is over (recovered, subscription ended) they link to the account
#: (resubscribe, switch back), which must not be an update-card link that still "works".
UPDATE_PAYMENT_METHOD = "update_payment_method"
MANAGE_ACCOUNT = "manage_account"
#: The annual-switch offer's landing page: it shows the offer, and its button (a POST) accepts it.
ACCEPT_ANNUAL_OFFER = "accept_annual_offer"
#: A price migration's choice page (subject ``price:<migration>:<subscription>:<offer>``): it shows
#: the offer, and its button (a POST) records the choice.
PRICE_CHOICE = "price_choice"
#: A prompt's List-Unsubscribe link (subject ``outbox:<id>``, the email it came in): served at
#: ``/unsubscribe/<token>`` by :mod:`dunning.http.unsubscribe`, never at ``/l/``.
UNSUBSCRIBE = "unsubscribe"
PURPOSES: tuple[str, ...] = (
    UPDATE_PAYMENT_METHOD,
    MANAGE_ACCOUNT,
    ACCEPT_ANNUAL_OFFER,
    PRICE_CHOICE,
    UNSUBSCRIBE,
)

#: Longer tokens are refused before any decoding. A real one is a few hundred
#: characters; the worst case (a 255-character id of astral-plane characters,
#: each escaped as two ``\\uXXXX`` in the JSON) stays under 5,000.
MAX_TOKEN_CHARS = 8192

#: How long the portal token in the redirect is good for: the time to follow a redirect, with slack for clock skew.
PORTAL_TOKEN_TTL = timedelta(minutes=10)

#: The query parameter that carries the portal token.
PORTAL_TOKEN_PARAM = "dunning_token"

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,8000}\.[A-Za-z0-9_-]{1,100}", re.ASCII)
_PORTAL_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,8000}\.[0-9a-f]{64}", re.ASCII)
_CASE_SUBJECT = re.compile(r"case:([1-9][0-9]{0,9})", re.ASCII)
_SUBSCRIPTION_PREFIX = "sub:"
_PRICE_PREFIX = "price:"
#: Subscription ids are at most 255 characters (the column); a longer one can name no subscription.
_MAX_SUBSCRIPTION_ID = 255
#: Case ids are 32-bit integers on PostgreSQL; a larger one can name no case.
_MAX_CASE_ID = 2**31 - 1
#: Expiry times must be representable as a datetime (year 9999 at most).
_MAX_EPOCH = 253_402_300_799


class LinkError(DunningError):
    """A link we refuse; ``expired`` tells the page what to say."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        self.expired = expired
        super().__init__(reason)


class PortalTokenError(DunningError, ValueError):
    """A portal token that must not be honoured (bad signature, expired, other customer or purpose)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _canonical(claims: dict[str, object]) -> str:
    # ensure_ascii: any id (even one with lone surrogates) encodes, and the body is plain ASCII.
    return json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def case_subject(case_id: int) -> str:
    """The subject claim of a link about one dunning case."""
    return f"case:{case_id}"


def case_id_of(subject: str) -> int | None:
    """The case id a subject names, or None if it names no case."""
    found = _CASE_SUBJECT.fullmatch(subject)
    if found is None or int(found.group(1)) > _MAX_CASE_ID:
        return None
    return int(found.group(1))


def subscription_subject(subscription_id: str) -> str:
    """The subject claim of a link about one subscription (lifecycle emails)."""
    return f"{_SUBSCRIPTION_PREFIX}{subscription_id}"


def subscription_id_of(subject: str) -> str | None:
    """The subscription id a subject names, or None if it names no subscription.

    Everything after ``sub:`` is the id (ids may themselves contain colons).
    """
    if not subject.startswith(_SUBSCRIPTION_PREFIX):
        return None
    found = subject[len(_SUBSCRIPTION_PREFIX) :]
    return found if 0 < len(found) <= _MAX_SUBSCRIPTION_ID else None


def price_subject(migration_id: str, subscription_id: str, offer: str) -> str:
    """The subject claim of a link about one offer of a price migration to one subscription."""
    return f"{_PRICE_PREFIX}{migration_id}:{subscription_id}:{offer}"


def price_parts_of(subject: str) -> tuple[str, str, str] | None:
    """``(migration id, subscription id, offer)`` a price subject names, or None if it names none.

    Migration ids hold no colon and offers are single words, so the subscription id (which may
    contain colons) is everything between the migration id and the last colon.
    """
    if not subject.startswith(_PRICE_PREFIX):
        return None
    rest, colon, offer = subject[len(_PRICE_PREFIX) :].rpartition(":")
    migration_id, colon2, subscription_id = rest.partition(":")
    if (
        not (colon and colon2 and migration_id and offer)
        or not 0 < len(subscription_id) <= _MAX_SUBSCRIPTION_ID
    ):
        return None
    return migration_id, subscription_id, offer


def outbox_subject(outbox_id: int) -> str:
    """The subject claim of a link about one email (its outbox row): the unsubscribe link."""
    return f"outbox:{outbox_id}"


def outbox_id_of(subject: str) -> int | None:
    """The outbox id a subject names, or None if it names no email."""
    found = re.fullmatch(r"outbox:([1-9][0-9]{0,9})", subject, re.ASCII)
    if found is None or int(found.group(1)) > _MAX_CASE_ID:
        return None
    return int(found.group(1))


def subject_kind(subject: str) -> str:
    """What a subject is about: the part before its first colon (``case``, ``sub``), or ``""``.

    Workflows register their link pages per purpose and subject kind
    (:attr:`dunning.engine.registry.Workflow.links`).
    """
    kind, colon, _ = subject.partition(":")
    return kind if colon else ""


@dataclass(frozen=True)
class LinkClaims:
    """What a verified link is about. ``legacy`` marks a token made before claims were separate."""

    purpose: str
    customer: str
    subject: str
    expires_at: datetime
    legacy: bool = False


_INVALID = "this link is not valid"


class LinkSigner:
    """Makes and checks customer links under ``public_url``."""

    def __init__(self, secret: str, public_url: str) -> None:
        self._key = hashlib.sha256(("dunning-links:" + secret).encode()).digest()
        self.public_url = public_url.rstrip("/")

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:18])

    def token(self, *, purpose: str, customer: str, subject: str, expires_at: datetime) -> str:
        """A token for ``purpose`` on ``subject`` of ``customer``, good until ``expires_at``."""
        claims = {"v": 2, "p": purpose, "c": customer, "s": subject, "e": int(expires_at.timestamp())}
        body = _b64(_canonical(claims).encode("ascii"))
        return f"{body}.{self._sign(body)}"

    def url(self, *, purpose: str, customer: str, subject: str, now: datetime, ttl: timedelta) -> str:
        """A full link, valid for ``ttl`` from ``now``."""
        token = self.token(purpose=purpose, customer=customer, subject=subject, expires_at=now + ttl)
        return f"{self.public_url}/l/{token}"

    def form_code(self, token: str) -> str:
        """The code a landing page puts in its confirm form, and its POST must send back.

        Derived from the token, so only someone who opened the page (or holds the
        secret) can send it: a bare POST to the link, as some prefetchers and
        scanners make, acts on nothing.
        """
        return self._sign("form:" + token)

    def verify(self, token: str, *, purpose: str | tuple[str, ...], now: datetime) -> LinkClaims:
        """Check a token's signature, purpose and expiry; :class:`LinkError` for anything else.

        ``purpose``: the purpose the page expects (or the few it serves); a token made
        for any other is refused. Never raises anything but :class:`LinkError`,
        whatever ``token`` holds.
        """
        claims = self._open(token)
        if claims.purpose not in ((purpose,) if isinstance(purpose, str) else purpose):
            raise LinkError(_INVALID)
        if now >= claims.expires_at:
            raise LinkError("this link has expired", expired=True)
        return claims

    def _open(self, token: str) -> LinkClaims:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token):
            raise LinkError(_INVALID)
        body, sig = token.split(".")
        if not hmac.compare_digest(sig.encode(), self._sign(body).encode()):
            raise LinkError(_INVALID)
        try:
            data = json.loads(_unb64(body))
        except (ValueError, RecursionError):  # bad base64, bad UTF-8, bad JSON, absurd nesting
            raise LinkError(_INVALID) from None
        return _claims(data)


def _claims(data: object) -> LinkClaims:
    """Typed claims from a signed body; anything unexpected is an invalid link, never a crash."""
    if not isinstance(data, dict):
        raise LinkError(_INVALID)
    purpose, subject, expiry = data.get("p"), data.get("s"), data.get("e")
    if not isinstance(purpose, str) or not isinstance(subject, str):
        raise LinkError(_INVALID)
    if type(expiry) is not int or not 0 < expiry <= _MAX_EPOCH:
        raise LinkError(_INVALID)
    expires_at = datetime.fromtimestamp(expiry, UTC)
    if "c" in data:
        customer = data["c"]
        if data.get("v") != 2 or not isinstance(customer, str) or not customer:
            raise LinkError(_INVALID)
        return LinkClaims(purpose, customer, subject, expires_at)
    # Tokens made before 2026-12 say ``"s": "<customer id>:<case id>"``. They are in emails already
    # sent, for at most link_ttl_days more. The case id is an integer, so the customer is everything
    # before the LAST colon (customer ids may contain colons); the route then checks both against
    # the case row. This branch can go once every such token has expired.
    customer, colon, case = subject.rpartition(":")
    if not colon or not customer or case_id_of(f"case:{case}") is None:
        raise LinkError(_INVALID)
    return LinkClaims(purpose, customer, f"case:{case}", expires_at, legacy=True)


# ---------------------------------------------------------------------------
# The portal hand-off


@dataclass(frozen=True)
class PortalClaims:
    """What a verified portal token vouches for. ``expires_at`` is in Unix seconds."""

    customer: str
    purpose: str
    subject: str
    expires_at: int
    nonce: str


def derive_portal_secret(link_secret: str) -> str:
    """The portal secret used when ``DUNNING_PORTAL_SECRET`` is not set.

    One-way: whoever holds it (the portal) cannot sign customer links with it.
    """
    return hmac.new(link_secret.encode(), b"dunning-portal-secret", hashlib.sha256).hexdigest()


def portal_token(
    secret: str,
    *,
    customer: str,
    purpose: str,
    subject: str,
    now: float,
    ttl: timedelta = PORTAL_TOKEN_TTL,
) -> str:
    """``base64url(canonical JSON claims).hex(HMAC-SHA256(secret, first part))``.

    ``now`` is wall-clock Unix time: the portal checks the expiry against its own clock.
    """
    claims = {
        "v": 1,
        "c": customer,
        "p": purpose,
        "s": subject,
        "e": int(now + ttl.total_seconds()),
        "n": secrets.token_urlsafe(12),  # lets a portal that wants single use remember what it has seen
    }
    body = _b64(_canonical(claims).encode("ascii"))
    return f"{body}.{hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()}"


def verify_portal_token(
    token: str,
    secret: str,
    *,
    customer: str | None = None,
    purpose: str | tuple[str, ...] = UPDATE_PAYMENT_METHOD,
    now: float | None = None,
) -> PortalClaims:
    """Check a ``dunning_token`` as the billing portal should, before showing a page.

    ``customer``: the customer the portal is about to act for (e.g. the ``customer``
    parameter of the URL); refused unless the token names the same one.
    ``purpose``: what the portal is about to show (``update_payment_method``: the
    card form; ``manage_account``: the account page); refused unless the token was
    made for it. ``now``: Unix time, the system clock by default. Raises
    :class:`PortalTokenError`.
    """
    if not isinstance(token, str) or not _PORTAL_TOKEN.fullmatch(token):
        raise PortalTokenError("malformed token")
    body, sig = token.split(".")
    expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sig.encode(), expected.encode()):
        raise PortalTokenError("bad signature")
    try:
        data = json.loads(_unb64(body))
    except (ValueError, RecursionError):
        raise PortalTokenError("malformed token") from None
    if not isinstance(data, dict) or data.get("v") != 1:
        raise PortalTokenError("malformed token")
    claims = PortalClaims(data.get("c"), data.get("p"), data.get("s"), data.get("e"), data.get("n"))  # type: ignore[arg-type]
    if not all(isinstance(v, str) for v in (claims.customer, claims.purpose, claims.subject, claims.nonce)):
        raise PortalTokenError("malformed token")
    if type(claims.expires_at) is not int:
        raise PortalTokenError("malformed token")
    if (time.time() if now is None else now) >= claims.expires_at:
        raise PortalTokenError("expired")
    if claims.purpose not in ((purpose,) if isinstance(purpose, str) else purpose):
        raise PortalTokenError("made for another purpose")
    if customer is not None and claims.customer != customer:
        raise PortalTokenError("made for another customer")
    return claims


def portal_redirect_url(template: str, *, customer: str, token: str) -> str:
    """The billing portal's URL for ``customer``, with the portal token added.

    ``{customer_id}`` in the template is replaced by the id, percent-encoded
    (``org:123`` becomes ``org%3A123``, ``&`` and ``=`` cannot start a new
    parameter); a template without it gets a ``customer`` query parameter.
    Either way a ``dunning_token`` parameter is appended. Nothing else in the
    template is interpreted (it is not a ``str.format`` string).
    """
    params: list[tuple[str, str]] = []
    if "{customer_id}" in template:
        url = template.replace("{customer_id}", quote(customer, safe="", errors="backslashreplace"))
    else:
        url = template
        params.append(("customer", customer))
    params.append((PORTAL_TOKEN_PARAM, token))
    parts = urlsplit(url)
    extra = urlencode(params, quote_via=quote, errors="backslashreplace")
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))
