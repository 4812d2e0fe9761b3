"""wire_message writes the very bytes of build_message(...).as_bytes(SMTP_POLICY), and refuses what it refuses."""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.test_mail_headers import HOSTILE_NAMES

from dunning.mail.message import (
    KIND_HEADER,
    LIST_UNSUBSCRIBE,
    LIST_UNSUBSCRIBE_POST,
    NOTICE_HEADER,
    ONE_CLICK,
    SMTP_POLICY,
    build_message,
)
from dunning.mail.render import RenderedEmail
from dunning.mail.wire import wire_message

AT = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
HTML = (
    "<html><body><p>" + "Votre paiement de 49,00 € n’a pas abouti. " * 6 + "</p>\n<p>Zoë</p></body></html>\n"
)
TEXT = "Bonjour Zoë,\n\nVotre paiement n’a pas abouti.\n.\n.leading dot\n" + "x" * 90 + "\n"


def _both(rendered: RenderedEmail, **kw: object) -> tuple[bytes, bytes]:
    """(build_message's bytes, wire_message's bytes), each drawing the same boundary."""
    random.seed(7)
    msg = build_message(rendered, **kw)  # type: ignore[arg-type]
    stdlib = msg.as_bytes(policy=SMTP_POLICY)
    random.seed(7)
    wire = wire_message(rendered, **kw)  # type: ignore[arg-type]
    assert wire is not None
    # The envelope is the one SmtpSender derives from the message.
    assert wire.sender == email.utils.parseaddr(str(msg["From"]))[1]
    assert wire.recipients == [a for _, a in email.utils.getaddresses([str(msg["To"])])]
    assert wire.message_id == str(msg["Message-ID"])
    return stdlib, wire.data


def _kw(**over: object) -> dict[str, object]:
    kw: dict[str, object] = {
        "to": "customer12@example.com",
        "sender": "Acme Billing <billing@acme.example>",
        "message_id": "<payment_failed.12.opened.5f1c0e9ab2d4@dunning.invalid>",
        "headers": {NOTICE_HEADER: "payment_failed:12:opened", KIND_HEADER: "payment_failed"},
        "date": AT,
        "to_name": "Customer 12",
    }
    kw.update(over)
    return kw


@pytest.mark.parametrize(
    "rendered",
    [
        RenderedEmail(subject="Your payment failed", html="<p>Hi</p>", text="Hi"),
        RenderedEmail(subject="Votre paiement n’a pas abouti", html=HTML, text=TEXT),
        RenderedEmail(subject="Ihre Zahlung über 49,00 € ist fehlgeschlagen", html=HTML * 20, text=TEXT * 20),
        RenderedEmail(subject="=?utf-8?q?looks_encoded?=", html="", text=""),
        RenderedEmail(subject="s" * 200, html="a\r\nb\rc\n", text="é" * 300),
        RenderedEmail(subject="  spaced   out  ", html="x", text="y"),
    ],
)
def test_the_bytes_are_those_of_build_message(rendered: RenderedEmail) -> None:
    stdlib, wire = _both(rendered, **_kw())
    assert wire == stdlib


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, None, "Ada Lovelace", "O'Brien", "Zoë"])
def test_hostile_names_give_the_same_bytes(name: str | None) -> None:
    stdlib, wire = _both(RenderedEmail("Hi", "<p>Hi</p>", "Hi"), **_kw(to_name=name))
    assert wire == stdlib


def test_a_prompt_and_reply_to_give_the_same_bytes() -> None:
    headers = {
        NOTICE_HEADER: "win_back:3:offer",
        KIND_HEADER: "win_back",
        "Reply-To": "Help Desk <help@acme.example>",
        LIST_UNSUBSCRIBE: "<https://pay.example/unsubscribe/" + "t" * 120 + ">",
        LIST_UNSUBSCRIBE_POST: ONE_CLICK,
    }
    stdlib, wire = _both(RenderedEmail("An offer", "<p>x</p>", "x"), **_kw(headers=headers, date=None))
    assert wire == stdlib


def test_a_body_holding_the_boundary_is_written_as_the_generator_writes_it() -> None:
    # (The generator's check looks for the boundary before a bare LF; in CRLF text it never
    # finds one. A 19-digit random token is the real protection, here as there.)
    _, first = _both(RenderedEmail("Hi", "", ""), **_kw())
    line = "--" + first.split(b'boundary="', 1)[1].split(b'"', 1)[0].decode()
    stdlib, wire = _both(RenderedEmail("Hi", line + "\n", line + "--\n"), **_kw())
    assert wire == stdlib


@pytest.mark.parametrize("value", ["x\r\nBcc: victim@example.org", "x\nBcc: v@e.org"])
def test_a_line_break_in_any_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        wire_message(RenderedEmail(value, "", ""), **_kw())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wire_message(RENDERED, **_kw(headers={NOTICE_HEADER: value}))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wire_message(RENDERED, **_kw(to="ada@example.com" + value[1:]))  # type: ignore[arg-type]


RENDERED = RenderedEmail("Hi", "<p>Hi</p>", "Hi")


def test_an_unknown_header_is_left_to_build_message() -> None:
    assert wire_message(RENDERED, **_kw(headers={"Cc": "x@example.com"})) is None  # type: ignore[arg-type]


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120)
_ascii = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=100)
_addresses = st.sampled_from(
    ["a@example.com", "first.last+tag@mail.example.co", "x_y-z@sub-domain.example", "UPPER@EXAMPLE.COM"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.one_of(_ascii, _text),
    name=st.one_of(st.none(), _ascii, _text),
    notice=_ascii.filter(lambda v: v.strip() != ""),
    to=_addresses,
    text=_text,
    html=_text,
    minutes=st.integers(0, 10**7),
)
def test_any_values_give_the_same_bytes_or_the_same_refusal(
    subject: str, name: str | None, notice: str, to: str, text: str, html: str, minutes: int
) -> None:
    kw = _kw(
        to=to,
        to_name=name,
        date=AT + timedelta(minutes=minutes),
        headers={NOTICE_HEADER: notice, KIND_HEADER: "payment_failed"},
    )
    rendered = RenderedEmail(subject, html, text)
    try:
        random.seed(7)
        expected = build_message(rendered, **kw).as_bytes(policy=SMTP_POLICY)  # type: ignore[arg-type]
    except Exception as exc:
        with pytest.raises(type(exc)):
            wire_message(rendered, **kw)  # type: ignore[arg-type]
        return
    stdlib, wire = _both(rendered, **kw)
    assert wire == stdlib == expected
