"""PostgreSQL: what a re-plan reads besides the subscription rows, in one statement.

:func:`dunning.workflows.lifecycle.loading.load_facts` asks three questions
(which subscriptions have a case open, when each was last offered annual
billing, which lifecycle emails each has) and the reconcile a fourth (the
stored notice jobs of those subscriptions). Each statement costs the client
60-100 µs of CPU whatever its size; on PostgreSQL the four are the scalar
subqueries of one statement, their rows as JSON (the same predicates, so the
same answers and the same indexes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import orjson
from sqlalchemy.orm import Session

from dunning.engine.reconcile import StoredJob
from dunning.store.bulk import ANY_OF_JSON, ids_param, select_together
from dunning.workflows.lifecycle.notices import KINDS


@dataclass(frozen=True, slots=True)
class Found:
    """What :func:`load_facts` reads beside the rows (``open_cases``, ``last_offer``, ``sent``)."""

    open_cases: set[str]
    last_offer: dict[str, datetime]
    sent: dict[str, set[str]]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@cache
def _queries() -> tuple[str, ...]:
    kinds = ", ".join(f"'{k}'" for k in KINDS)
    return (
        "(SELECT json_agg(DISTINCT subscription_id) FROM cases"
        f" WHERE subscription_id = ANY({ANY_OF_JSON}) AND closed_at IS NULL)::text",
        "(SELECT json_agg(json_build_array(subscription_id, at)) FROM (SELECT subscription_id, max(created_at) AS at"
        f" FROM outbox WHERE subscription_id = ANY({ANY_OF_JSON}) AND kind = 'annual_offer'"
        " AND status NOT IN ('skipped', 'failed') AND key <> %s GROUP BY subscription_id) AS o)::text",
        "(SELECT json_agg(json_build_array(subscription_id, key)) FROM outbox"
        f" WHERE subscription_id = ANY({ANY_OF_JSON}) AND kind IN ({kinds})"
        " AND status <> 'skipped' AND key <> %s)::text",
        "(SELECT json_agg(json_build_array(key, subject, status, due_at)) FROM jobs"
        f" WHERE kind = %s AND subject = ANY({ANY_OF_JSON}))::text",
    )


def replan_reads(session: Session, ids: Sequence[str], job_kind: str) -> tuple[Found, list[StoredJob]]:
    """The facts beside the rows of ``ids`` and their stored ``job_kind`` jobs, in one statement."""
    ids_json = ids_param(ids)
    cases, offers, sent_rows, jobs = select_together(
        session,
        list(
            zip(
                _queries(),
                ((ids_json,), (ids_json, ""), (ids_json, ""), (job_kind, ids_json)),
                strict=True,
            )
        ),
        # The jobs lookup: planned for the table's size now, not when it was small.
        plan_each_time=True,
    )
    sent: dict[str, set[str]] = defaultdict(set)
    for sub_id, key in orjson.loads(sent_rows) if sent_rows else ():
        sent[sub_id].add(key)
    found = Found(
        open_cases=set(orjson.loads(cases) if cases else ()),
        last_offer={sub_id: _utc(at) for sub_id, at in (orjson.loads(offers) if offers else ())},
        sent=sent,
    )
    stored = [
        StoredJob(key, subject, status, _utc(due_at))
        for key, subject, status, due_at in (orjson.loads(jobs) if jobs else ())
    ]
    return found, stored
