"""``dunning pause`` / ``dunning resume``: hold the sending of a notice kind (or all), then let it go."""

from __future__ import annotations

from typing import Annotated

import typer

KindArg = Annotated[str, typer.Argument(help="A notice kind (e.g. payment_reminder), or 'all'.")]
ByOpt = Annotated[
    str | None, typer.Option("--by", help="Who does this, for the audit (default: the OS user).")
]


def pause_command(kind: KindArg, by: ByOpt = None) -> None:
    """Hold sending notices of KIND; what falls due meanwhile waits and goes when resumed, if still true."""
    from dunning.cli import _require_schema, _runtime, console, fail
    from dunning.commands.dlq import _by
    from dunning.ops.controls import pause

    rt = _runtime()
    _require_schema(rt)
    try:
        done = pause(rt, kind, by=_by(by))
    except ValueError as exc:
        fail(str(exc))
    console.print(f"{kind}: paused" if done else f"{kind}: already paused", highlight=False)


def resume_command(kind: KindArg, by: ByOpt = None) -> None:
    """Resume sending notices of KIND ('all': every pause); the sends held meanwhile become due now."""
    from dunning.cli import _require_schema, _runtime, console, fail
    from dunning.commands.dlq import _by
    from dunning.ops.controls import resume

    rt = _runtime()
    _require_schema(rt)
    try:
        freed, released = resume(rt, kind, by=_by(by))
    except ValueError as exc:
        fail(str(exc))
    state = "resumed" if freed else "was not paused"
    console.print(f"{kind}: {state}; {released} held sends due now", highlight=False)
