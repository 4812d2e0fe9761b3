"""Sending over SMTP: pooled connections, retries with backoff, a circuit breaker.

The send sequence uses only smtplib's public calls: ``ehlo()``, ``starttls()``,
``login()``, then ``mail()`` and ``rcpt()`` for the envelope, ``docmd("data")``
for the DATA command and its 354, ``send()`` for the message body with its
final dot, ``getreply()`` for the server's verdict, and ``rset()`` to abandon
a transaction the server refused.

Why not ``SMTP.sendmail()``, ``send_message()`` or ``data()``: ``data()`` sends
DATA, reads the 354 and writes the body and the final dot in one call, and the
other two call it. The product needs a hook between the 354 and that final dot,
its point of no return (the outbox row moves to "sending", see
:data:`~.sending.CommitPoint`). Before the dot, a failure means "not delivered"
and the send may be retried; once the dot is written the server may accept the
message even if its answer never arrives, so a failure then means "maybe
delivered" (:class:`~.sending.AmbiguousSendError`) and is never retried
blindly. Only a DATA phase driven by hand can tell the two apart.

Connections are kept between messages (:mod:`.pool`): a delivery starts on an
idle connection when there is one. The point of no return is per message and
does not move: a pooled connection that turns out dead fails at ``MAIL FROM``
(or RCPT, or DATA), before the commit point, and the message is sent again on
a fresh connection at once, without counting it as a retry (the server never
took it). The body's bytes are built once per message, not once per attempt.
"""

from __future__ import annotations

import contextlib
import email.policy
import email.utils
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .breaker import CircuitBreaker, CircuitOpen
from .message import SMTP_POLICY, message_id_of
from .pool import ConnectionPool, Pooled
from .sending import (
    AmbiguousSendError,
    CommitPoint,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from .smtp_errors import about_address, classify, code_of, describe, status_of
from .wire import WireMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None


def _parse_smtp_url(url: str) -> _SmtpConfig:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ValueError("smtp_url: expected smtp://[user:pass@]host[:port][?starttls=1] or smtps://...")
    if not parts.hostname:
        raise ValueError("smtp_url: missing host")
    query = {k.lower(): v[-1] for k, v in parse_qs(parts.query).items()}
    starttls = query.get("starttls", "0").strip().lower() in ("1", "true", "yes", "on")
    implicit_tls = scheme == "smtps"
    if implicit_tls and starttls:
        raise ValueError("smtp_url: smtps:// is already TLS; starttls=1 applies to smtp:// only")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("smtp_url: invalid port") from exc
    if port is None:
        port = 465 if implicit_tls else (587 if starttls else 25)
    return _SmtpConfig(
        host=parts.hostname,
        port=port,
        implicit_tls=implicit_tls,
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class SmtpSender:
    """Delivers messages through an SMTP server, retrying transient failures with backoff.

    ``url`` is ``smtp://[user:pass@]host[:port]`` (``?starttls=1`` to upgrade
    the connection) or ``smtps://...`` (TLS from the first byte); user and
    password are percent-decoded. ``attempts`` counts the first try; waits
    between tries grow from ``wait`` seconds, doubling, capped at ``max_wait``.
    Up to ``pool_size`` idle connections are kept for the next messages (0: one
    connection per message); each serves at most ``max_uses`` messages and is
    not reused after ``idle_s`` seconds without one.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        attempts: int = 4,
        wait: float = 0.5,
        max_wait: float = 8.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        breaker: CircuitBreaker | None = None,
        pool_size: int = 8,
        max_uses: int = 100,
        idle_s: float = 30.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts: must be at least 1")
        self._config = _parse_smtp_url(url)
        self.breaker = breaker or CircuitBreaker()
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.wait = wait
        self.max_wait = max_wait
        self._ssl_context = ssl_context
        self._local_hostname = local_hostname
        self.pool = ConnectionPool(pool_size, max_uses=max_uses, idle_s=idle_s)

    def __repr__(self) -> str:
        # Never the password: this object may be printed in a traceback.
        c = self._config
        scheme = "smtps" if c.implicit_tls else "smtp"
        return f"SmtpSender({scheme}://{c.host}:{c.port}, starttls={c.starttls}, attempts={self.attempts})"

    def send(self, msg: EmailMessage, *, commit_point: CommitPoint | None = None) -> None:
        """Deliver ``msg``; raise ``PermanentSendError`` on a 5xx, ``TransientSendError`` when retries run out."""
        self._deliver(_envelope(msg), message_id_of(msg), commit_point)

    def send_wire(self, wire: WireMessage, *, commit_point: CommitPoint | None = None) -> None:
        """:meth:`send` for a message already written (:func:`.wire.wire_message`): no ``EmailMessage``."""
        envelope = _Envelope(wire.sender, list(wire.recipients), _stuffed(wire.data))
        self._deliver(envelope, wire.message_id, commit_point)

    def _deliver(self, envelope: _Envelope, message_id: str, commit_point: CommitPoint | None) -> None:
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.wait, max=self.max_wait),
            retry=retry_if_exception(lambda exc: classify(exc) == "retry"),
            before_sleep=lambda state: log.warning(
                "smtp send %s failed (attempt %d): %s; retrying",
                message_id,
                state.attempt_number,
                describe(state.outcome.exception()) if state.outcome else "?",
            ),
            reraise=True,
        )
        try:
            self.breaker.before()
        except CircuitOpen:
            raise TransientSendError(
                f"{message_id}: mail server circuit open after repeated failures; not trying for now",
                message_id=message_id,
            ) from None
        try:
            retrying(self._send_once, envelope, message_id, commit_point)
            self.breaker.success()
        except PermanentSendError:
            self.breaker.success()  # the server is up; it just refused this message
            raise
        except SendError:
            self.breaker.failure()
            raise
        except Exception as exc:
            kind = classify(exc)
            if kind is None:
                raise
            if kind == "permanent":
                self.breaker.success()
            else:
                self.breaker.failure()
            tries = retrying.statistics.get("attempt_number", 1)
            # ``from None``: a chained original would carry the server's text (and so
            # possibly the recipient's address) into logs and dead letters.
            if kind == "permanent":
                raise PermanentSendError(
                    f"{message_id}: refused ({describe(exc)})",
                    message_id=message_id,
                    code=code_of(exc),
                    about_address=about_address(exc),
                    status=status_of(exc),
                ) from None
            if kind == "config":
                raise TransientSendError(
                    f"{message_id}: SMTP configuration problem ({describe(exc)})",
                    message_id=message_id,
                    code=code_of(exc),
                ) from None
            raise TransientSendError(
                f"{message_id}: not delivered after {tries} attempt(s) ({describe(exc)})",
                message_id=message_id,
                code=code_of(exc),
            ) from None

    def _connect(self) -> smtplib.SMTP:
        c = self._config
        if c.implicit_tls:
            context = self._ssl_context or ssl.create_default_context()
            return smtplib.SMTP_SSL(
                c.host, c.port, local_hostname=self._local_hostname, timeout=self.timeout_s, context=context
            )
        return smtplib.SMTP(c.host, c.port, local_hostname=self._local_hostname, timeout=self.timeout_s)

    def _open(self) -> Pooled:
        c = self._config
        smtp = self._connect()
        try:
            smtp.ehlo()
            if c.starttls:
                smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                smtp.ehlo()
            if c.username is not None:
                smtp.login(c.username, c.password or "")
        except BaseException:
            smtp.close()
            raise
        return self.pool.opened_one(smtp)

    def _send_once(
        self, envelope: _Envelope, message_id: str, commit_point: CommitPoint | None = None
    ) -> None:
        conn = self.pool.take() or self._open()
        reached = False

        def point() -> None:
            nonlocal reached
            reached = True
            if commit_point is not None:
                commit_point()

        try:
            try:
                refused = _transmit(conn.smtp, envelope, message_id, point)
            except Exception as exc:
                if not conn.reused or reached or not _stale(exc):
                    raise
                # A pooled connection failed before the point of no return: the server dropped
                # it while it idled, or is closing it (421). The server did not take the
                # message; send it on a fresh connection now, which is not a retry.
                self.pool.discard(conn)
                log.info("smtp pooled connection failed (%s); opening a fresh one", describe(exc))
                conn = self._open()
                refused = _transmit(conn.smtp, envelope, message_id, point)
        except BaseException:
            # Its state is unknown (in the middle of DATA, say): never reused. No QUIT: it would
            # be read as message text and hang; closing makes the server drop an unfinished message.
            self.pool.discard(conn)
            raise
        # 250 to the final dot: between transactions, the next message may use it. No QUIT
        # either: waiting for 221 only widens the window in which a crash leaves it unknown.
        self.pool.give_back(conn)
        if refused:
            # Some recipients accepted it, some not. Retrying would send it again to
            # the accepted ones, so this is final for this message.
            codes = sorted({code for code, _ in refused.values()})
            raise PermanentSendError(
                f"{message_id}: some recipients refused ({','.join(map(str, codes))})",
                message_id=message_id,
                code=codes[0],
            )

    def close(self) -> None:
        """Close the idle pooled connections."""
        self.pool.close_all()


def _stale(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection itself is gone (not that the message was refused)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError, BrokenPipeError))


@dataclass(frozen=True)
class _Envelope:
    """What goes on the wire for one message, built once for all its attempts."""

    sender: str
    recipients: list[str]
    data: bytes  # dot-stuffed, CRLF-terminated, without the final dot


def _envelope(msg: EmailMessage) -> _Envelope:
    sender = str(msg["Sender"] or msg["From"])
    recipients = [addr for _, addr in email.utils.getaddresses([str(v) for v in msg.get_all("To", [])])]
    recipients += [addr for _, addr in email.utils.getaddresses([str(v) for v in msg.get_all("Cc", [])])]
    return _Envelope(email.utils.parseaddr(sender)[1], recipients, _stuffed(msg.as_bytes(policy=SMTP_POLICY)))


def _stuffed(data: bytes) -> bytes:
    """Dot-stuffing, as ``SMTP.data()`` does it, and a final CRLF."""
    data = re.sub(rb"(?m)^\.", b"..", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _transmit(
    smtp: smtplib.SMTP, envelope: _Envelope, message_id: str, commit_point: CommitPoint | None
) -> dict[str, tuple[int, bytes]]:
    """MAIL, RCPT and DATA by hand, so that ``commit_point`` runs between the 354 and the body.

    The steps of ``smtplib.SMTP.sendmail`` with the DATA phase opened up (see the module
    docstring); returns the refused recipients when some, not all, were refused.
    """
    code, resp = smtp.mail(envelope.sender)
    if code != 250:
        _abandon(smtp)
        raise smtplib.SMTPSenderRefused(code, resp, envelope.sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for rcpt in envelope.recipients:
        code, resp = smtp.rcpt(rcpt)
        if code not in (250, 251):
            refused[rcpt] = (code, resp)
    if len(refused) == len(envelope.recipients):
        _abandon(smtp)
        raise smtplib.SMTPRecipientsRefused(refused)
    code, resp = smtp.docmd("data")
    if code != 354:
        _abandon(smtp)
        raise smtplib.SMTPDataError(code, resp)
    if commit_point is not None:
        commit_point()  # if this raises, the connection closes and the server drops the message
    try:
        smtp.send(envelope.data + b".\r\n")
        code, resp = smtp.getreply()
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise AmbiguousSendError(
            f"{message_id}: connection lost after the message was sent ({type(exc).__name__}); "
            "it may have been delivered",
            message_id=message_id,
        ) from None
    if code != 250:
        # The server answered: it did not take the message, so this is not ambiguous.
        raise smtplib.SMTPDataError(code, resp)
    return refused


def _abandon(smtp: smtplib.SMTP) -> None:
    """RSET a refused transaction, as ``sendmail`` does; a server already gone needs none."""
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()
