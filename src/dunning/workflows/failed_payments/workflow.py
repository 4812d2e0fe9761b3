"""The failed-payment workflow as the engine sees it: its events, job kinds, notice kinds and link pages."""

from __future__ import annotations

from dunning.engine.registry import Workflow
from dunning.workflows.failed_payments.batch import WORKFLOW_NAME, PaymentsBatch
from dunning.workflows.failed_payments.cases import render_outbox
from dunning.workflows.failed_payments.handlers import HANDLERS
from dunning.workflows.failed_payments.jobs import JOBS, stale
from dunning.workflows.failed_payments.links import LINK_PAGES
from dunning.workflows.failed_payments.notices import KINDS, MAIL_KINDS
from dunning.workflows.failed_payments.samples import sample

WORKFLOW = Workflow(
    name=WORKFLOW_NAME,
    events=HANDLERS,
    jobs=JOBS,
    notice_kinds=KINDS,
    mail_kinds=MAIL_KINDS,
    sample=sample,
    render_notice=render_outbox,
    stale=stale,
    batch_part=PaymentsBatch,
    links=LINK_PAGES,
)
