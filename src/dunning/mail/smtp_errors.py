"""What an SMTP failure means: retry, give up, or fix the configuration; and whose fault a refusal is.

Pure functions of :mod:`smtplib`'s exceptions, used by :class:`dunning.mail.smtp.SmtpSender`.
Nothing here keeps the server's free text (it often quotes the recipient's address): only
reply codes and RFC 3463 enhanced status codes leave this module.
"""

from __future__ import annotations

import re
import smtplib
import socket


def classify(exc: BaseException) -> str | None:
    """``"retry"``, ``"permanent"`` or ``"config"`` for a delivery failure; None for anything else (a bug).

    "config" (bad credentials, a missing extension) is not about this message:
    retrying now will not help, but neither should the notice be given up, so
    it surfaces as a ``TransientSendError`` without in-loop retries.
    """
    # Our own sender refused (MAIL FROM) says nothing of the recipient, and every email would
    # meet it: the configuration's problem, like bad credentials.
    if isinstance(
        exc, (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError, smtplib.SMTPSenderRefused)
    ):
        return "config"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return "permanent" if codes and all(500 <= code < 600 for code in codes) else "retry"
    if isinstance(exc, smtplib.SMTPResponseException):
        return "permanent" if 500 <= exc.smtp_code < 600 else "retry"
    # Disconnects, refused connections, resets, DNS failures, timeouts (socket.timeout is an
    # OSError) and TLS errors: the network or the server had a bad moment.
    if isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError, socket.timeout, OSError)):
        return "retry"
    if isinstance(exc, smtplib.SMTPException):
        return "config"  # e.g. "no suitable authentication method"
    return None


#: An RFC 3463 enhanced status code at the start of a reply's text ("5.1.1 <bob@…> no such user").
_ENHANCED = re.compile(rb"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_status(reply: bytes | str | None) -> str | None:
    """The enhanced status code a server put first in its reply (``"5.7.1"``), or None."""
    if reply is None:
        return None
    data = reply.encode("utf-8", "replace") if isinstance(reply, str) else reply
    found = _ENHANCED.match(data)
    return b".".join(found.groups()).decode("ascii") if found else None


def about_address(exc: BaseException) -> bool:
    """Whether a permanent refusal is of the recipient's mailbox rather than of this message.

    A 5xx to ``RCPT TO`` names the mailbox. After it (the ``DATA`` command or the final dot)
    the enhanced status tells: ``5.1.x`` (addressing) and ``5.2.1`` (mailbox disabled) are
    about the address; ``5.7.x`` (policy, spam), ``5.6.x`` (content), ``5.3.4`` (size) are
    about the message. Without one, RFC 5321's codes: 550, 551 and 553 name the mailbox,
    552 (storage) and 554 (transaction failed, what spam filters answer) the message.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return True
    if isinstance(exc, smtplib.SMTPResponseException):
        status = enhanced_status(exc.smtp_error)
        if status is None:
            return exc.smtp_code in (550, 551, 553)
        return status.startswith("5.1.") or status == "5.2.1"
    return True


def status_of(exc: BaseException) -> str | None:
    """The enhanced status code of a refusal's reply, when it has one."""
    return enhanced_status(exc.smtp_error) if isinstance(exc, smtplib.SMTPResponseException) else None


def code_of(exc: BaseException) -> int | None:
    """The reply code of a refusal (the lowest of refused recipients'), None for other failures."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        return min(code for code, _ in exc.recipients.values())
    return None


def describe(exc: BaseException) -> str:
    """An exception summary safe for logs: class name and codes, never the server's free text.

    Servers often quote the recipient in their reply ("550 <bob@example.com>: no such user").
    """
    if isinstance(exc, smtplib.SMTPResponseException):
        status = enhanced_status(exc.smtp_error)
        return f"{type(exc).__name__} {exc.smtp_code}" + (f" {status}" if status else "")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return f"SMTPRecipientsRefused {','.join(map(str, codes))}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} errno {exc.errno}"
    return type(exc).__name__
