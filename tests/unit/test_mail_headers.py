"""The headers of a customer email, built from hostile customer fields and parsed back from its bytes.

Whatever a customer's name or address holds, the message has exactly the headers we set, each
once; a name is one display name (quoted or RFC 2047-encoded), never a new header or address.
"""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from dunning.engine.links import UNSUBSCRIBE, LinkSigner, outbox_id_of, outbox_subject
from dunning.mail.message import MAX_NAME_CHARS, build_message, message_id_for, safe_display_name
from dunning.mail.render import RenderedEmail
from dunning.settings import load_settings

RENDERED = RenderedEmail(subject="Your payment failed", html="<p>Hi</p>", text="Hi")
AT = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
BASE = ["Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted", "MIME-Version", "Content-Type"]

HOSTILE_NAMES = [
    "Ada\r\nBcc: victim@example.org",
    "Ada\nX-Injected: 1",
    "Ada\rReply-To: evil@example.org",
    'Evil" <evil@example.org>, "Ada',
    "=?utf-8?q?Bcc=3A_victim@example.org?=",
    "Zoë Ünïcödé 山田太郎 🙂",
    "\u202eReversed\u202c name",
    "Ada\u2028Bcc: victim@example.org",
    "Ada\x00\x07\x1b[31m",
    "x" * 10_000,
    "é" * 10_000,
    "   ",
    "",
]


def _bytes(msg: EmailMessage) -> bytes:
    # What smtplib writes (CRLF, 78-column folding), as SmtpSender serialises it.
    return msg.as_bytes(policy=email.policy.SMTP)


def _parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(raw)  # type: ignore[return-value]


def _headers_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_name_stays_one_display_name_of_one_address(name: str) -> None:
    msg = build_message(
        RENDERED,
        to="ada@example.com",
        sender="Billing <billing@example.com>",
        message_id="<a@b>",
        to_name=name,
    )
    raw = _bytes(msg)
    head = _headers_block(raw)
    # Every line of the header block is a header or a folded continuation, within RFC 5322's limit.
    for line in head.split(b"\r\n"):
        assert len(line) <= 998
        assert line[:1] in (b" ", b"\t") or b":" in line
    assert head.isascii()
    parsed = _parse(raw)
    assert list(parsed.keys()) == BASE
    assert not parsed.defects
    [address] = parsed["To"].addresses
    assert address.addr_spec == "ada@example.com"
    expected = safe_display_name(name)
    assert "".join(address.display_name.split()) == "".join(expected.split())
    assert len(expected) <= MAX_NAME_CHARS
    assert "victim" not in str(parsed["To"]) or "victim@example.org" not in [
        a.addr_spec for a in parsed["To"].addresses
    ]
    assert parsed["Bcc"] is None and parsed["X-Injected"] is None


def test_safe_display_name_removes_line_breaks_controls_and_bidi_overrides() -> None:
    assert safe_display_name("Ada\r\nBcc: x@y") == "Ada Bcc: x@y"
    assert safe_display_name("\u202eAda\u202c") == "Ada"
    assert safe_display_name("Ada\x00\x07") == "Ada"
    assert safe_display_name("  Ada   Lovelace  ") == "Ada Lovelace"
    assert safe_display_name(None) == "" and safe_display_name("\r\n") == ""
    assert len(safe_display_name("y" * 10_000)) == MAX_NAME_CHARS


def test_no_name_means_a_bare_address() -> None:
    msg = build_message(
        RENDERED, to="ada@example.com", sender="b@example.com", message_id="<a@b>", to_name="\r\n"
    )
    assert str(_parse(_bytes(msg))["To"]) == "ada@example.com"


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com\r\nBcc: victim@example.org",
        "ada@example.com\nBcc: victim@example.org",
    ],
)
def test_a_hostile_address_is_refused_not_sent(address: str) -> None:
    with pytest.raises(ValueError):
        build_message(RENDERED, to=address, sender="b@example.com", message_id="<a@b>")


@pytest.mark.parametrize("value", ["x\r\nBcc: victim@example.org", "x\nBcc: v@e.org"])
def test_any_header_value_with_a_line_break_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        build_message(
            RENDERED,
            to="a@example.com",
            sender="b@example.com",
            message_id="<a@b>",
            headers={"X-Dunning-Notice": value},
        )
    with pytest.raises(ValueError):
        build_message(
            RenderedEmail(subject=value, html="", text=""),
            to="a@example.com",
            sender="b@example.com",
            message_id="<a@b>",
        )


def test_the_message_id_is_stable_per_notice_so_a_resend_is_recognisable() -> None:
    key = "payment_failed:42:1"
    first = build_message(
        RENDERED, to="a@example.com", sender="b@example.com", message_id=message_id_for(key), date=AT
    )
    again = build_message(
        RENDERED,
        to="a@example.com",
        sender="b@example.com",
        message_id=message_id_for(key),
        date=AT + timedelta(hours=3),
    )
    assert _parse(_bytes(first))["Message-ID"] == _parse(_bytes(again))["Message-ID"]
    assert message_id_for(key) != message_id_for("payment_failed:42:2")
    assert _parse(_bytes(first))["Date"].datetime == AT


def test_a_prompt_carries_one_click_unsubscribe_unencoded_and_reply_to() -> None:
    signer = LinkSigner("secret", "https://billing.example.com")
    token = signer.token(purpose=UNSUBSCRIBE, customer="c" * 255, subject=outbox_subject(12), expires_at=AT)
    url = f"https://billing.example.com/unsubscribe/{token}"
    msg = build_message(
        RENDERED,
        to="ada@example.com",
        sender="Billing <billing@example.com>",
        message_id="<a@b>",
        headers={
            "List-Unsubscribe": f"<{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Reply-To": "Support <support@example.com>",
        },
        date=AT,
    )
    raw = _bytes(msg)
    assert b"=?utf-8?" not in _headers_block(raw)  # a URL a mail client can read, however long
    parsed = _parse(raw)
    assert str(parsed["List-Unsubscribe"]) == f"<{url}>"
    assert str(parsed["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert [a.addr_spec for a in parsed["Reply-To"].addresses] == ["support@example.com"]
    assert str(parsed["Auto-Submitted"]) == "auto-generated"
    claims = signer.verify(url.rsplit("/", 1)[1], purpose=UNSUBSCRIBE, now=AT - timedelta(days=1))
    assert outbox_id_of(claims.subject) == 12


def test_list_unsubscribe_refuses_a_value_that_is_not_one_line_of_ascii() -> None:
    for value in ("<https://exämple.com/u/x>", "<https://e.com/u/x>\r\nBcc: v@e.org"):
        with pytest.raises(ValueError):
            build_message(
                RENDERED,
                to="a@e.com",
                sender="b@e.com",
                message_id="<a@b>",
                headers={"List-Unsubscribe": value},
            )


def test_outbox_subjects_round_trip_and_refuse_anything_else() -> None:
    assert outbox_id_of(outbox_subject(7)) == 7
    for bad in ("outbox:0", "outbox:-1", "outbox:x", "outbox:99999999999", "case:7", "outbox:7 "):
        assert outbox_id_of(bad) is None


def test_reply_to_comes_from_configuration_and_must_be_one_address() -> None:
    env = {"DUNNING_HOME": "/tmp/dunning-test-home", "DUNNING_LINK_SECRET": "s"}
    assert load_settings(env).mail_reply_to is None
    assert load_settings({**env, "DUNNING_MAIL_REPLY_TO": "Help <help@example.com>"}).mail_reply_to == (
        "Help <help@example.com>"
    )
    for bad in ("a@example.com, b@example.com", "not an address", "h@example.com\r\nBcc: v@e.org"):
        with pytest.raises(ValueError, match="DUNNING_MAIL_REPLY_TO"):
            load_settings({**env, "DUNNING_MAIL_REPLY_TO": bad})
