"""The registry of workflows: the events each reacts to, its job kinds, notice kinds and link pages.

The engine dispatches through this registry and names no workflow. The list of
workflows is :data:`dunning.workflows.all.WORKFLOWS` (one line per workflow);
each workflow package declares its :class:`Workflow` in its ``__init__``.
Several workflows may react to one event type: they run in the order of that
list, in the same transaction.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from dunning.domain.emails import UNCLASSIFIED, MailKind
from dunning.engine.link_pages import LinkPage, LinkPages
from dunning.engine.links import subject_kind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dunning.contract import Event
    from dunning.engine.batch import BatchPart
    from dunning.engine.jobs import Dispatch
    from dunning.runtime import Runtime
    from dunning.store.models import Job, Outbox

#: ``(outcome word, messages to send after commit)``, what every handler returns.
Result = tuple[str, list["Dispatch"]]
EventHandler = Callable[["Runtime", "Session", "Event", datetime], Result]
JobHandler = Callable[["Runtime", "Job"], Result]
#: Why a notice due now is no longer true (e.g. its case was paid), or None to send it; the
#: workflow writes a dropped notice on its timeline itself.
NoticeCheck = Callable[["Runtime", "Session", "Outbox", datetime], "str | None"]
#: Fills an outbox row's subject and bodies from the facts of the moment it is sent.
NoticeRenderer = Callable[["Runtime", "Session", "Outbox", datetime], None]


@dataclass(frozen=True)
class Workflow:
    """One workflow as the engine sees it. Everything but ``name`` is optional."""

    name: str
    #: Event type -> handler, run in the event's transaction.
    events: Mapping[str, EventHandler] = field(default_factory=dict)
    #: Job kind (``jobs.kind``) -> handler, run by the ``run_job`` actor.
    jobs: Mapping[str, JobHandler] = field(default_factory=dict)
    #: Notice kinds (``outbox.kind``) this workflow writes; their templates are in
    #: ``templates/email/`` under the same names.
    notice_kinds: tuple[str, ...] = ()
    #: How each notice kind is treated on the way out (:mod:`dunning.domain.emails`): its class
    #: (dunning, transactional, prompt) and rank. Keys are a kind, or ``kind:variant`` when one
    #: variant differs from its kind; a kind not listed is transactional.
    mail_kinds: Mapping[str, MailKind] = field(default_factory=dict)
    #: The notice kinds that invite rather than inform (offers, upgrade prompts); the others are
    #: transactional. Must name exactly the kinds ``mail_kinds`` classes as prompts (:func:`check`).
    prompt_kinds: tuple[str, ...] = ()
    #: ``(kind, locale)`` -> a complete sample notice of that kind (a ``Renderable``), for previews,
    #: the demo's gallery and the start-up check of the templates; ``KeyError`` for a kind not its own.
    sample: Callable[[str, str], Any] | None = None
    render_notice: NoticeRenderer | None = None
    stale: NoticeCheck | None = None
    #: Makes this workflow's part of a group commit (None: it loads nothing ahead).
    batch_part: Callable[[], BatchPart] | None = None
    #: Customer links it answers: ``(purpose, subject kind)`` -> page (:mod:`dunning.engine.link_pages`).
    links: LinkPages = field(default_factory=dict)
    #: ``(rt, session, subscription_id, days)`` -> the notices it plans for that subscription in the
    #: next ``days``, soonest first, as plain dicts (the ops dashboard's search shows them).
    upcoming: Callable[[Any, Any, str, int], list[dict[str, Any]]] | None = None


@cache
def workflows() -> tuple[Workflow, ...]:
    """The registered workflows (imported on first use, so importing the engine starts nothing)."""
    found: Any = importlib.import_module("dunning.workflows.all").WORKFLOWS
    return tuple(found)


@cache
def event_handlers(event_type: str) -> tuple[EventHandler, ...]:
    """The handlers of an event type, in registration order (empty: no workflow reacts)."""
    return tuple(w.events[event_type] for w in workflows() if event_type in w.events)


@cache
def job_handler(kind: str) -> JobHandler | None:
    """The handler of a job kind (kinds are unique across workflows: checked by :func:`check`)."""
    return next((w.jobs[kind] for w in workflows() if kind in w.jobs), None)


@cache
def notice_owner(kind: str) -> Workflow | None:
    """The workflow that writes notices of ``kind``."""
    return next((w for w in workflows() if kind in w.notice_kinds), None)


def mail_kind(kind: str, variant: str | None = None) -> MailKind:
    """The class and rank of a notice (``kind:variant`` first, then the kind; unlisted: transactional)."""
    owner = notice_owner(kind)
    if owner is None:
        return UNCLASSIFIED
    if variant is not None and f"{kind}:{variant}" in owner.mail_kinds:
        return owner.mail_kinds[f"{kind}:{variant}"]
    return owner.mail_kinds.get(kind, UNCLASSIFIED)


def sample_notice(kind: str, locale: str = "en") -> Any:
    """A sample notice of ``kind`` in ``locale`` from the workflow that writes it; ``KeyError`` if none does."""
    owner = notice_owner(kind)
    if owner is None or owner.sample is None:
        raise KeyError(kind)
    return owner.sample(kind, locale)


@cache
def link_page(purpose: str, subject: str) -> LinkPage | None:
    """The page that answers a link of ``purpose`` about ``subject`` (None: no workflow serves it)."""
    key = (purpose, subject_kind(subject))
    return next((w.links[key] for w in workflows() if key in w.links), None)


@cache
def link_purposes() -> tuple[str, ...]:
    """Every purpose some workflow answers: the purposes a customer link may have."""
    return tuple(dict.fromkeys(purpose for w in workflows() for purpose, _ in w.links))


def batch_parts() -> dict[str, BatchPart]:
    """A fresh part of a group commit for each workflow that keeps one."""
    return {w.name: w.batch_part() for w in workflows() if w.batch_part is not None}


def check(found: tuple[Workflow, ...] | None = None) -> None:
    """Refuse a registry where two workflows claim one job kind, notice kind or link page, or a name twice."""
    found = workflows() if found is None else found
    for what in ("name", "jobs", "notice_kinds", "links"):
        seen: dict[str, str] = {}
        for w in found:
            keys = [w.name] if what == "name" else list(getattr(w, what))
            for key in keys:
                if isinstance(key, tuple):
                    key = " on ".join(key)
                if key in seen:
                    raise ValueError(f"workflows: {what} {key!r} is claimed by {seen[key]} and {w.name}")
                seen[key] = w.name
    for w in found:
        for key in w.mail_kinds:
            if key.partition(":")[0] not in w.notice_kinds:
                raise ValueError(f"workflows: {w.name} classifies {key!r}, not one of its notice kinds")
        prompts = {k for k, m in w.mail_kinds.items() if m.mail_class == "prompt" and ":" not in k}
        if set(w.prompt_kinds) != prompts:
            raise ValueError(
                f"workflows: {w.name} declares prompt_kinds {sorted(w.prompt_kinds)} but mail_kinds classes "
                f"{sorted(prompts)} as prompts"
            )


def upcoming_notices(rt: Any, session: Any, subscription_id: str, days: int) -> list[dict[str, Any]]:
    """Every workflow's planned notices for a subscription in the next ``days``, soonest first."""
    found: list[dict[str, Any]] = []
    for workflow in workflows():
        if workflow.upcoming is not None:
            found.extend(workflow.upcoming(rt, session, subscription_id, days))
    return sorted(found, key=lambda n: str(n.get("due_at", "")))
