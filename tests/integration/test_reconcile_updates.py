"""Reconcile's cancels and moves: the one-statement path (PostgreSQL, no job held as an ORM object)
gives the same rows as the ORM's UPDATEs (SQLite, or a session that holds a job)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from dunning.engine.reconcile import StoredJob, WantedJob, reconcile
from dunning.store.bulk import insert_rows
from dunning.store.models import Job
from dunning.store.unit import unit_of

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _row(key: str, subject: str, status: str, due: datetime) -> dict:
    return {
        "key": key,
        "kind": "lifecycle_notice",
        "queue": "jobs",
        "subject": subject,
        "payload": {"key": key},
        "status": status,
        "due_at": due,
        "claims": 0,
        "runs": 0,
        "crashes": 0,
        "created_at": NOW,
    }


STORED = [
    _row("lc:a1", "sub_a", "pending", NOW + timedelta(days=3)),  # no longer wanted: canceled
    _row("lc:a2", "sub_a", "pending", NOW + timedelta(days=5)),  # wanted later: moved
    _row("lc:b1", "sub_b", "pending", NOW + timedelta(days=2)),  # wanted at the same time: left
    _row("lc:b2", "sub_b", "finished", NOW - timedelta(days=1)),  # not pending: left
    _row("lc:b3", "sub_b", "pending", NOW + timedelta(days=9)),  # no longer wanted: canceled
    _row("lc:c1", "sub_c", "pending", NOW + timedelta(days=4)),  # another subject: left
]
WANTED = [
    WantedJob("lc:a2", "sub_a", NOW + timedelta(days=6, microseconds=123456), {"key": "a2"}),
    WantedJob("lc:b1", "sub_b", NOW + timedelta(days=2), {"key": "b1"}),
    WantedJob("lc:b4", "sub_b", NOW + timedelta(days=20), {"key": "b4"}),
]


def _run(sessions, *, hold_a_job: bool, read_first: bool) -> tuple[list[tuple], list[tuple[str, str]]]:
    with sessions() as s, s.begin():
        insert_rows(s, Job.__table__, STORED)
    with sessions() as s, s.begin():
        held = s.execute(select(Job).where(Job.key == "lc:a1")).scalar_one() if hold_a_job else None
        stored = None
        if read_first:  # what the re-plan's reads hand over on PostgreSQL
            stored = [
                StoredJob(*r)
                for r in s.execute(
                    select(Job.key, Job.subject, Job.status, Job.due_at).where(
                        Job.subject.in_(["sub_a", "sub_b"])
                    )
                )
            ]
        result = reconcile(
            s,
            kind="lifecycle_notice",
            queue="jobs",
            subjects=["sub_a", "sub_b"],
            wanted=WANTED,
            now=NOW,
            stored=stored,
        )
        unit_of(s).flush(s)  # the added job (the product's sessions do this at commit)
        if held is not None:
            assert held.status == "canceled"  # the ORM's UPDATE brought the object it holds up to date
    with sessions() as s:
        rows = [
            (j.key, j.status, j.due_at, j.finished_at is not None)
            for j in s.execute(select(Job).order_by(Job.key)).scalars()
        ]
    return rows, result.canceled


@pytest.mark.parametrize("hold_a_job", [False, True])
@pytest.mark.parametrize("read_first", [False, True])
def test_cancels_and_moves_give_the_same_rows_either_way(
    sessions, hold_a_job: bool, read_first: bool
) -> None:
    rows, canceled = _run(sessions, hold_a_job=hold_a_job, read_first=read_first)
    assert canceled == [("lc:a1", "sub_a"), ("lc:b3", "sub_b")]
    assert rows == [
        ("lc:a1", "canceled", NOW + timedelta(days=3), True),
        ("lc:a2", "pending", NOW + timedelta(days=6, microseconds=123456), False),
        ("lc:b1", "pending", NOW + timedelta(days=2), False),
        ("lc:b2", "finished", NOW - timedelta(days=1), False),
        ("lc:b3", "canceled", NOW + timedelta(days=9), True),
        ("lc:b4", "pending", NOW + timedelta(days=20), False),
        ("lc:c1", "pending", NOW + timedelta(days=4), False),
    ]
