"""Customer emails as MIME messages: the headers the product sets, the Message-ID, the build.

A message is built from a rendered notice (:mod:`.render`) and handed to a
sender (:mod:`.smtp`, :mod:`.files`).
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
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


#: Headers the outbox runner sets: the notice's idempotency key, and its kind.
NOTICE_HEADER = "X-Dunning-Notice"
KIND_HEADER = "X-Dunning-Kind"
#: RFC 2369 / RFC 8058: how a prompt's recipient unsubscribes with one click.
LIST_UNSUBSCRIBE = "List-Unsubscribe"
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe-Post"
ONE_CLICK = "List-Unsubscribe=One-Click"

#: Longest display name put in ``To:``; the rest of a longer name is cut (it is a courtesy, not data).
MAX_NAME_CHARS = 100


class _UrlListHeader(UnstructuredHeader):
    """``List-Unsubscribe``: ``<url>, <url>``, never RFC 2047-encoded.

    The default policy would encode a line longer than 78 characters (a signed link always
    is) as ``=?utf-8?q?...?=``, which no mail client reads as a URL. Our URLs are ASCII
    without spaces; this folds only after the commas between them (RFC 2369 section 2),
    within the 998-character line limit of RFC 5322.
    """

    @classmethod
    def parse(cls, value: str, kwds: dict[str, object]) -> None:
        if not value.isascii() or any(ch in value for ch in "\r\n") or len(value) > 1900:
            raise ValueError(f"{LIST_UNSUBSCRIBE}: expected <url>, <url> in ASCII on one line")
        super().parse(value, kwds)

    def fold(self, *, policy: email.policy.Policy) -> str:  # type: ignore[override]
        parts = [part.strip() for part in str(self).split(",")]
        return f"{self.name}: " + ("," + policy.linesep + " ").join(parts) + policy.linesep


_HEADERS = _CachingHeaderRegistry()
_HEADERS.map_to_type(LIST_UNSUBSCRIBE.lower(), _UrlListHeader)
#: ``email.policy.default`` (LF line ends, for callers) with our own header registry: a copy,
#: since the stdlib's default registry is shared by every message in the process, that caches
#: its header classes and knows ``List-Unsubscribe``. :data:`SMTP_POLICY` for the wire (CRLF).
POLICY = email.policy.default.clone(header_factory=_HEADERS)
SMTP_POLICY = POLICY.clone(linesep="\r\n")


def safe_display_name(name: str | None) -> str:
    """A customer's name fit for a ``To:`` display name: one line, printable, at most 100 characters.

    Line breaks, control and bidi-override characters become spaces (they could forge a
    header line or reorder what the reader sees); runs of spaces collapse. The header
    machinery then quotes or RFC 2047-encodes what remains, so nothing in it can end the
    header or add an address.
    """
    if not name:
        return ""
    kept = "".join(" " if unicodedata.category(ch)[0] in ("C", "Z") else ch for ch in name)
    # "=?" starts an RFC 2047 encoded word, which lenient readers decode even inside quotes: a
    # name could then display as something it does not say. A space keeps it literal.
    kept = kept.replace("=?", "= ?")
    return " ".join(kept.split())[:MAX_NAME_CHARS].strip()


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
    to_name: str | None = None,
) -> EmailMessage:
    """A multipart/alternative message (plain text first, then HTML) ready for any ``Sender``.

    ``date`` defaults to now; the demo passes its simulated clock so that the
    outbox reads like the timeline it simulates. ``to_name``: the recipient's name, shown
    as the display name of ``To:`` after :func:`safe_display_name`. Any header value with a
    line break raises ``ValueError`` (the policy refuses it): a header is never injected.
    """
    # The default policy (LF line ends) for callers; smtplib and FileSender write CRLF themselves.
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = rendered.subject
    msg["From"] = sender
    name = safe_display_name(to_name)
    msg["To"] = Address(display_name=name, addr_spec=to) if name else to
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
