"""Request signing shared by HTTP ingest (contract §1) and the billing API (contract §2).

The header is ``Dunning-Signature: t=<unix>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256 over ``f"{t}."`` followed by the exact body bytes. Binding the
timestamp into the MAC lets the receiver refuse replays older than the
tolerance without keeping a nonce store.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from dunning.errors import DunningError

SIGNATURE_HEADER = "Dunning-Signature"
DEFAULT_TOLERANCE_S = 300


class SignatureError(DunningError):
    """The signature header is missing, malformed, stale or does not match the body."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """Return the ``Dunning-Signature`` header value for ``body`` signed at ``timestamp`` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret, t, body)}"


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not value:
            raise SignatureError("malformed header")
        if key == "t":
            # At most 20 digits: int() of thousands of digits raises ValueError (a 500, not a 401).
            if timestamp is not None or not value.isascii() or not value.isdigit() or len(value) > 20:
                raise SignatureError("malformed header")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
        # Other schemes (a future v2, say) are ignored so senders can add them before we verify them.
    if timestamp is None or not signatures:
        raise SignatureError("malformed header")
    return timestamp, signatures


def verify(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> int:
    """Check ``header`` against ``body`` and return its timestamp, or raise :class:`SignatureError`.

    Several ``v1=`` entries are accepted (one per secret during a key rotation);
    any one matching is enough. Timestamps further than ``tolerance_s`` from
    ``now`` in either direction are refused.
    """
    if not header or not header.strip():
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp, signatures = _parse(header)
    expected = _digest(secret, timestamp, body).encode()
    # Compare against every entry, not just until the first match, so timing does not reveal which one matched.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise SignatureError("signature mismatch")
    current = time.time() if now is None else now
    if current - timestamp > tolerance_s:
        raise SignatureError("timestamp too old")
    if timestamp - current > tolerance_s:
        raise SignatureError("timestamp too far in the future")
    return timestamp


def verify_any(
    secrets: tuple[str, ...] | list[str],
    body: bytes,
    header: str | None,
    *,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> int:
    """:func:`verify` against each of several secrets (a rotation on the receiving side); any one is enough.

    Stripe's ``Stripe-Signature`` is this same scheme (``t=…,v1=…`` over ``f"{t}."``
    and the body), so Stripe webhooks are verified here too. A stale timestamp is
    reported as such only when a secret matched: an attacker learns nothing else.
    """
    if not secrets:
        raise SignatureError("no secret configured")
    last: SignatureError | None = None
    for secret in secrets:
        try:
            return verify(secret, body, header, now=now, tolerance_s=tolerance_s)
        except SignatureError as exc:
            if str(exc) != "signature mismatch":
                raise  # malformed or stale: the same for every secret
            last = exc
    assert last is not None
    raise last
