"""``dunning pause`` / ``resume`` and ``scheduler --dry-run`` on a running product (both databases).

A paused notice kind is held, not failed: its send goes back to pending without counting a
run, comes round again while the pause lasts, and goes once resumed if still true then.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _sends(h: Any, kind: str) -> list[Any]:
    from dunning.store.models import Job, Outbox

    with h.rt.sessions() as s:
        return list(
            s.query(Job, Outbox.status)
            .join(Outbox, Outbox.id == Job.outbox_id)
            .filter(Outbox.kind == kind)
            .order_by(Job.id)
        )


def test_a_paused_kind_is_held_then_sent_on_resume(world) -> None:
    from dunning.engine.pauses import HELD_PREFIX
    from dunning.ops.audit import list_audit
    from dunning.ops.controls import pause, paused_kinds, resume
    from dunning.ops.preview import preview
    from dunning.ops.queues import queue_status

    h = world
    assert pause(h.rt, "payment_failed", by="alice") is True
    assert pause(h.rt, "payment_failed", by="alice") is False  # already
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    assert h.notices() == []
    [(job, outbox_status)] = _sends(h, "payment_failed")
    assert outbox_status == "pending" and job.status == "pending"
    assert job.last_error.startswith(HELD_PREFIX) and job.runs == 0
    assert queue_status(h.rt, h.broker.client).scheduler.held == 1
    assert [p.kind for p in paused_kinds(h.rt)] == ["payment_failed"]

    # Still paused when it comes round again: held again, never failed, never counted.
    h.advance(timedelta(hours=2), step=timedelta(hours=2))
    assert h.notices() == []
    [(job, _)] = _sends(h, "payment_failed")
    assert job.status == "pending" and job.runs == 0 and job.claims == 0
    assert job.id not in [w.job_id for w in preview(h.rt)]  # not due: nothing to enqueue for it

    assert resume(h.rt, "payment_failed", by="bob") == (True, 1)
    # Due now: the dry run lists it, and claims nothing.
    assert [w.job_id for w in preview(h.rt) if w.why == "due"] in ([job.id], [])
    h.settle()
    assert h.notices() == ["payment_failed"]
    assert [(a.by, a.action, a.target) for a in list_audit(h.rt)] == [
        ("bob", "resume", "payment_failed"),
        ("alice", "pause", "payment_failed"),
    ]
    assert resume(h.rt, "payment_failed", by="bob") == (False, 0)


def test_pause_all_holds_every_kind_and_a_held_notice_no_longer_true_is_dropped(world) -> None:
    from dunning.ops.controls import pause, resume

    h = world
    pause(h.rt, "all", by="ops")
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    # Resuming one kind does not lift "all".
    assert resume(h.rt, "payment_failed", by="ops") == (False, 0)
    h.paid()
    h.settle()
    assert h.case().status == "recovered"
    assert h.notices() == []
    assert resume(h.rt, "all", by="ops") == (True, 2)  # payment_failed and payment_recovered
    h.settle()
    # The failure notice is no longer true (the invoice is paid): dropped, not sent late.
    assert h.notices() == ["payment_recovered"]
    [(_, status)] = _sends(h, "payment_failed")
    assert status == "skipped"


def test_an_unknown_kind_is_refused(world) -> None:
    from dunning.ops.controls import pause

    with pytest.raises(ValueError, match="unknown notice kind 'nope'"):
        pause(world.rt, "nope", by="ops")
