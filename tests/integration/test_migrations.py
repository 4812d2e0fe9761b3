"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from dunning.store.db import make_engine
from dunning.store.migrate import alembic_config, current_revision, head_revision, upgrade
from dunning.store.models import Base

pytestmark = pytest.mark.integration


def test_upgrade_matches_models_and_downgrade_works(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert current_revision(engine) is None
        upgrade(engine)  # and back up again, idempotently
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
