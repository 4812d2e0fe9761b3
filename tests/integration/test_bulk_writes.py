"""One statement per table: the bulk writer gives the same rows as the ORM would, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dunning.engine.jobs import cancel_scheduled_retries
from dunning.store.bulk import Link, TableRows, allocate_ids, insert_rows, insert_tables, rows_by_ids
from dunning.store.models import Case, Job, Outbox, ProcessedEvent, TimelineEntry

pytestmark = pytest.mark.integration


def _job(key: str, *, payload: dict | None, due: datetime, case_id: int = 1) -> dict:
    return {
        "key": key,
        "kind": "retry",
        "queue": "dunning",
        "case_id": case_id,
        "outbox_id": None,
        "payload": payload,
        "status": "pending",
        "due_at": due,
        "retry_at": None,
        "lease_until": None,
        "claims": 0,
        "runs": 0,
        "crashes": 0,
        "created_at": due,
        "finished_at": None,
        "last_error": None,
    }


def test_rows_round_trip_with_types_conflicts_and_returning(sessions) -> None:
    paris = timezone(timedelta(hours=1))
    due = datetime(2026, 12, 1, 10, 0, tzinfo=paris)
    with sessions() as s, s.begin():
        returned = insert_rows(
            s,
            Job.__table__,
            [_job("a", payload=None, due=due), _job("b", payload={"manual": True, "n": [1, 2]}, due=due)],
            on_conflict="key",
            returning=("key", "id"),
        )
        assert sorted(r.key for r in returned) == ["a", "b"]
        # A conflicting key is skipped, and returns nothing; the new one is written.
        again = insert_rows(
            s,
            Job.__table__,
            [_job("a", payload={"x": 1}, due=due), _job("c", payload=None, due=due)],
            on_conflict="key",
            returning=("key", "id"),
        )
        assert [r.key for r in again] == ["c"]
    with sessions() as s:
        jobs = {j.key: j for j in s.execute(select(Job)).scalars()}
        assert set(jobs) == {"a", "b", "c"}
        assert jobs["a"].payload is None  # not replaced by the conflicting row
        assert jobs["b"].payload == {"manual": True, "n": [1, 2]}
        assert jobs["a"].due_at == due.astimezone(UTC)  # stored as the same instant, read back as UTC
        assert jobs["a"].due_at.tzinfo is not None
        ids = {r.key: r.id for r in returned}
        assert jobs["b"].id == ids["b"]
    # "No payload" must be SQL NULL: the retry-replacement query cancels by ``payload IS NULL``.
    with sessions() as s, s.begin():
        assert cancel_scheduled_retries(s, 1) == 2  # a and c; b is a manual retry and stays
    with sessions() as s:
        statuses = {j.key: j.status for j in s.execute(select(Job)).scalars()}
        assert statuses == {"a": "canceled", "b": "pending", "c": "canceled"}


def test_a_conflict_without_on_conflict_raises_integrity_error(sessions) -> None:
    now = datetime.now(UTC)
    row = {"id": "evt_1", "type": "invoice.paid", "occurred_at": now, "processed_at": now}
    with sessions() as s, s.begin():
        insert_rows(s, ProcessedEvent.__table__, [row])
    with pytest.raises(IntegrityError), sessions() as s, s.begin():
        insert_rows(s, ProcessedEvent.__table__, [row])


def test_naive_datetimes_are_refused_on_sqlite_and_read_as_utc_on_postgresql(sessions, db_url: str) -> None:
    naive = datetime(2026, 12, 1, 10, 0)
    row = {"id": "evt_1", "type": "invoice.paid", "occurred_at": naive, "processed_at": naive}
    if db_url.startswith("sqlite"):
        with pytest.raises(Exception, match="naive datetime"), sessions() as s, s.begin():
            insert_rows(s, ProcessedEvent.__table__, [row])
        return
    with sessions() as s, s.begin():
        insert_rows(s, ProcessedEvent.__table__, [row])
    with sessions() as s:
        stored = s.execute(select(ProcessedEvent.occurred_at)).scalar_one()
        assert stored == naive.replace(tzinfo=UTC)


def test_allocated_ids_are_fresh_and_unique(sessions) -> None:
    now = datetime.now(UTC)

    def case(case_id: int, invoice: str) -> dict:
        return {
            "id": case_id,
            "invoice_id": invoice,
            "subscription_id": "sub_1",
            "customer_id": "cus_1",
            "plan": "pro",
            "amount_minor": 4900,
            "currency": "EUR",
            "status": "open",
            "decline_code": "insufficient_funds",
            "first_decline_code": "insufficient_funds",
            "has_payment_method": True,
            "needs_new_payment_method": False,
            "attempts_made": 0,
            "scheduled_retries_made": 0,
            "card_update_retries_used": 0,
            "last_attempt_at": None,
            "opened_at": now,
            "suspended_at": None,
            "closed_at": None,
            "outcome": None,
            "recovered_minor": 0,
            "policy_version": "test",
        }

    with sessions() as s, s.begin():
        first = allocate_ids(s, Case.__table__, 3)
        assert len(set(first)) == 3
        # Ids taken but not written yet are not handed out again in the same transaction.
        second = allocate_ids(s, Case.__table__, 2, above=max(first))
        assert not set(first) & set(second)
        insert_rows(s, Case.__table__, [case(i, f"in_{i}") for i in first + second])
    with sessions() as s, s.begin():
        third = allocate_ids(s, Case.__table__, 2)
        assert min(third) > max(first + second)
        assert allocate_ids(s, Case.__table__, 0) == []
    with sessions() as s:
        assert sorted(s.execute(select(Case.id)).scalars()) == sorted(first + second)


def test_rows_by_ids_returns_the_rows_asked_for_and_only_those(sessions) -> None:
    now = datetime.now(UTC)
    with sessions() as s, s.begin():
        insert_rows(
            s,
            ProcessedEvent.__table__,
            [
                {"id": f"evt_{i}", "type": "invoice.paid", "occurred_at": now, "processed_at": now}
                for i in range(5)
            ],
        )
    with sessions() as s:
        assert rows_by_ids(s, ProcessedEvent.__table__, ("id",), []) == []
        rows = rows_by_ids(s, ProcessedEvent.__table__, ("id", "type"), ["evt_1", "evt_3", "evt_9"])
        assert sorted(tuple(r) for r in rows) == [("evt_1", "invoice.paid"), ("evt_3", "invoice.paid")]
        # Any number of ids goes through the same statement.
        assert len(rows_by_ids(s, ProcessedEvent.__table__, ("id",), [f"evt_{i}" for i in range(5)])) == 5


def _email(key: str, now: datetime) -> dict:
    return {
        "key": key,
        "kind": "payment_failed",
        "case_id": 1,
        "customer_id": "cus_1",
        "to_email": "a@example.com",
        "locale": "en",
        "variant": "soft",
        "subject": None,
        "html": None,
        "text": None,
        "message_id": f"<{key}@example.com>",
        "status": "pending",
        "send_after": now,
        "created_at": now,
        "sent_at": None,
        "attempts": 0,
        "last_error": None,
    }


def test_several_tables_in_one_call_with_rows_linked_by_key(sessions) -> None:
    """insert_tables: each table as insert_rows would; a linked row takes its parent's new id, or is skipped."""
    now = datetime.now(UTC)
    link = Link(field="outbox_key", parent="outbox", parent_key="key", column="outbox_id")
    with sessions() as s, s.begin():
        insert_rows(s, Outbox.__table__, [_email("old", now)])
        insert_rows(s, Job.__table__, [{**_job("send:old", payload=None, due=now), "outbox_id": None}])
    later = [
        _job("retry:1", payload=None, due=now + timedelta(days=1)),
        _job("send:late", payload=None, due=now),
    ]
    later[1]["outbox_key"] = "late"
    due = [
        {**_job(f"send:{k}", payload=None, due=now), "status": "claimed", "outbox_key": k}
        for k in ("new", "old")
    ]
    event = {"id": "evt_1", "type": "invoice.paid", "occurred_at": now, "processed_at": now}
    with sessions() as s, s.begin():
        returned = insert_tables(
            s,
            [
                TableRows(ProcessedEvent.__table__, [event]),
                TableRows(
                    Outbox.__table__,
                    [_email("new", now), _email("late", now), _email("old", now)],
                    on_conflict="key",
                ),
                TableRows(Job.__table__, later, on_conflict="key", link=link),
                TableRows(Job.__table__, due, on_conflict="key", returning=("id", "queue"), link=link),
                TableRows(TimelineEntry.__table__, []),
            ],
        )
    with sessions() as s:
        emails = {o.key: o.id for o in s.execute(select(Outbox)).scalars()}
        jobs = {j.key: j for j in s.execute(select(Job)).scalars()}
        assert set(emails) == {"old", "new", "late"}
        assert set(jobs) == {"send:old", "retry:1", "send:late", "send:new"}
        assert jobs["send:new"].outbox_id == emails["new"] and jobs["send:late"].outbox_id == emails["late"]
        assert jobs["retry:1"].outbox_id is None  # not linked: keeps its own value
        assert jobs["send:old"].outbox_id is None  # the email existed: its send job was not written again
        assert returned == [(jobs["send:new"].id, "dunning")]  # only the part that asked, only rows written
        assert s.execute(select(ProcessedEvent.id)).scalars().all() == ["evt_1"]


def test_insert_tables_without_the_parent_skips_the_linked_rows_and_is_atomic(sessions) -> None:
    now = datetime.now(UTC)
    link = Link(field="outbox_key", parent="outbox", parent_key="key", column="outbox_id")
    send = {**_job("send:x", payload=None, due=now), "outbox_key": "x"}
    event = {"id": "evt_1", "type": "invoice.paid", "occurred_at": now, "processed_at": now}
    with sessions() as s, s.begin():
        insert_tables(
            s,
            [
                TableRows(Outbox.__table__, [], on_conflict="key"),
                TableRows(
                    Job.__table__,
                    [send, _job("retry:1", payload=None, due=now)],
                    on_conflict="key",
                    link=link,
                ),
                TableRows(ProcessedEvent.__table__, [event]),
            ],
        )
    with sessions() as s:
        assert s.execute(select(Job.key)).scalars().all() == ["retry:1"]
    # A conflict where none is allowed fails the whole statement: the other tables keep nothing.
    with pytest.raises(IntegrityError), sessions() as s, s.begin():
        insert_tables(
            s,
            [
                TableRows(Job.__table__, [_job("retry:2", payload=None, due=now)], on_conflict="key"),
                TableRows(ProcessedEvent.__table__, [event]),
            ],
        )
    with sessions() as s:
        assert s.execute(select(Job.key)).scalars().all() == ["retry:1"]


def test_a_lookup_planned_each_time_is_never_a_prepared_statement(pg_url: str) -> None:
    """psycopg prepares a statement run often enough; ``plan_each_time`` keeps it unprepared."""
    from dunning.store.bulk import select_together
    from dunning.store.db import make_engine, make_sessionmaker
    from dunning.store.migrate import upgrade

    engine = make_engine(pg_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)

    def prepared(s, marker: str) -> int:
        return (
            s.connection()
            .exec_driver_sql(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", (f"%{marker}%",)
            )
            .scalar_one()
        )

    try:
        with sessions() as s, s.begin():
            threshold = s.connection().connection.driver_connection.prepare_threshold
            for _ in range(8):
                each_time = select_together(s, [("(SELECT %s + 1 AS each_time)", (1,))], plan_each_time=True)
                assert each_time == [2]
                assert select_together(s, [("(SELECT %s + 2 AS cached)", (1,))]) == [3]
            assert prepared(s, "each_time") == 0
            assert prepared(s, "cached") == 1  # the control: without it, psycopg did prepare
            assert s.connection().connection.driver_connection.prepare_threshold == threshold
        with sessions() as s, s.begin():
            driver = s.connection().connection.driver_connection
            with pytest.raises(Exception, match="division by zero"):
                select_together(s, [("(SELECT 1 / %s)", (0,))], plan_each_time=True)
            assert driver.prepare_threshold == threshold
    finally:
        engine.dispose()
