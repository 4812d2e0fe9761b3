"""A notice's wire bytes without building an ``EmailMessage``: the same bytes, a fraction of the CPU.

:func:`~.message.build_message` followed by ``as_bytes(policy=SMTP_POLICY)`` was
about a third of a mail worker's CPU: the ``email`` package parses every header
value it is given into a token tree (to refold it when the message is
written), builds the MIME tree, and walks it again to write it. Yet a notice
is always the same shape: a few headers, then ``multipart/alternative`` with a
plain text and an HTML part. :func:`wire_message` writes that shape directly.

Exactness over speed, header by header: a value is written as ``Name: value``
only when the standard policy provably writes it unchanged (printable ASCII
words with single spaces, no ``=?`` that it would decode, short enough not to
fold, for the header kinds listed below); the values that repeat (``From``,
``Reply-To``, a subject: the same for every notice of one kind, language and
amount) are folded by the standard policy once and remembered; every other value (a non-ASCII subject or name, a long one, a
``List-Unsubscribe``) is folded by the standard policy's own header classes,
with its checks (a line break raises ``ValueError``, as in ``build_message``).
The bodies are encoded by the standard library's own choice of transfer
encoding (``email.contentmanager``), and the boundary is drawn and checked as
the standard generator does it. ``tests/unit/test_mail_wire.py`` checks that the
bytes are those of ``build_message`` for hostile and ordinary inputs alike.
Anything else (another header that could change the envelope, like ``Cc``):
None, and the caller builds the message the usual way.
"""

from __future__ import annotations

import email.contentmanager
import email.utils
import random
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address

from .message import (
    KIND_HEADER,
    LIST_UNSUBSCRIBE,
    LIST_UNSUBSCRIBE_POST,
    NOTICE_HEADER,
    POLICY,
    SMTP_POLICY,
    safe_display_name,
)
from .render import RenderedEmail

_CRLF = "\r\n"
#: Printable ASCII words separated by single spaces: what an unstructured header writes as is.
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
#: An address the address parser writes back unchanged (dot-atoms, no quoting, no comments).
_ADDRESS = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")
#: A display name of plain words (no specials to quote, nothing to encode).
_NAME = re.compile(r"[A-Za-z0-9]+(?: [A-Za-z0-9]+)*\Z")
#: A Message-ID the parser writes back unchanged.
_MESSAGE_ID = re.compile(r"<[A-Za-z0-9._-]+@[A-Za-z0-9.-]+>\Z")
#: Unstructured headers (the standard registry's default class) that the product sets.
_UNSTRUCTURED = frozenset({"subject", "auto-submitted", NOTICE_HEADER.lower(), KIND_HEADER.lower()})
#: The extra headers this module knows; any other makes :func:`wire_message` decline.
_EXTRA = frozenset({NOTICE_HEADER, KIND_HEADER, "Reply-To", LIST_UNSUBSCRIBE, LIST_UNSUBSCRIBE_POST})
#: Header values that are the same in every message of a process (from settings, constants).
_CONSTANT = frozenset({"from", "reply-to", "auto-submitted", LIST_UNSUBSCRIBE_POST.lower()})
_MAX_LINE = 78  # SMTP_POLICY.max_line_length
# The standard generator's boundary: 15 '=', sys.maxsize's width of digits, '=='.
_WIDTH = len(repr(sys.maxsize - 1))


@dataclass(frozen=True)
class WireMessage:
    """What goes on the wire for one message: the envelope and the bytes (CRLF, not dot-stuffed)."""

    sender: str
    recipients: list[str]
    data: bytes
    message_id: str


_folded: dict[tuple[str, str], str] = {}
_FOLDED_MAX = 2048


def _stdlib_fold(name: str, value: object) -> str:
    """The header line as ``EmailMessage`` with :data:`~.message.POLICY` writes it for ``SMTP_POLICY``."""
    _, header = POLICY.header_store_parse(name, value)  # raises ValueError on a line break
    return header.fold(policy=SMTP_POLICY)  # type: ignore[attr-defined,no-any-return]


def _line(name: str, value: str) -> str:
    key = name.lower()
    if (
        key in _UNSTRUCTURED
        and len(name) + 2 + len(value) <= _MAX_LINE
        and "=?" not in value
        and _PLAIN.match(value)
    ):
        return f"{name}: {value}{_CRLF}"
    if key not in _CONSTANT and key != "subject":
        return _stdlib_fold(name, value)
    # Folding is a function of the name and the value: remember the lines of values that repeat
    # (the sender; a subject is the same for every notice of a kind, language and amount).
    line = _folded.get((name, value))
    if line is None:
        if len(_folded) >= _FOLDED_MAX:  # never grow without bound
            _folded.clear()
        line = _folded[(name, value)] = _stdlib_fold(name, value)
    return line


def _envelope_sender(sender: str) -> str:
    """The envelope sender of a ``From`` value, as :mod:`.smtp` derives it from the message."""
    key = ("envelope", sender)
    found = _folded.get(key)
    if found is None:
        _, header = POLICY.header_store_parse("From", sender)
        found = _folded[key] = email.utils.parseaddr(str(header))[1]
    return found


def _to(to: str, name: str) -> tuple[str, list[str]]:
    """The ``To:`` line and the envelope recipients."""
    if _ADDRESS.match(to) and (not name or _NAME.match(name)):
        text = f"{name} <{to}>" if name else to
        if 4 + len(text) <= _MAX_LINE:
            return f"To: {text}{_CRLF}", [to]
    _, header = POLICY.header_store_parse("To", Address(display_name=name, addr_spec=to) if name else to)
    return header.fold(policy=SMTP_POLICY), [a for _, a in email.utils.getaddresses([str(header)])]  # type: ignore[attr-defined]


def _part(text: str, subtype: str, *, mime_version: bool) -> bytes:
    """One text part as ``set_content(text, subtype=..., charset="utf-8")`` writes it."""
    cte, payload = email.contentmanager._encode_text(text, "utf-8", None, POLICY)  # type: ignore[attr-defined]
    head = f'Content-Type: text/{subtype}; charset="utf-8"{_CRLF}Content-Transfer-Encoding: {cte}{_CRLF}'
    if mime_version:
        head += f"MIME-Version: 1.0{_CRLF}"
    body = re.sub(r"\r\n|\r|\n", _CRLF, payload)
    return (head + _CRLF + body).encode("ascii", "surrogateescape")


def _boundary(text: bytes) -> str:
    """A boundary that no line of ``text`` is, drawn as ``email.generator.Generator._make_boundary`` does."""
    boundary = "=" * 15 + f"{random.randrange(sys.maxsize):0{_WIDTH}d}" + "=="
    candidate, counter = boundary, 0
    # The generator's own test, a pattern compiled for every boundary; first the plain search that
    # rules it out (the boundary is a fresh 19-digit random number: it is never in the text).
    while b"--" + candidate.encode("ascii") in text and re.search(
        b"^--" + re.escape(candidate.encode("ascii")) + b"(--)?$", text, re.MULTILINE
    ):
        candidate = f"{boundary}.{counter}"
        counter += 1
    return candidate


def wire_message(
    rendered: RenderedEmail,
    *,
    to: str,
    sender: str,
    message_id: str,
    headers: dict[str, str] | None = None,
    date: datetime | None = None,
    to_name: str | None = None,
) -> WireMessage | None:
    """The bytes ``build_message(...)`` with these arguments writes for SMTP, and its envelope.

    None when an extra header is one this module does not know (build the message instead).
    """
    extra = headers or {}
    if not all(name in _EXTRA for name in extra):
        return None
    mid = message_id if message_id.startswith("<") else f"<{message_id}>"
    to_line, recipients = _to(to, safe_display_name(to_name))
    date_value = email.utils.format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    lines: list[tuple[str, str]] = [
        ("subject", _line("Subject", rendered.subject)),
        ("from", _line("From", sender)),
        ("to", to_line),
        ("date", f"Date: {date_value}{_CRLF}"),
        (
            "message-id",
            f"Message-ID: {mid}{_CRLF}"
            if len(mid) <= 60 and _MESSAGE_ID.match(mid)
            else _stdlib_fold("Message-ID", mid),
        ),
        ("auto-submitted", _line("Auto-Submitted", "auto-generated")),
    ]
    for name, value in extra.items():
        # As build_message: ``del msg[name]; msg[name] = value`` (a repeated name moves to the end).
        lines = [pair for pair in lines if pair[0] != name.lower()]
        lines.append((name.lower(), _line(name, value)))
    plain = _part(rendered.text, "plain", mime_version=False)
    html = _part(rendered.html, "html", mime_version=True)
    boundary = _boundary(b"\r\n".join((plain, html)))
    head = "".join(line for _, line in lines)
    head += (
        f'MIME-Version: 1.0{_CRLF}Content-Type: multipart/alternative;{_CRLF} boundary="{boundary}"{_CRLF}'
    )
    sep = f"--{boundary}".encode("ascii")
    data = b"".join(
        (
            head.encode("ascii", "surrogateescape"),
            b"\r\n",
            sep,
            b"\r\n",
            plain,
            b"\r\n",
            sep,
            b"\r\n",
            html,
            b"\r\n",
            sep,
            b"--\r\n",
        )
    )
    return WireMessage(_envelope_sender(sender), recipients, data, mid)
