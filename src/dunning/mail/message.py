"""Customer emails as MIME messages: the headers the product sets, the Message-ID, the build.

A message is built from a rendered notice (:mod:`.render`) and handed to a
sender (:mod:`.smtp`, :mod:`.files`).
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import re
from datetime import UTC, datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage

from .render import RenderedEmail


class _CachingHeaderRegistry(HeaderRegistry):
    """The standard header registry, keeping the class it makes for each header name.

    ``HeaderRegistry.__getitem__`` builds a new class with ``type()`` for every
    header of every message; that was half the cost of building a notice. The
    classes, and so the headers and bytes, are exactly the standard ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            # Two threads may both build one the first time: the same class, either is fine.
            cls = self._classes[key] = super().__getitem__(name)
        return cls


#: ``email.policy.default`` with the caching registry; :data:`SMTP_POLICY` for the wire (CRLF).
POLICY = email.policy.default.clone(header_factory=_CachingHeaderRegistry())
SMTP_POLICY = POLICY.clone(linesep="\r\n")

#: Headers the outbox runner sets: the notice's idempotency key, and its kind.
NOTICE_HEADER = "X-Dunning-Notice"
KIND_HEADER = "X-Dunning-Kind"


def message_id_for(key: str, domain: str = "dunning.invalid") -> str:
    """A stable RFC 5322 Message-ID for a notice's key (``kind:case:step``, e.g. ``payment_failed:42:2``).

    Every email of a notice carries it: the outbox stores it when the notice is
    decided, so each attempt, and a re-send after an unknown delivery, goes out
    with the same Message-ID. Keeps a readable prefix for people grepping logs
    (``<payment_failed.42.2.5f1c0e9ab2d4@dunning.invalid>``) and adds a hash so that
    keys differing only in characters not allowed in a Message-ID stay distinct.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", ".", key).strip(".")[:80] or "notice"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    return f"<{readable}.{digest}@{domain}>"


def build_message(
    rendered: RenderedEmail,
    *,
    to: str,
    sender: str,
    message_id: str,
    headers: dict[str, str] | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative message (plain text first, then HTML) ready for any ``Sender``.

    ``date`` defaults to now; the demo passes its simulated clock so that the
    outbox reads like the timeline it simulates.
    """
    # The default policy (LF line ends) for callers; smtplib and FileSender write CRLF themselves.
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = rendered.subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = email.utils.format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    msg["Message-ID"] = message_id if message_id.startswith("<") else f"<{message_id}>"
    # RFC 3834: tells auto-responders (vacation replies) not to answer a machine.
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        del msg[name]
        msg[name] = value
    msg.set_content(rendered.text, subtype="plain", charset="utf-8")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return msg


def message_id_of(msg: EmailMessage) -> str:
    """The message's Message-ID header, for errors and logs (never its address or body)."""
    return str(msg.get("Message-ID", "<no-message-id>"))
