"""Customer email: rendering notices (Jinja2, gettext, Babel), building messages, sending them (SMTP or files)."""

from __future__ import annotations

import os
from pathlib import Path

from .breaker import CircuitBreaker
from .files import FileSender
from .message import KIND_HEADER, NOTICE_HEADER, build_message, message_id_for
from .render import RenderedEmail, Renderer, find_templates_dir, format_money
from .sending import AmbiguousSendError, PermanentSendError, Sender, SendError, TransientSendError
from .smtp import SmtpSender

__all__ = [
    "KIND_HEADER",
    "NOTICE_HEADER",
    "AmbiguousSendError",
    "FileSender",
    "PermanentSendError",
    "RenderedEmail",
    "Renderer",
    "SendError",
    "Sender",
    "SmtpSender",
    "TransientSendError",
    "build_message",
    "find_templates_dir",
    "format_money",
    "message_id_for",
    "sender_from_url",
]


def sender_from_url(smtp_url: str | None, outbox_dir: Path) -> Sender:
    """An ``SmtpSender`` when a URL is configured, else a ``FileSender`` writing to ``outbox_dir``."""
    if smtp_url and smtp_url.strip():
        breaker = CircuitBreaker(
            threshold=int(os.environ.get("DUNNING_SMTP_BREAKER_FAILURES", "5")),
            cooldown_s=float(os.environ.get("DUNNING_SMTP_BREAKER_COOLDOWN_S", "30")),
        )
        return SmtpSender(smtp_url.strip(), breaker=breaker)
    return FileSender(outbox_dir)
