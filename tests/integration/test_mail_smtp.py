"""SmtpSender and FileSender against real things: an in-process aiosmtpd server and a real folder.

The SMTP server below is this module's own (not the suite's shared one) so it
can be told exactly how to misbehave and count every attempt it sees.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from dunning.mail import (
    KIND_HEADER,
    NOTICE_HEADER,
    FileSender,
    PermanentSendError,
    Renderer,
    SmtpSender,
    TransientSendError,
    build_message,
    message_id_for,
    sender_from_url,
)
from dunning.workflows.failed_payments.notices import NoticeContext

pytestmark = pytest.mark.integration

RECIPIENT = "ada@example.com"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Handler:
    """Records accepted messages; can answer 451 to the next N messages, or 550 to every recipient."""

    received: list[Envelope] = field(default_factory=list)
    attempts: int = 0  # MAIL FROM commands seen: one per delivery attempt
    fail_next: int = 0
    refuse_all: bool = False
    mail_reply: str | None = None  # a refusal of MAIL FROM, when set
    data_reply: str | None = None  # a refusal of every body, when set
    logins: list[tuple[str, str]] = field(default_factory=list)
    login_peers: set[Any] = field(default_factory=set)  # one peer (client port) per connection
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        with self.lock:
            self.attempts += 1
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.refuse_all:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.data_reply:
                return self.data_reply
            if self.fail_next > 0:
                self.fail_next -= 1
                return "451 4.3.0 Temporary failure, try again later"
            self.received.append(envelope)
        return "250 2.0.0 Accepted"


@dataclass
class MailServer:
    handler: Handler
    port: int

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.handler.received.clear()
        self.handler.logins.clear()
        self.handler.login_peers.clear()
        self.handler.attempts = 0
        self.handler.fail_next = 0
        self.handler.refuse_all = False
        self.handler.mail_reply = self.handler.data_reply = None


@pytest.fixture(scope="module")
def mail_server_instance() -> Iterator[MailServer]:
    handler = Handler()

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            handler.logins.append((user, password))
            handler.login_peers.add(session.peer)
            # handled=False: let aiosmtpd answer 535 itself on failure.
            return AuthResult(success=user == "mailer" and password == "p@ss:word/1", handled=False)
        return AuthResult(success=False, handled=False)

    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        server_hostname="smtp.test",  # the default getfqdn() can stall where DNS is slow
        ready_timeout=10.0,
        authenticator=authenticate,
        auth_require_tls=False,  # plain loopback in tests; production uses TLS
    )
    controller.start()
    try:
        yield MailServer(handler, port)
    finally:
        controller.stop()


@pytest.fixture
def mail_server(mail_server_instance: MailServer) -> Iterator[MailServer]:
    mail_server_instance.reset()
    yield mail_server_instance
    mail_server_instance.reset()


@pytest.fixture(scope="module")
def rendered() -> Any:
    ctx = NoticeContext(
        kind="payment_failed",
        customer_name="Zoë",
        customer_email=RECIPIENT,
        locale="fr",
        timezone="Europe/Paris",
        plan="Pro",
        amount_minor=4900,
        currency="EUR",
        decline_class="soft",
        decline_reason="insufficient_funds",
        next_retry_at=datetime(2026, 3, 2, 15, tzinfo=UTC),
        suspend_at=datetime(2026, 3, 5, 23, 30, tzinfo=UTC),
        action_url="https://acme.example/billing/update?token=abc",
    )
    return Renderer().render(ctx)


def make_message(rendered: Any, key: str = "payment_failed:sub_42:1") -> EmailMessage:
    return build_message(
        rendered,
        to=f"Zoë Martin <{RECIPIENT}>",
        sender="Acme Billing <billing@acme.example>",
        message_id=message_id_for(key, "acme.example"),
        headers={NOTICE_HEADER: key, KIND_HEADER: key.split(":")[0], "Reply-To": "support@acme.example"},
        date=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    )


def fast(url: str, **kwargs: Any) -> SmtpSender:
    """A sender that retries without sleeping, so tests stay quick."""
    return SmtpSender(url, timeout_s=5, wait=0, **kwargs)


def parse(envelope: Envelope) -> EmailMessage:
    content = envelope.original_content or envelope.content
    assert isinstance(content, bytes)
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_delivers_multipart_message(mail_server: MailServer, rendered: Any) -> None:
    msg = make_message(rendered)
    fast(mail_server.url).send(msg)

    assert len(mail_server.handler.received) == 1
    envelope = mail_server.handler.received[0]
    assert envelope.mail_from == "billing@acme.example"
    assert envelope.rcpt_tos == [RECIPIENT]
    got = parse(envelope)
    assert got["Message-ID"] == msg["Message-ID"]
    assert got["Message-ID"].startswith("<payment_failed.sub_42.1.") and got["Message-ID"].endswith(
        "@acme.example>"
    )
    assert got["Subject"] == rendered.subject
    assert got[NOTICE_HEADER] == "payment_failed:sub_42:1"
    assert got[KIND_HEADER] == "payment_failed"
    assert got["Auto-Submitted"] == "auto-generated"
    assert got["Reply-To"] == "support@acme.example"
    assert got["Date"]
    assert got.get_content_type() == "multipart/alternative"
    text = got.get_body(preferencelist=("plain",))
    html = got.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    # On the wire lines end in CRLF; compare the content, not the line ends.
    assert text.get_content().replace("\r\n", "\n") == rendered.text
    assert html.get_content().replace("\r\n", "\n").rstrip("\n") == rendered.html.rstrip("\n")
    assert "49,00" in text.get_content()


def test_451_twice_then_success_is_delivered_once(mail_server: MailServer, rendered: Any) -> None:
    mail_server.handler.fail_next = 2
    fast(mail_server.url, attempts=4).send(make_message(rendered))

    assert mail_server.handler.attempts == 3
    assert len(mail_server.handler.received) == 1


def test_persistent_451_gives_transient_error(mail_server: MailServer, rendered: Any) -> None:
    mail_server.handler.fail_next = 10
    msg = make_message(rendered)
    with pytest.raises(TransientSendError) as info:
        fast(mail_server.url, attempts=3).send(msg)

    assert mail_server.handler.attempts == 3
    assert mail_server.handler.received == []
    assert info.value.code == 451
    assert info.value.message_id == msg["Message-ID"]
    assert RECIPIENT not in str(info.value)


def test_550_is_permanent_without_retry(mail_server: MailServer, rendered: Any) -> None:
    mail_server.handler.refuse_all = True
    with pytest.raises(PermanentSendError) as info:
        fast(mail_server.url, attempts=4).send(make_message(rendered))

    assert mail_server.handler.attempts == 1
    assert mail_server.handler.received == []
    assert info.value.code == 550
    assert info.value.about_address and info.value.smtp_reply() == "SMTP 550"
    # Ids and codes only: the server's reply quoted the address, the error must not.
    assert RECIPIENT not in str(info.value)
    assert "Zoë" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("reply", "about_address", "status"),
    [
        ("554 5.7.1 Message rejected as spam", False, "5.7.1"),
        ("552 5.3.4 Message too big for system", False, "5.3.4"),
        ("554 Transaction failed", False, None),
        ("550 5.1.1 <zoe@example.com>: no such user", True, "5.1.1"),
        ("550 5.2.1 Mailbox disabled", True, "5.2.1"),
        ("550 Mailbox unavailable", True, None),
    ],
)
def test_a_refused_body_says_whether_the_address_or_the_message_was_refused(
    mail_server: MailServer, rendered: Any, reply: str, about_address: bool, status: str | None
) -> None:
    mail_server.handler.data_reply = reply
    with pytest.raises(PermanentSendError) as info:
        fast(mail_server.url, attempts=4).send(make_message(rendered))
    assert mail_server.handler.attempts == 1  # permanent: no retry loop
    assert (info.value.code, info.value.about_address, info.value.status) == (
        int(reply[:3]),
        about_address,
        status,
    )
    assert "zoe@example.com" not in str(info.value) and "spam" not in str(info.value)


def test_our_sender_refused_is_a_configuration_problem_not_a_bounce(
    mail_server: MailServer, rendered: Any
) -> None:
    mail_server.handler.mail_reply = "553 5.1.8 Sender address rejected: domain not found"
    with pytest.raises(TransientSendError) as info:
        fast(mail_server.url, attempts=4).send(make_message(rendered))
    assert mail_server.handler.attempts == 1
    assert "configuration" in str(info.value) and "553" in str(info.value)


def test_closed_port_is_transient(rendered: Any) -> None:
    port = free_port()  # bound and released: nothing listens there now
    with pytest.raises(TransientSendError) as info:
        fast(f"smtp://127.0.0.1:{port}", attempts=2).send(make_message(rendered))
    assert "2 attempt" in str(info.value)


def test_credentials_from_url_are_used(mail_server: MailServer, rendered: Any) -> None:
    url = f"smtp://mailer:p%40ss%3Aword%2F1@127.0.0.1:{mail_server.port}"
    fast(url).send(make_message(rendered))
    assert mail_server.handler.logins == [("mailer", "p@ss:word/1")]
    assert len(mail_server.handler.received) == 1
    assert "p%40ss" not in repr(SmtpSender(url)) and "word" not in repr(SmtpSender(url))


def test_bad_credentials_are_not_retried_in_a_loop(mail_server: MailServer, rendered: Any) -> None:
    url = f"smtp://mailer:wrong@127.0.0.1:{mail_server.port}"
    with pytest.raises(TransientSendError) as info:
        fast(url, attempts=4).send(make_message(rendered))
    assert info.value.code == 535
    # smtplib tries each AUTH mechanism the server offers, but on one connection only.
    assert len(mail_server.handler.login_peers) == 1
    assert mail_server.handler.received == []


def test_smtp_url_validation() -> None:
    with pytest.raises(ValueError, match="smtp_url"):
        SmtpSender("http://example.com")
    with pytest.raises(ValueError, match="smtp_url"):
        SmtpSender("smtps://host?starttls=1")
    assert isinstance(sender_from_url("smtp://127.0.0.1:2525", Path("/unused")), SmtpSender)


def test_file_sender_writes_eml_preview_and_index(tmp_path: Path, rendered: Any) -> None:
    outbox = tmp_path / "outbox"
    sender = sender_from_url(None, outbox)
    assert isinstance(sender, FileSender)
    first = make_message(rendered, "payment_failed:sub_42:1")
    second = make_message(rendered, "payment_reminder:sub_42:2")

    sender.send(first)
    sender.send(second)
    sender.send(first)  # the same notice again: same file, no new entry
    index = sender.write_index()

    emls = sorted(p.name for p in outbox.glob("*.eml"))
    assert len(emls) == 2
    assert sorted(p.name for p in outbox.glob("*.html") if p.name != "index.html") == [
        name.replace(".eml", ".html") for name in emls
    ]
    assert not list(outbox.glob("*.tmp")) and not list(outbox.glob(".*"))
    page = index.read_text(encoding="utf-8")
    for name in emls:
        assert page.count(f'href="{quote(name, safe="@")}"') == 1
        assert page.count(f'href="{quote(name.replace(".eml", ".html"), safe="@")}"') == 1
    assert page.count("<tr><td>") == 2
    assert "payment_failed" in page and RECIPIENT in page

    # The .eml reads back as the message that was sent.
    eml = outbox / emls[0]
    got = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert got["Message-ID"] in (first["Message-ID"], second["Message-ID"])
    assert got["Subject"] == rendered.subject
    # The log keeps every send; the page shows each file once, with the message's own date.
    lines = [json.loads(line) for line in (outbox / "index.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    assert lines[0]["time"].startswith("2026-03-01T09:00")
    assert lines[0]["kind"] == "payment_failed"
    assert lines[0]["notice"] == "payment_failed:sub_42:1"


def test_file_sender_escapes_and_survives_a_torn_index_line(tmp_path: Path, rendered: Any) -> None:
    sender = FileSender(tmp_path)
    msg = make_message(rendered)
    del msg["Subject"]
    msg["Subject"] = "<img src=x onerror=alert(1)>"
    sender.send(msg)
    with (tmp_path / "index.jsonl").open("a") as fh:
        fh.write('{"time": "2026-03-01T09:00:00+00:00", "file": "torn')  # a crash mid-write
    page = sender.write_index().read_text()
    assert "<img" not in page and "&lt;img" in page
    assert page.count("<tr><td>") == 1


def test_file_names_are_safe_and_distinct(tmp_path: Path, rendered: Any) -> None:
    sender = FileSender(tmp_path)
    for message_id in ("<../../etc/passwd@x>", "<a/b@x>", "<a_b@x>", "<a b@x>"):
        msg = make_message(rendered)
        del msg["Message-ID"]
        msg["Message-ID"] = message_id
        sender.send(msg)
    names = [p.name for p in tmp_path.glob("*.eml")]
    assert len(names) == 4
    assert all(p.parent == tmp_path for p in tmp_path.rglob("*.eml"))
