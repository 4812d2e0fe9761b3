"""Sending into a folder: each message as an ``.eml`` file with an HTML preview and an index page.

For the demo and for laptops without an SMTP server.
"""

from __future__ import annotations

import contextlib
import email.policy
import email.utils
import hashlib
import html
import json
import os
import re
import tempfile
import threading
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

from .message import KIND_HEADER, NOTICE_HEADER
from .sending import CommitPoint

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
