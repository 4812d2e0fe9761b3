"""Open SMTP connections kept between messages, a few per worker process.

Opening a connection costs a TCP handshake, the greeting, EHLO and (when
configured) STARTTLS and AUTH: several round trips and, for the server, more
work than the message itself. A sender keeps the connections of its finished
deliveries here and the next delivery takes one, so a busy worker says
``MAIL FROM`` straight away.

Only a connection that has just completed a delivery (the server's 250 to the
final dot) is put back: it is between transactions, in a known state. Any
failure closes it. A connection that idled past ``idle_s`` or served
``max_uses`` messages is closed instead of reused (servers drop idle clients
and some cap messages per connection); one the server dropped silently is
found out at the next ``MAIL FROM``, long before the point of no return, and
the sender opens a fresh one (:meth:`.smtp.SmtpSender._send_once`).

Each connection is used by one thread at a time: a taker owns it until it
gives it back. A process forked with connections in its pool never uses them
(the parent's sockets are not the child's to talk on).
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import threading
import time
from dataclasses import dataclass


@dataclass
class Pooled:
    """A connection and what the pool needs to know about it."""

    smtp: smtplib.SMTP
    uses: int = 0  # messages delivered on it
    idle_since: float = 0.0  # time.monotonic() when it was given back
    reused: bool = False  # taken from the pool (it may have died while idle)


class ConnectionPool:
    """At most ``size`` idle connections; taking one never blocks (no idle one: the caller opens one)."""

    def __init__(self, size: int = 8, *, max_uses: int = 100, idle_s: float = 30.0) -> None:
        if size < 0 or max_uses < 1:
            raise ValueError("pool size must be >= 0 and max_uses >= 1")
        self.size = size
        self.max_uses = max_uses
        self.idle_s = idle_s
        self._idle: list[Pooled] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.opened = 0  # connections the owner opened (for tests and benchmarks)
        self.reuses = 0  # deliveries that started on a pooled connection

    def take(self) -> Pooled | None:
        """An idle connection, the most recently used first; None when there is none to reuse."""
        now = time.monotonic()
        expired: list[Pooled] = []
        got: Pooled | None = None
        with self._lock:
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()  # forked: the parent's sockets, not ours
            while self._idle:
                candidate = self._idle.pop()
                if now - candidate.idle_since > self.idle_s:
                    expired.append(candidate)
                    continue
                got = candidate
                break
            if got is not None:
                self.reuses += 1
        for old in expired:
            _close(old.smtp)
        if got is not None:
            got.reused = True
        return got

    def opened_one(self, smtp: smtplib.SMTP) -> Pooled:
        """Wrap a connection the caller just opened (and count it)."""
        with self._lock:
            self.opened += 1
        return Pooled(smtp)

    def give_back(self, conn: Pooled) -> None:
        """Keep a connection that has just delivered a message, or close it when it is used up or the pool is full."""
        conn.uses += 1
        conn.idle_since = time.monotonic()
        conn.reused = False
        with self._lock:
            keep = conn.uses < self.max_uses and len(self._idle) < self.size and self._pid == os.getpid()
            if keep:
                self._idle.append(conn)
        if not keep:
            _close(conn.smtp)

    def discard(self, conn: Pooled) -> None:
        """Close a connection after a failure: its state is unknown, it is never reused."""
        _close(conn.smtp)

    def close_all(self) -> None:
        """Close every idle connection (shutdown; tests)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn.smtp)

    def idle(self) -> int:
        """How many connections are waiting to be reused."""
        with self._lock:
            return len(self._idle)


def _close(smtp: smtplib.SMTP) -> None:
    # No QUIT: a round trip for a courtesy; the server handles a client that hangs up.
    with contextlib.suppress(Exception):
        smtp.close()
