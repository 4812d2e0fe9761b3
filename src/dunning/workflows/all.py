"""Every workflow the product runs (:mod:`dunning.engine.registry`): a new workflow is a package beside
this module and one line in :data:`WORKFLOWS`.
"""

from __future__ import annotations

from dunning.engine.registry import Workflow
from dunning.workflows.failed_payments.workflow import WORKFLOW as FAILED_PAYMENTS
from dunning.workflows.lifecycle.workflow import WORKFLOW as LIFECYCLE
from dunning.workflows.price_migrations.workflow import WORKFLOW as PRICE_MIGRATIONS

#: Every workflow, in the order they react to a shared event type.
WORKFLOWS: tuple[Workflow, ...] = (FAILED_PAYMENTS, LIFECYCLE, PRICE_MIGRATIONS)
