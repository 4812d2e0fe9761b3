"""Dead letters that could not reach the database: kept in a Redis list until it is back.

A message that fails for good (``DeadLetters``), or bytes a consumer refuses, are parked in the
``dead_letters`` table. While the database is down that insert fails; the message itself still
lands in Dramatiq's own dead-letter set (``<queue>.XQ``, expired after 7 days, no requeue
command, no reason kept), and before this module that was the only trace. Now the row that
could not be written (with its reason) is pushed on :data:`UNPARKED_KEY`, and the scheduler
writes it to the table at its next pass (:func:`drain`); parking is idempotent per message id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

#: The Redis list of dead-letter rows waiting for the database (JSON, oldest first).
UNPARKED_KEY = "dunning:unparked"
#: Rows written per call of :func:`drain` (a scheduler pass); the rest wait for the next one.
DRAIN_BATCH = 200


def encode_row(row: dict[str, Any]) -> str:
    """A dead-letter row as JSON (``parked_at`` as ISO 8601)."""
    out = dict(row)
    if isinstance(out.get("parked_at"), datetime):
        out["parked_at"] = out["parked_at"].isoformat()
    return json.dumps(out, separators=(",", ":"))


def decode_row(data: bytes | str) -> dict[str, Any]:
    """Back from :func:`encode_row`."""
    row = json.loads(data)
    row["parked_at"] = datetime.fromisoformat(row["parked_at"])
    return row


def stash(client: Any, row: dict[str, Any]) -> bool:
    """Keep a row the database refused; False (logged) if Redis refuses too."""
    try:
        client.rpush(UNPARKED_KEY, encode_row(row))
    except Exception:
        log.exception("could not keep dead letter %s in Redis either", row.get("message_id"))
        return False
    return True


def pending(client: Any) -> int:
    """Rows waiting for the database."""
    return int(client.llen(UNPARKED_KEY))


def drain(client: Any, park: Callable[[dict[str, Any]], None], *, limit: int = DRAIN_BATCH) -> int:
    """Write waiting rows to the table, oldest first; each leaves Redis only once written.

    If ``park`` raises (the database is still down), the row stays and the exception
    propagates. Several schedulers may drain at once: a row written twice is one row
    (``park`` upserts by message id), and each removes only the entry it read (``LREM``).
    """
    done = 0
    while done < limit:
        data = client.lindex(UNPARKED_KEY, 0)
        if data is None:
            break
        try:
            row = decode_row(data)
        except (ValueError, KeyError, TypeError):
            log.error("dropping an unreadable entry of %s: %r", UNPARKED_KEY, data[:200])
            client.lrem(UNPARKED_KEY, 1, data)
            continue
        park(row)
        client.lrem(UNPARKED_KEY, 1, data)
        done += 1
    if done:
        log.warning("wrote %d dead letters kept in Redis while the database was down", done)
    return done
