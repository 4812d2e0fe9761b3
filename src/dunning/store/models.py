"""Tables. Every effect has a natural idempotency key backed by a UNIQUE constraint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        from datetime import UTC

        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        from datetime import UTC

        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _partial_index(name: str, column: str, where: str) -> Index:
    """An index of ``column`` over the rows matching ``where`` only, on PostgreSQL and SQLite alike."""
    return Index(name, column, sqlite_where=text(where), postgresql_where=text(where))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str | None] = mapped_column(String(35))
    timezone: Mapped[str | None] = mapped_column(String(64))
    pm_present: Mapped[bool] = mapped_column(Boolean, default=False)
    pm_brand: Mapped[str | None] = mapped_column(String(40))
    pm_last4: Mapped[str | None] = mapped_column(String(4))
    pm_exp_month: Mapped[int | None] = mapped_column(Integer)
    pm_exp_year: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # occurred_at of the newest event applied to the profile / the payment method:
    # an older event processed late (parallel consumers, redelivery) must not win.
    source_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    pm_source_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    plan: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    interval: Mapped[str] = mapped_column(String(10))
    interval_count: Mapped[int] = mapped_column(Integer, default=1)
    current_period_end: Mapped[datetime] = mapped_column(UtcDateTime)
    trial_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    # Tenure starts here (contract v1.1 ``started_at``), else when we first saw the subscription.
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    first_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # A temporary upgrade (a taste of a higher tier) and when we first heard of it: the
    # taste's length decides how many reminders it gets.
    upgrade_plan: Mapped[str | None] = mapped_column(String(255))
    upgrade_ends_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    upgrade_revert_to: Mapped[str | None] = mapped_column(String(255))
    upgrade_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # What we told the billing system about access; the billing system owns the rest.
    access: Mapped[str] = mapped_column(String(12), default="active")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    source_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # see Customer.source_at


class Invoice(Base):
    """Invoices we heard of; ``paid`` guards against a late failure event opening a case."""

    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(255), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(10))  # open | paid
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ProcessedEvent(Base):
    """Event ids already applied: redelivery of an id is a no-op."""

    __tablename__ = "processed_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    subscription_id: Mapped[str] = mapped_column(String(255), index=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    plan: Mapped[str] = mapped_column(String(255))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(12), index=True)
    decline_code: Mapped[str] = mapped_column(String(64))
    first_decline_code: Mapped[str] = mapped_column(String(64))
    has_payment_method: Mapped[bool] = mapped_column(Boolean)
    needs_new_payment_method: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts_made: Mapped[int] = mapped_column(Integer, default=0)
    scheduled_retries_made: Mapped[int] = mapped_column(Integer, default=0)
    card_update_retries_used: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    suspended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # How it ended: retry | card_update | paid_elsewhere | canceled | downgraded | subscription_canceled
    outcome: Mapped[str | None] = mapped_column(String(30))
    recovered_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    policy_version: Mapped[str] = mapped_column(String(64))


class ChargeAttempt(Base):
    """One charge we asked for, recorded with its key BEFORE the call is made."""

    __tablename__ = "charge_attempts"
    __table_args__ = (UniqueConstraint("case_id", "attempt_no"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    invoice_id: Mapped[str] = mapped_column(String(255))
    attempt_no: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    trigger: Mapped[str] = mapped_column(String(20))  # schedule | card_update
    status: Mapped[str] = mapped_column(String(12))  # pending | succeeded | failed | unknown
    decline_code: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Job(Base):
    """Work due at a time: the schedule lives here, not in the broker.

    ``due_at`` is business time (the injected clock); ``lease_until`` and
    ``retry_at`` are wall-clock times, because they are about processes dying,
    not about customers.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        _partial_index("ix_jobs_pending_due", "due_at", "status = 'pending'"),
        _partial_index("ix_jobs_claimed_lease", "lease_until", "status = 'claimed'"),
        # A job has a case or a subject: each index skips the jobs without one (every insert
        # paid for a NULL entry). Lookups compare with a value, which implies NOT NULL.
        _partial_index("ix_jobs_case_id", "case_id", "case_id IS NOT NULL"),
        _partial_index("ix_jobs_subject", "subject", "subject IS NOT NULL"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    queue: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(Integer)
    # What a job without a case is about (a subscription id for lifecycle notices): reconcile
    # finds the pending jobs of the subjects it replans by this column.
    subject: Mapped[str | None] = mapped_column(String(255))
    outbox_id: Mapped[int | None] = mapped_column(Integer)
    # none_as_null: "no payload" must be SQL NULL, which the retry-replacement query relies on.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    status: Mapped[str] = mapped_column(String(10))  # pending | claimed | done | canceled | dead
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    # Runs that died while running alone (their worker died or hung): poison detection.
    crashes: Mapped[int] = mapped_column(Integer, default=0)
    # Set once a run died with other work beside it: from then on the job only starts alone
    # in its process, so that a further death is its own doing (see docs/architecture.md).
    alone: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The worker process (``workers.id``) running the current run; read when that worker dies.
    worker_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class Worker(Base):
    """A live worker process and its last heartbeat (wall time), for crash recovery.

    ``id`` is the process's Dramatiq broker id, which also names the set of
    messages it fetched from Redis; the scheduler recovers both when the
    heartbeat stops.
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Outbox(Base):
    """An email decided on, written in the same transaction as the decision."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)  # kind:case:step
    kind: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # The subscription the email is about (its timeline; "when did we last make this offer").
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    customer_id: Mapped[str] = mapped_column(String(255))
    # Indexed: the per-recipient caps read what an address was sent (dunning.engine.delivery).
    to_email: Mapped[str] = mapped_column(String(320), index=True)
    locale: Mapped[str] = mapped_column(String(35))
    # The decision's wording choice (e.g. the decline class); the words themselves are
    # rendered when the email leaves, from the facts of that moment, and kept here.
    variant: Mapped[str | None] = mapped_column(String(40))
    subject: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(10))  # pending | sending | sent | failed | skipped
    send_after: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class TimelineEntry(Base):
    """What happened to a subscription, in business time, for support and ops."""

    __tablename__ = "timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(255), index=True)
    case_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text)


class DeadLetter(Base):
    """A message we refused or gave up on, kept with its reason until ops act."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    queue: Mapped[str] = mapped_column(String(80))
    actor: Mapped[str] = mapped_column(String(80))
    payload: Mapped[str] = mapped_column(Text)  # the original message, JSON
    field: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    error_type: Mapped[str] = mapped_column(String(80))
    parked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    requeued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PriceMigration(Base):
    """A price change for the subscriptions on one plan, currency and interval (``dunning prices``).

    ``draft`` -> ``launched`` (-> ``paused`` -> ``launched``) -> ``completed``, or ``canceled``
    at any point before completion (what was applied stays applied).
    """

    __tablename__ = "price_migrations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(12))
    plan: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    interval: Mapped[str] = mapped_column(String(10))
    new_amount_minor: Mapped[int] = mapped_column(BigInteger)
    effective_at: Mapped[datetime] = mapped_column(UtcDateTime)
    notice_days: Mapped[int] = mapped_column(Integer)
    grandfather_months: Mapped[int] = mapped_column(Integer)
    # [{"kind": "step_up", "percent": 10, "months": 6}, {"kind": "annual_lock"},
    #  {"kind": "downgrade", "plan": "basic", "amount_minor": 1900}]
    offers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    guardrail_percent: Mapped[int] = mapped_column(Integer)
    # Auto-pause: more than this share of notified subscribers canceling within the window.
    cancel_alert_percent: Mapped[int] = mapped_column(Integer, default=5)
    cancel_alert_days: Mapped[int] = mapped_column(Integer, default=14)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    launched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Why it is paused (an operator, or the cancellation alert), shown by ``prices status``.
    paused_reason: Mapped[str | None] = mapped_column(Text)
    canceled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PriceMigrationMember(Base):
    """One subscription in a migration: its terms, its planned dates, where it stands, its choice.

    Computed set-based at plan time (``INSERT ... SELECT`` from subscriptions) and kept
    up to date by the workflow; ``state``: pending | excluded | notified | reminded |
    applied | skipped | deferred.
    """

    __tablename__ = "price_migration_members"
    __table_args__ = (Index("ix_price_migration_members_state", "migration_id", "state"),)

    migration_id: Mapped[str] = mapped_column(ForeignKey("price_migrations.id"), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    customer_id: Mapped[str] = mapped_column(String(255))
    current_amount_minor: Mapped[int] = mapped_column(BigInteger)
    new_amount_minor: Mapped[int] = mapped_column(BigInteger)
    increase_minor: Mapped[int] = mapped_column(BigInteger)
    # Hundredths of a percent (1234 = 12.34 %): exact, and sortable in SQL.
    increase_bp: Mapped[int] = mapped_column(Integer)
    above_guardrail: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(12))
    notice_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    applies_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # step_up | annual_lock | downgrade | none (the customer said "keep the new price"); NULL: no choice yet.
    choice: Mapped[str | None] = mapped_column(String(20))
    choice_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reason: Mapped[str | None] = mapped_column(Text)  # why skipped, deferred or excluded


class SimulatedClock(Base):
    """The simulated clock shared by every process (one row)."""

    __tablename__ = "simulated_clock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    now: Mapped[datetime] = mapped_column(UtcDateTime)


# Tables in modules of their own register on ``Base.metadata`` when imported; import them here so
# that whoever imports the models (Alembic, the tests) sees the whole schema.
from dunning.store import mail_models as _mail_models  # noqa: E402, F401
from dunning.store import ops_models as _ops_models  # noqa: E402, F401
