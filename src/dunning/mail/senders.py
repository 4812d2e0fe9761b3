"""Build MIME messages from rendered notices and send them: over SMTP, or into a folder of files.

Both senders are idempotent per Message-ID as far as they can be: the file
sender overwrites the same file; the SMTP sender keeps the caller's Message-ID
(derived from the notice's idempotency key) so that a re-send after an
ambiguous failure is recognisable downstream.

Errors never carry the recipient's address or the body: only message ids and
SMTP codes, because they end up in logs, dead letters and metrics.
"""

from __future__ import annotations

import contextlib
import email.policy
import email.utils
import hashlib
import html
import json
import logging
import os
import re
import smtplib
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .breaker import CircuitBreaker, CircuitOpen
from .render import RenderedEmail

log = logging.getLogger(__name__)

#: Headers the outbox runner sets: the notice's idempotency key, and its kind.
NOTICE_HEADER = "X-Dunning-Notice"
KIND_HEADER = "X-Dunning-Kind"


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


class SendError(Exception):
    """A delivery failure. ``code`` is the SMTP reply code when there was one."""

    def __init__(self, message: str, *, message_id: str | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.code = code


class TransientSendError(SendError):
    """Delivery failed for now (4xx, network, timeout) even after retrying: try again later."""


class PermanentSendError(SendError):
    """The server refused the message for good (5xx): retrying the same message will not help."""


class AmbiguousSendError(SendError):
    """The connection failed after the point of no return: the message may have been delivered.

    Never retried here: a retry could deliver it twice.
    """


def message_id_for(key: str, domain: str = "dunning.invalid") -> str:
    """A stable RFC 5322 Message-ID for an idempotency key such as ``payment_failed:sub_42:2``.

    Keeps a readable prefix for people grepping logs and adds a hash so that
    keys differing only in characters not allowed in a Message-ID stay distinct.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", ".", key).strip(".")[:80] or "notice"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    return f"<{readable}.{digest}@{domain}>"


def build_message(
    rendered: RenderedEmail,
    *,
    to: str,
    sender: str,
    message_id: str,
    headers: dict[str, str] | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative message (plain text first, then HTML) ready for any ``Sender``.

    ``date`` defaults to now; the demo passes its simulated clock so that the
    outbox reads like the timeline it simulates.
    """
    # The default policy (LF line ends) for callers; smtplib and FileSender write CRLF themselves.
    msg = EmailMessage(policy=email.policy.default)
    msg["Subject"] = rendered.subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = email.utils.format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    msg["Message-ID"] = message_id if message_id.startswith("<") else f"<{message_id}>"
    # RFC 3834: tells auto-responders (vacation replies) not to answer a machine.
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        del msg[name]
        msg[name] = value
    msg.set_content(rendered.text, subtype="plain", charset="utf-8")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return msg


def _message_id(msg: EmailMessage) -> str:
    return str(msg.get("Message-ID", "<no-message-id>"))


# ---------------------------------------------------------------------------
# SMTP


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


def _classify(exc: BaseException) -> str | None:
    """``"retry"``, ``"permanent"`` or ``"config"`` for a delivery failure; None for anything else (a bug).

    "config" (bad credentials, a missing extension) is not about this message:
    retrying now will not help, but neither should the notice be given up, so
    it surfaces as a ``TransientSendError`` without in-loop retries.
    """
    if isinstance(exc, (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError)):
        return "config"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return "permanent" if codes and all(500 <= code < 600 for code in codes) else "retry"
    if isinstance(exc, smtplib.SMTPResponseException):
        return "permanent" if 500 <= exc.smtp_code < 600 else "retry"
    # Disconnects, refused connections, resets, DNS failures, timeouts (socket.timeout is an
    # OSError) and TLS errors: the network or the server had a bad moment.
    if isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError, socket.timeout, OSError)):
        return "retry"
    if isinstance(exc, smtplib.SMTPException):
        return "config"  # e.g. "no suitable authentication method"
    return None


def _code(exc: BaseException) -> int | None:
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        return min(code for code, _ in exc.recipients.values())
    return None


def _describe(exc: BaseException) -> str:
    """An exception summary safe for logs: class name and codes, never the server's free text.

    Servers often quote the recipient in their reply ("550 <bob@example.com>: no such user").
    """
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__} {exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return f"SMTPRecipientsRefused {','.join(map(str, codes))}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} errno {exc.errno}"
    return type(exc).__name__


class SmtpSender:
    """Delivers messages through an SMTP server, retrying transient failures with backoff.

    ``url`` is ``smtp://[user:pass@]host[:port]`` (``?starttls=1`` to upgrade
    the connection) or ``smtps://...`` (TLS from the first byte); user and
    password are percent-decoded. ``attempts`` counts the first try; waits
    between tries grow from ``wait`` seconds, doubling, capped at ``max_wait``.
    One connection per message: simple and always correct; a queue worker
    sends a few messages a second, far from where connection reuse matters.
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

    def __repr__(self) -> str:
        # Never the password: this object may be printed in a traceback.
        c = self._config
        scheme = "smtps" if c.implicit_tls else "smtp"
        return f"SmtpSender({scheme}://{c.host}:{c.port}, starttls={c.starttls}, attempts={self.attempts})"

    def send(self, msg: EmailMessage, *, commit_point: CommitPoint | None = None) -> None:
        """Deliver ``msg``; raise ``PermanentSendError`` on a 5xx, ``TransientSendError`` when retries run out."""
        message_id = _message_id(msg)
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.wait, max=self.max_wait),
            retry=retry_if_exception(lambda exc: _classify(exc) == "retry"),
            before_sleep=lambda state: log.warning(
                "smtp send %s failed (attempt %d): %s; retrying",
                message_id,
                state.attempt_number,
                _describe(state.outcome.exception()) if state.outcome else "?",
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
            retrying(self._send_once, msg, message_id, commit_point)
            self.breaker.success()
        except PermanentSendError:
            self.breaker.success()  # the server is up; it just refused this message
            raise
        except SendError:
            self.breaker.failure()
            raise
        except Exception as exc:
            kind = _classify(exc)
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
                    f"{message_id}: refused ({_describe(exc)})", message_id=message_id, code=_code(exc)
                ) from None
            if kind == "config":
                raise TransientSendError(
                    f"{message_id}: SMTP configuration problem ({_describe(exc)})",
                    message_id=message_id,
                    code=_code(exc),
                ) from None
            raise TransientSendError(
                f"{message_id}: not delivered after {tries} attempt(s) ({_describe(exc)})",
                message_id=message_id,
                code=_code(exc),
            ) from None

    def _connect(self) -> smtplib.SMTP:
        c = self._config
        if c.implicit_tls:
            context = self._ssl_context or ssl.create_default_context()
            return smtplib.SMTP_SSL(
                c.host, c.port, local_hostname=self._local_hostname, timeout=self.timeout_s, context=context
            )
        return smtplib.SMTP(c.host, c.port, local_hostname=self._local_hostname, timeout=self.timeout_s)

    def _send_once(self, msg: EmailMessage, message_id: str, commit_point: CommitPoint | None = None) -> None:
        c = self._config
        smtp = self._connect()
        try:
            smtp.ehlo()
            if c.starttls:
                smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                smtp.ehlo()
            if c.username is not None:
                smtp.login(c.username, c.password or "")
            refused = _transmit(smtp, msg, message_id, commit_point)
        finally:
            # No QUIT: after the 250 the message is accepted and waiting for 221 only widens the
            # window in which a crash leaves the delivery unknown; in any other state (say, in
            # the middle of DATA) a QUIT would be read as message text and hang.
            smtp.close()
        if refused:
            # Some recipients accepted it, some not. Retrying would send it again to
            # the accepted ones, so this is final for this message.
            codes = sorted({code for code, _ in refused.values()})
            raise PermanentSendError(
                f"{message_id}: some recipients refused ({','.join(map(str, codes))})",
                message_id=message_id,
                code=codes[0],
            )


def _transmit(
    smtp: smtplib.SMTP, msg: EmailMessage, message_id: str, commit_point: CommitPoint | None
) -> dict[str, tuple[int, bytes]]:
    """MAIL, RCPT, DATA by hand, so that ``commit_point`` runs between the 354 and the body.

    ``smtplib.SMTP.send_message`` offers no such hook; without it there is no telling
    "not delivered" (safe to retry) from "maybe delivered" (a retry could duplicate).
    """
    sender = str(msg["Sender"] or msg["From"])
    recipients = [addr for _, addr in email.utils.getaddresses([str(v) for v in msg.get_all("To", [])])]
    recipients += [addr for _, addr in email.utils.getaddresses([str(v) for v in msg.get_all("Cc", [])])]
    body = msg.as_bytes(policy=email.policy.SMTP)
    code, resp = smtp.mail(email.utils.parseaddr(sender)[1])
    if code != 250:
        smtp._rset()  # type: ignore[attr-defined]
        raise smtplib.SMTPSenderRefused(code, resp, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for rcpt in recipients:
        code, resp = smtp.rcpt(rcpt)
        if code not in (250, 251):
            refused[rcpt] = (code, resp)
    if len(refused) == len(recipients):
        smtp._rset()  # type: ignore[attr-defined]
        raise smtplib.SMTPRecipientsRefused(refused)
    smtp.putcmd("data")
    code, resp = smtp.getreply()
    if code != 354:
        smtp._rset()  # type: ignore[attr-defined]
        raise smtplib.SMTPDataError(code, resp)
    if commit_point is not None:
        commit_point()  # if this raises, the connection closes and the server drops the message
    data = re.sub(rb"(?m)^\.", b"..", body)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    try:
        smtp.send(data + b".\r\n")
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


# ---------------------------------------------------------------------------
# Files


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def safe_file_stem(message_id: str) -> str:
    """A file name stem for a Message-ID: readable, portable, and distinct for distinct ids."""
    raw = message_id.strip().strip("<>")
    stem = _UNSAFE.sub("_", raw).lstrip(".")[:120]
    if stem != raw or not stem:
        # Replacing characters could make two ids collide; a short hash keeps them apart.
        stem = f"{stem}-{hashlib.sha256(raw.encode('utf-8')).hexdigest()[:10]}".lstrip("-")
    return stem


def _atomic_write(path: Path, data: bytes) -> None:
    # No fsync: the outbox row in the database is the durable record, and a
    # re-send rewrites the same file. Atomicity is what readers need.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the outbox is meant to be browsed
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _html_part(msg: EmailMessage) -> str | None:
    part = msg.get_body(preferencelist=("html",))
    if part is None:
        return None
    content = part.get_content()
    return content if isinstance(content, str) else None


class FileSender:
    """Writes each message to ``<directory>/<message-id>.eml`` (plus an ``.html`` preview) and indexes it.

    For the demo and laptops without an SMTP server. Same Message-ID, same
    file: a re-sent notice overwrites its file instead of adding a second one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()

    @property
    def index_jsonl(self) -> Path:
        """The append-only log of sends (one JSON object per line)."""
        return self.directory / "index.jsonl"

    def send(self, msg: EmailMessage, *, commit_point: CommitPoint | None = None) -> None:
        """Write the ``.eml`` and ``.html`` atomically and append a line to ``index.jsonl``."""
        message_id = msg.get("Message-ID")
        if not message_id:
            raise ValueError("message has no Message-ID: FileSender names files after it")
        self.directory.mkdir(parents=True, exist_ok=True)
        if commit_point is not None:
            commit_point()
        stem = safe_file_stem(str(message_id))
        eml_name, html_name = f"{stem}.eml", f"{stem}.html"
        _atomic_write(self.directory / eml_name, msg.as_bytes(policy=email.policy.SMTP))
        html_body = _html_part(msg)
        if html_body is not None:
            _atomic_write(self.directory / html_name, html_body.encode("utf-8"))
        entry = {
            "time": _message_time(msg).astimezone(UTC).isoformat(),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            # The kind header when present; the notice header alone still says what it is.
            "kind": str(msg[KIND_HEADER] or msg[NOTICE_HEADER] or "") or None,
            "notice": str(msg[NOTICE_HEADER]) if msg[NOTICE_HEADER] else None,
            "file": eml_name,
            "html": html_name if html_body is not None else None,
            "message_id": str(message_id),
        }
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            # One write() on an O_APPEND descriptor: lines from several worker processes do not interleave.
            fd = os.open(self.index_jsonl, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def entries(self) -> list[dict[str, str | None]]:
        """Index entries, one per file (the latest send wins), newest first."""
        latest: dict[str, dict[str, str | None]] = {}
        try:
            lines = self.index_jsonl.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash must not hide the others
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                latest.pop(entry["file"], None)  # keep dict order = order of last send
                latest[entry["file"]] = entry
        return sorted(latest.values(), key=lambda e: str(e.get("time") or ""), reverse=True)

    def write_index(self) -> Path:
        """Write ``<directory>/index.html``: one row per message, with links to the ``.eml`` and preview."""
        self.directory.mkdir(parents=True, exist_ok=True)
        rows = []
        for entry in self.entries():
            e = {k: html.escape(str(v)) if v is not None else "" for k, v in entry.items()}
            eml_link = f'<a href="{html.escape(quote(str(entry["file"]), safe="@"))}">.eml</a>'
            preview = entry.get("html")
            preview_link = (
                f'<a href="{html.escape(quote(str(preview), safe="@"))}">{e["subject"]}</a>'
                if preview
                else e["subject"]
            )
            rows.append(
                f"<tr><td>{e['time']}</td><td>{e['to']}</td><td>{e.get('kind', '')}</td>"
                f"<td>{preview_link}</td><td>{eml_link}</td></tr>"
            )
        page = _INDEX_PAGE.format(count=len(rows), rows="\n".join(rows))
        path = self.directory / "index.html"
        _atomic_write(path, page.encode("utf-8"))
        return path


def _message_time(msg: EmailMessage) -> datetime:
    """The message's Date header (the simulated clock in the demo), or now."""
    value = msg.get("Date")
    if value:
        try:
            parsed = email.utils.parsedate_to_datetime(str(value))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)


_INDEX_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Outbox ({count})</title>
<style>
  body {{ font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px; color: #1f2937; }}
  table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
  th, td {{ text-align: left; padding: 6px 10px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }}
  th {{ background: #f3f4f6; }}
  td:first-child {{ white-space: nowrap; font-variant-numeric: tabular-nums; }}
</style>
</head>
<body>
<h1>Outbox</h1>
<p>{count} message(s), newest first. Open a subject for the HTML preview, or the .eml in a mail client.</p>
<table>
<thead><tr><th>Time (UTC)</th><th>To</th><th>Kind</th><th>Subject</th><th>File</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


def sender_from_url(smtp_url: str | None, outbox_dir: Path) -> Sender:
    """An ``SmtpSender`` when a URL is configured, else a ``FileSender`` writing to ``outbox_dir``."""
    if smtp_url and smtp_url.strip():
        breaker = CircuitBreaker(
            threshold=int(os.environ.get("DUNNING_SMTP_BREAKER_FAILURES", "5")),
            cooldown_s=float(os.environ.get("DUNNING_SMTP_BREAKER_COOLDOWN_S", "30")),
        )
        return SmtpSender(smtp_url.strip(), breaker=breaker)
    return FileSender(outbox_dir)
