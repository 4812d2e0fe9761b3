"""What every sender promises: the :class:`Sender` protocol, its commit point and its errors.

Senders are idempotent per Message-ID as far as they can be: the file sender
overwrites the same file; the SMTP sender keeps the caller's Message-ID
(derived from the notice's idempotency key) so that a re-send after an
ambiguous failure is recognisable downstream.

Errors never carry the recipient's address or the body: only message ids and
SMTP codes, because they end up in logs, dead letters and metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from typing import Protocol

from dunning.errors import DunningError

#: Called once, right before the bytes that make a delivery irrevocable are written.
CommitPoint = Callable[[], None]


class Sender(Protocol):
    """Anything that can deliver a built message (SMTP, a folder, a test double in unit tests)."""

    def send(self, msg: EmailMessage, *, commit_point: CommitPoint | None = None) -> None:
        """Deliver ``msg`` or raise ``TransientSendError`` / ``PermanentSendError`` / ``AmbiguousSendError``.

        ``commit_point`` is called right before the point of no return (for SMTP, after
        the server's 354 and before the message body's final dot). A failure before it
        means "not delivered"; a failure after it means "maybe delivered".
        """
        ...


class SendError(DunningError):
    """A delivery failure. ``code`` is the SMTP reply code when there was one."""

    def __init__(self, message: str, *, message_id: str | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.code = code


class TransientSendError(SendError):
    """Delivery failed for now (4xx, network, timeout) even after retrying: try again later."""


class PermanentSendError(SendError):
    """The server refused the message for good (5xx): retrying the same message will not help.

    ``about_address``: the refusal names the recipient's mailbox (a 5xx to ``RCPT TO``, or an
    enhanced status ``5.1.x`` / ``5.2.1`` after it: no such user, bad domain, mailbox disabled),
    so later mail to it would bounce too. False when it refused this message (content, policy,
    ``5.7.x``): the address stays good for the next one.
    """

    def __init__(
        self,
        message: str,
        *,
        message_id: str | None = None,
        code: int | None = None,
        about_address: bool = True,
        status: str | None = None,
    ) -> None:
        super().__init__(message, message_id=message_id, code=code)
        self.about_address = about_address
        #: The reply's enhanced status code (``"5.7.1"``), when the server gave one.
        self.status = status

    def smtp_reply(self) -> str:
        """``"SMTP 554 5.7.1"``: the code and enhanced status, never the server's text."""
        return f"SMTP {self.code or '5xx'}" + (f" {self.status}" if self.status else "")


class AmbiguousSendError(SendError):
    """The connection failed after the point of no return: the message may have been delivered.

    Never retried here: a retry could deliver it twice.
    """
