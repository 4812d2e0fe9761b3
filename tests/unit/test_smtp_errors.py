"""Whose fault an SMTP refusal is, from smtplib's own exceptions (no server needed)."""

from __future__ import annotations

import smtplib

import pytest

from dunning.mail.smtp_errors import about_address, classify, describe, enhanced_status


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (b"5.7.1 Message rejected", "5.7.1"),
        (b"  5.1.10 Recipient address has null MX", "5.1.10"),
        ("4.3.0 Try later", "4.3.0"),
        (b"Mailbox unavailable", None),
        (b"5.7 not a status", None),
        (None, None),
    ],
)
def test_enhanced_status_is_read_from_the_start_of_the_reply(
    reply: bytes | str | None, status: str | None
) -> None:
    assert enhanced_status(reply) == status


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.7.1 policy")}), True),
        (smtplib.SMTPDataError(550, b"5.1.1 <a@example.com> no such user"), True),
        (smtplib.SMTPDataError(550, b"5.2.1 mailbox disabled"), True),
        (smtplib.SMTPDataError(552, b"5.2.2 mailbox full"), False),
        (smtplib.SMTPDataError(554, b"5.7.1 spam"), False),
        (smtplib.SMTPDataError(554, b"5.6.0 content"), False),
        (smtplib.SMTPDataError(550, b"no such user"), True),
        (smtplib.SMTPDataError(553, b"mailbox name not allowed"), True),
        (smtplib.SMTPDataError(554, b"transaction failed"), False),
        (smtplib.SMTPDataError(552, b"too big"), False),
    ],
)
def test_a_refusal_is_of_the_address_or_of_the_message(exc: BaseException, expected: bool) -> None:
    assert classify(exc) == "permanent"
    assert about_address(exc) is expected


def test_our_own_sender_refused_is_configuration_and_the_text_never_leaks() -> None:
    exc = smtplib.SMTPSenderRefused(
        553, b"5.1.8 <bounce@acme.example> domain not found", "bounce@acme.example"
    )
    assert classify(exc) == "config"
    assert describe(exc) == "SMTPSenderRefused 553 5.1.8"
    assert classify(smtplib.SMTPDataError(451, b"4.3.0 later")) == "retry"
