"""The price-migration workflow as the engine sees it: its events, job kinds, notice kinds and link pages."""

from __future__ import annotations

from dunning.engine.registry import Workflow
from dunning.workflows.price_migrations import choices
from dunning.workflows.price_migrations.batch import WORKFLOW_NAME, PricesBatch
from dunning.workflows.price_migrations.handlers import HANDLERS
from dunning.workflows.price_migrations.jobs import JOBS
from dunning.workflows.price_migrations.notices import KINDS, MAIL_KINDS
from dunning.workflows.price_migrations.rendering import render_outbox, stale
from dunning.workflows.price_migrations.samples import sample

WORKFLOW = Workflow(
    name=WORKFLOW_NAME,
    events=HANDLERS,
    jobs=JOBS,
    notice_kinds=KINDS,
    mail_kinds=MAIL_KINDS,
    sample=sample,
    render_notice=render_outbox,
    stale=stale,
    links=choices.LINK_PAGES,
    batch_part=PricesBatch,
)
