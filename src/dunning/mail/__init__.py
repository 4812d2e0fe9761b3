"""Customer email: rendering notices (Jinja2, gettext, Babel) and sending them (SMTP or files)."""

from .context import DECLINE_CLASSES, END_ACTIONS, KINDS, NoticeContext
from .reasons import describe_reason
from .render import RenderedEmail, Renderer, find_templates_dir, format_money
from .senders import (
    KIND_HEADER,
    NOTICE_HEADER,
    FileSender,
    PermanentSendError,
    Sender,
    SendError,
    SmtpSender,
    TransientSendError,
    build_message,
    message_id_for,
    sender_from_url,
)

__all__ = [
    "DECLINE_CLASSES",
    "END_ACTIONS",
    "KINDS",
    "KIND_HEADER",
    "NOTICE_HEADER",
    "FileSender",
    "NoticeContext",
    "PermanentSendError",
    "RenderedEmail",
    "Renderer",
    "SendError",
    "Sender",
    "SmtpSender",
    "TransientSendError",
    "build_message",
    "describe_reason",
    "find_templates_dir",
    "format_money",
    "message_id_for",
    "sender_from_url",
]
