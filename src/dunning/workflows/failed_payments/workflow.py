"""The failed-payment workflow as the engine sees it: its events, job kinds and notice kinds."""

from __future__ import annotations

from dunning.engine.registry import Workflow
from dunning.workflows.failed_payments.batch import WORKFLOW_NAME, PaymentsBatch
from dunning.workflows.failed_payments.handlers import HANDLERS
from dunning.workflows.failed_payments.notices import KINDS

WORKFLOW = Workflow(
    name=WORKFLOW_NAME,
    events=HANDLERS,
    notice_kinds=KINDS,
    batch_part=PaymentsBatch,
)
