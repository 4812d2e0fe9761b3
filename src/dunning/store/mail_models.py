"""Tables about recipient addresses: who unsubscribed from prompts, which addresses bounce.

Kept apart from :mod:`.models` (imported at its end, so ``Base.metadata`` holds them). Both are
keyed by the address in lower case: one row per mailbox, whichever customer it belongs to.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dunning.store.models import Base, UtcDateTime


class MailSuppression(Base):
    """An address that asked for no more prompts (RFC 8058 one-click, or the confirm page).

    Transactional and dunning emails still go: they are about the customer's account.
    """

    __tablename__ = "mail_suppressions"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255))
    # The email whose link was used (None: recorded another way).
    outbox_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MailBounce(Base):
    """An address the mail server refused for good (5xx): nothing more is sent to it.

    Deleted when a ``customer.upserted`` changes that customer's email.
    """

    __tablename__ = "mail_bounces"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    code: Mapped[int | None] = mapped_column(Integer)
    # The refusal as the sender described it (codes and the Message-ID, never the server's text).
    detail: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str] = mapped_column(String(255))
    bounced_at: Mapped[datetime] = mapped_column(UtcDateTime)
