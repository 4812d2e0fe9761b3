"""The lifecycle-notice workflow as the engine sees it: its events, job kinds, notice kinds and link pages."""

from __future__ import annotations

from dunning.engine.registry import Workflow
from dunning.workflows.lifecycle import annual_switch, calendar_view, links
from dunning.workflows.lifecycle.batch import WORKFLOW_NAME, LifecycleBatch
from dunning.workflows.lifecycle.handlers import HANDLERS
from dunning.workflows.lifecycle.jobs import JOBS, stale
from dunning.workflows.lifecycle.notices import KINDS, MAIL_KINDS, PROMPT_KINDS
from dunning.workflows.lifecycle.rendering import render_outbox
from dunning.workflows.lifecycle.samples import sample

WORKFLOW = Workflow(
    name=WORKFLOW_NAME,
    events=HANDLERS,
    jobs={**JOBS, **annual_switch.JOBS},
    notice_kinds=KINDS,
    mail_kinds=MAIL_KINDS,
    prompt_kinds=PROMPT_KINDS,
    sample=sample,
    render_notice=render_outbox,
    stale=stale,
    links={**links.LINK_PAGES, **annual_switch.LINK_PAGES},
    upcoming=calendar_view.upcoming_for_subscription,
    batch_part=LifecycleBatch,
)
