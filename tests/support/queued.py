"""What waits on a Dramatiq queue in Redis: the messages no worker has fetched yet."""

from __future__ import annotations

import json
from typing import Any


def queued_messages(client: Any, queue: str) -> list[dict[str, Any]]:
    """The messages on ``queue``'s Redis list, in order, decoded as a worker would fetch them.

    ``client`` is a redis-py client; ``queue`` a Dramatiq queue name (``dunning``,
    ``billing_events.DQ``). Ids whose body is gone are left out, as Dramatiq skips them.
    """
    ids = client.lrange(f"dramatiq:{queue}", 0, -1)
    bodies = client.hmget(f"dramatiq:{queue}.msgs", ids) if ids else []
    return [json.loads(body) for body in bodies if body is not None]


def queued_job_ids(client: Any, *queues: str) -> list[int]:
    """The ids of the jobs whose messages wait on ``queues`` (a message carries one id, or a list)."""
    args = [m["args"][0] for queue in queues for m in queued_messages(client, queue)]
    return [i for arg in args for i in (arg if isinstance(arg, list) else [arg])]
