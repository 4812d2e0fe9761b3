"""What operators look at and do, one module per concern (data apart from rendering).

- :mod:`.queues` (+ :mod:`.broker_state`): ``dunning queues`` — queues, scheduler backlog, workers;
- :mod:`.dlq`, :mod:`.audit`: dead-letter filters, requeue and purge with their audit;
- :mod:`.controls`: ``dunning pause`` / ``resume`` of notice kinds;
- :mod:`.preview`: ``dunning scheduler --dry-run``;
- :mod:`.report_data` (queries) and :mod:`.report_view` (rendering): ``dunning report``;
- :mod:`.legacy`: the first queue summary, read by the ops page and ``/metrics``.

The names imported here were ``dunning.ops``'s before it became a package.
"""

from dunning.ops.legacy import QueueDepth, Snapshot, queue_depths, queue_snapshot, wall_now
from dunning.ops.report_view import print_report

__all__ = ["QueueDepth", "Snapshot", "print_report", "queue_depths", "queue_snapshot", "wall_now"]
