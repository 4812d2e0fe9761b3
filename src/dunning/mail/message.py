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
from email.message import EmailMessage

from .render import RenderedEmail

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
    msg = EmailMessage(policy=email.policy.default)
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
