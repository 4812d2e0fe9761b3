"""The simulated clock, stored in the database so every process shares it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dunning.store.models import SimulatedClock


class DatabaseClock:
    """A clock that starts at the real time of first use and moves only when advanced."""

    def __init__(
        self, factory: sessionmaker[Session], read_factory: sessionmaker[Session] | None = None
    ) -> None:
        self._factory = factory
        # Reads go through a separate engine on SQLite: ``now()`` is called inside write
        # transactions, and a second BEGIN IMMEDIATE from the same thread would deadlock.
        self._read = read_factory or factory

    def now(self) -> datetime:
        with self._read() as session:
            row = session.get(SimulatedClock, 1)
            if row is not None:
                return row.now
        return self._initialise()

    def _initialise(self) -> datetime:
        start = datetime.now(UTC).replace(microsecond=0)
        with self._factory() as session, session.begin():
            row = session.get(SimulatedClock, 1, with_for_update=True)
            if row is None:
                session.add(SimulatedClock(id=1, now=start))
                return start
            return row.now

    def advance(self, delta: timedelta) -> datetime:
        """Move the shared clock forward; returns the new time."""
        if delta < timedelta(0):
            raise ValueError("the simulated clock only moves forward")
        self.now()
        with self._factory() as session, session.begin():
            row = session.execute(
                select(SimulatedClock).where(SimulatedClock.id == 1).with_for_update()
            ).scalar_one()
            row.now = row.now + delta
            return row.now

    def set(self, when: datetime) -> datetime:
        """Set the clock (tests and the demo start from a known date)."""
        with self._factory() as session, session.begin():
            row = session.get(SimulatedClock, 1, with_for_update=True)
            if row is None:
                session.add(SimulatedClock(id=1, now=when))
            else:
                row.now = when
        return when
