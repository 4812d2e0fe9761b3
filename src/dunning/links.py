"""Signed, expiring customer links (update card, pick an option).

A token is ``base64url(json).base64url(hmac)``; it names its purpose and
subject and carries an expiry, so a leaked link is only good for one thing for
a limited time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta


class LinkError(Exception):
    """A link we refuse; ``expired`` tells the page what to say."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        self.expired = expired
        super().__init__(reason)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class LinkClaims:
    purpose: str
    subject: str
    expires_at: datetime


class LinkSigner:
    """Makes and checks customer links under ``public_url``."""

    def __init__(self, secret: str, public_url: str) -> None:
        self._key = hashlib.sha256(("dunning-links:" + secret).encode()).digest()
        self.public_url = public_url.rstrip("/")

    def token(self, purpose: str, subject: str, expires_at: datetime) -> str:
        body = _b64(
            json.dumps(
                {"p": purpose, "s": subject, "e": int(expires_at.timestamp())}, separators=(",", ":")
            ).encode()
        )
        sig = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:18])
        return f"{body}.{sig}"

    def url(self, purpose: str, subject: str, *, now: datetime, ttl: timedelta) -> str:
        """A full link, valid for ``ttl`` from ``now``."""
        return f"{self.public_url}/l/{self.token(purpose, subject, now + ttl)}"

    def verify(self, token: str, *, now: datetime) -> LinkClaims:
        """Check a token's signature and expiry."""
        from datetime import UTC

        try:
            body, sig = token.split(".", 1)
            expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:18])
            if not hmac.compare_digest(sig, expected):
                raise LinkError("this link is not valid")
            data = json.loads(_unb64(body))
            claims = LinkClaims(data["p"], data["s"], datetime.fromtimestamp(int(data["e"]), UTC))
        except LinkError:
            raise
        except (ValueError, KeyError, TypeError):
            raise LinkError("this link is not valid") from None
        if now >= claims.expires_at:
            raise LinkError("this link has expired", expired=True)
        return claims
