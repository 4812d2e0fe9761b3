"""SmtpSender's pooled connections against a real aiosmtpd server that counts its connections.

Reuse is seen from the server's side (one client port per connection), and the
faults are the server's own: it hangs up on an idle connection at the next
``MAIL FROM``, or right after taking a message.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from dunning.mail import AmbiguousSendError, SmtpSender, TransientSendError, build_message
from dunning.mail.render import RenderedEmail

pytestmark = pytest.mark.integration


@dataclass
class Handler:
    """Records messages and the connection (client port) each MAIL FROM came on; misbehaves on request."""

    received: list[tuple[Any, bytes]] = field(default_factory=list)
    mail_peers: list[Any] = field(default_factory=list)
    hang_up_at_next_mail: int = 0  # close the connection instead of answering the next N MAIL FROM
    hang_up_after_data: bool = False  # take the message, then close without answering
    fail_next_data: int = 0  # answer 451 to the next N bodies
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.mail_peers.append(session.peer)
            hang_up = self.hang_up_at_next_mail > 0
            if hang_up:
                self.hang_up_at_next_mail -= 1
        if hang_up:
            server.transport.close()  # as a server does with a client it timed out
            return "421 4.4.2 idle too long, closing"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.fail_next_data > 0:
                self.fail_next_data -= 1
                return "451 4.3.0 try again later"
            self.received.append((session.peer, envelope.original_content or b""))
            hang_up = self.hang_up_after_data
        if hang_up:
            server.transport.close()  # the message is taken; its 250 never reaches the client
        return "250 2.0.0 Accepted"

    def connections(self) -> int:
        with self.lock:
            return len(set(self.mail_peers))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[tuple[Handler, str]]:
    handler = Handler()
    port = _free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, server_hostname="smtp.test", ready_timeout=10.0
    )
    controller.start()
    try:
        yield handler, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


def message(n: int) -> EmailMessage:
    return build_message(
        RenderedEmail(subject=f"Notice {n}", html=f"<p>Hello {n}</p>", text=f"Hello {n}\n.\nend"),
        to=f"customer{n}@example.com",
        sender="Billing <billing@example.com>",
        message_id=f"<n{n}@dunning.test>",
        date=datetime(2026, 3, 1, 9, tzinfo=UTC),
    )


def sender(url: str, **kwargs: Any) -> SmtpSender:
    return SmtpSender(url, timeout_s=5, wait=0, **kwargs)


def test_one_connection_carries_many_messages(server: tuple[Handler, str]) -> None:
    handler, url = server
    s = sender(url)
    points: list[int] = []
    for n in range(5):
        s.send(message(n), commit_point=lambda n=n: points.append(n))
    s.close()
    assert len(handler.received) == 5
    assert handler.connections() == 1
    assert (s.pool.opened, s.pool.reuses) == (1, 4)
    assert points == [0, 1, 2, 3, 4]  # each message still has its own point of no return
    # Dot-stuffing survives reuse: the body's lone "." line arrives as written.
    assert b"\r\n..\r\n" not in handler.received[-1][1] and b"Hello 4\r\n.\r\nend" in handler.received[-1][1]


def test_pool_size_zero_is_one_connection_per_message(server: tuple[Handler, str]) -> None:
    handler, url = server
    s = sender(url, pool_size=0)
    for n in range(3):
        s.send(message(n))
    assert handler.connections() == 3
    assert s.pool.opened == 3 and s.pool.idle() == 0


def test_connection_dropped_while_idle_is_reopened_and_the_message_sent_once(
    server: tuple[Handler, str],
) -> None:
    handler, url = server
    s = sender(url, attempts=1)  # the fresh connection must not cost a retry
    s.send(message(0))
    handler.hang_up_at_next_mail = 1
    points: list[str] = []
    s.send(message(1), commit_point=lambda: points.append("1"))
    s.close()
    assert [m for _, m in handler.received if b"Hello 1" in m] and len(handler.received) == 2
    assert points == ["1"]  # the dropped attempt never reached the point of no return
    assert handler.connections() == 2
    assert s.pool.opened == 2
    assert s.breaker.state == "closed"


def test_connection_is_not_reused_after_an_error(server: tuple[Handler, str]) -> None:
    handler, url = server
    s = sender(url, attempts=1)
    s.send(message(0))
    handler.fail_next_data = 1
    with pytest.raises(TransientSendError):
        s.send(message(1))
    assert s.pool.idle() == 0  # the connection that saw the 451 was closed, not kept
    s.send(message(2))
    s.close()
    peers = [peer for peer, _ in handler.received]
    assert len(peers) == 2 and peers[0] != peers[1]  # message 2 went on a new connection
    assert s.pool.opened == 2


def test_failure_after_the_point_of_no_return_on_a_pooled_connection_is_not_resent(
    server: tuple[Handler, str],
) -> None:
    handler, url = server
    s = sender(url)
    s.send(message(0))
    handler.hang_up_after_data = True
    with pytest.raises(AmbiguousSendError):
        s.send(message(1))
    handler.hang_up_after_data = False
    assert len(handler.received) == 2  # the server has it: once, and no second attempt was made
    assert len(handler.mail_peers) == 2
    assert s.pool.idle() == 0


def test_threads_share_the_pool_without_sharing_a_connection(server: tuple[Handler, str]) -> None:
    handler, url = server
    s = sender(url, pool_size=4)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for n in range(10):
                s.send(message(100 * t + n))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    s.close()
    assert not errors
    bodies = [m for _, m in handler.received]
    assert len(bodies) == 40
    assert len({m.split(b"Message-ID: ")[1].split(b"\r\n")[0] for m in bodies}) == 40
    assert s.pool.opened <= 4 and s.pool.reuses >= 36
    assert handler.connections() == s.pool.opened
