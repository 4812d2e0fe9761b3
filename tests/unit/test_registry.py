"""The workflow registry: what the engine dispatches through."""

from __future__ import annotations

import pytest

from dunning.engine.registry import Workflow, check, event_handlers, workflows


def test_every_event_type_of_the_contract_has_a_handler() -> None:
    from dunning.contract import EVENT_TYPES

    for event_type in EVENT_TYPES:
        assert event_handlers(event_type), event_type


def test_registered_workflows_claim_distinct_kinds() -> None:
    check()
    assert [w.name for w in workflows()] == ["failed_payments"]


def test_two_workflows_claiming_one_job_kind_are_refused() -> None:
    def handler(rt, job):  # type: ignore[no-untyped-def]
        return "done", []

    a = Workflow(name="a", jobs={"send": handler})
    b = Workflow(name="b", jobs={"send": handler})
    with pytest.raises(ValueError, match="jobs 'send' is claimed by a and b"):
        check((a, b))
    with pytest.raises(ValueError, match="name 'a'"):
        check((a, Workflow(name="a")))
