"""The price-migration workflow's part of a group commit: which subscriptions have members on their way.

Most subscriptions are in no live migration, and for those a fact change has
nothing to do here; asking once per event (:func:`.state.live_members`) cost a
statement each. The batch asks once for all the subscriptions its
``subscription.upserted`` events change (on PostgreSQL inside the engine's one
lookup statement). An upsert of a subscription that does have live members runs a
barrier first and reacts at once, as it would alone, so its lines come in the same
order as outside a batch.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from dunning import contract as c
from dunning.engine.batch import batch_of
from dunning.store.bulk import ANY_OF_JSON, ids_param
from dunning.store.models import PriceMigration, PriceMigrationMember
from dunning.workflows.price_migrations.rules import OPEN_STATES
from dunning.workflows.price_migrations.state import LIVE

#: The name this workflow registers under (the key of its part of a batch).
WORKFLOW_NAME = "price_migrations"

_PG_LIVE = (
    "(SELECT json_agg(DISTINCT m.subscription_id) FROM price_migration_members m"
    " JOIN price_migrations p ON p.id = m.migration_id"
    f" WHERE m.subscription_id = ANY({ANY_OF_JSON})"
    f" AND m.state IN ({', '.join(repr(s) for s in OPEN_STATES)})"
    f" AND p.status IN ({', '.join(repr(s) for s in LIVE)}))::text"
)


def _upserted(events: list[c.Event]) -> list[str]:
    return sorted({e.data.subscription.id for e in events if isinstance(e, c.SubscriptionUpserted)})


class PricesBatch:
    """The price-migration workflow's part of a group commit (:mod:`dunning.engine.batch`)."""

    def __init__(self) -> None:
        self.checked: set[str] = set()  # subscriptions asked about
        # Those of them with members on their way. Kept across barriers: while events are
        # applied, members only leave the live states (a launch adds them in its own transaction).
        self.live: set[str] = set()

    def prefetch(self, session: Session, events: list[c.Event]) -> None:
        """Which of the upserted subscriptions have members on their way (one statement)."""
        ids = _upserted(events)
        if not ids:
            return
        found = session.execute(
            select(PriceMigrationMember.subscription_id)
            .join(PriceMigration, PriceMigration.id == PriceMigrationMember.migration_id)
            .where(
                PriceMigrationMember.subscription_id.in_(ids),
                PriceMigrationMember.state.in_(OPEN_STATES),
                PriceMigration.status.in_(LIVE),
            )
        ).scalars()
        self.checked.update(ids)
        self.live.update(found)

    def prefetch_sql(self, events: list[c.Event]) -> tuple[str, tuple[Any, ...]] | None:
        """PostgreSQL: the same question as a scalar subquery of the engine's one statement."""
        ids = _upserted(events)
        return (_PG_LIVE, (ids_param(ids),)) if ids else None

    def prefetched(self, session: Session, events: list[c.Event], found: Any) -> None:
        """Keep what :meth:`prefetch_sql`'s subquery returned."""
        self.checked.update(_upserted(events))
        self.live.update(orjson.loads(found) if found else ())

    def batchable(self, event: c.Event) -> bool:
        """Everything but an upsert of a subscription with live members (or one not asked about)."""
        if isinstance(event, c.SubscriptionUpserted):
            sub = event.data.subscription.id
            return sub in self.checked and sub not in self.live
        return True

    def forget(self) -> None:
        """Nothing to drop (see ``live``)."""

    def finish(self, session: Session) -> None:
        """Nothing deferred."""

    def quiet(self, subscription_id: str) -> bool:
        """Whether the subscription is known to have no member on its way."""
        return subscription_id in self.checked and subscription_id not in self.live


def prices_batch(session: Session) -> PricesBatch | None:
    """This workflow's part of the session's group commit, if it is one."""
    batch = batch_of(session)
    part = batch.parts.get(WORKFLOW_NAME) if batch is not None else None
    return part if isinstance(part, PricesBatch) else None
