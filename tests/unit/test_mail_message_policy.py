"""build_message's caching header registry: the same bytes as the standard policy, fewer classes made."""

from __future__ import annotations

import email.policy
import re
from datetime import UTC, datetime

from dunning.mail.message import POLICY, SMTP_POLICY, build_message
from dunning.mail.render import RenderedEmail


def _build() -> bytes:
    msg = build_message(
        RenderedEmail(subject="Votre paiement n’a pas abouti", html="<p>Zoë</p>", text="Zoë\n.\n"),
        to="Zoë Martin <zoe@example.com>",
        sender="Acme Billing <billing@acme.example>",
        message_id="<payment_failed.42.1.abc@acme.example>",
        headers={"X-Dunning-Notice": "payment_failed:42:1", "X-Dunning-Kind": "payment_failed"},
        date=datetime(2026, 3, 1, 9, tzinfo=UTC),
    )
    msg.set_boundary("fixed-boundary")
    return msg.as_bytes(policy=SMTP_POLICY)


def test_bytes_are_those_of_the_standard_policy() -> None:
    ours = _build()
    stdlib = email.message_from_bytes(ours, policy=email.policy.default).as_bytes(policy=email.policy.SMTP)
    assert ours == stdlib
    assert b"Subject: =?utf-8?q?Votre_paiement_n=E2=80=99a_pas_abouti?=" in ours or b"Subject: Votre" in ours
    assert re.search(rb"Message-ID: <payment_failed\.42\.1\.abc@acme\.example>\r\n", ours)


def test_header_classes_are_made_once_per_name() -> None:
    registry = POLICY.header_factory
    first = registry["X-Dunning-Kind"]
    assert registry["x-dunning-kind"] is first
    assert registry["Subject"] is registry["subject"]
    # The stock registry makes a new class each time: the cost this avoids.
    assert (
        email.policy.default.header_factory["Subject"] is not email.policy.default.header_factory["Subject"]
    )
