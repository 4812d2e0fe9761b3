"""``dunning prices``: plan, preview, launch and follow a price migration (docs/prices.md).

Every refusal is one line on stderr naming the field (``--new-amount: must be above zero``),
exit status 2, and nothing written: each command runs in one transaction that a refusal
rolls back. Long set-based steps show a spinner on a terminal (stderr), never in ``--json``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dunning.errors import Refused
    from dunning.runtime import Runtime

prices_app = typer.Typer(
    help="Price migrations: plan a price change, preview its impact, launch it, follow it.",
    no_args_is_help=True,
)

_ID_HELP = "The migration's id (from `dunning prices plan` or `list`)."
IdArg = Annotated[str | None, typer.Argument(metavar="ID", help=_ID_HELP, show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


def _refused(exc: Refused, labels: Mapping[str, str] | None = None, prefix: str = "") -> NoReturn:
    from dunning.cli import fail

    field = (labels or {}).get(exc.field or "", exc.field)
    fail(prefix + (f"{field}: {exc.reason}" if field else exc.reason))


@contextmanager
def _transaction(labels: Mapping[str, str] | None = None) -> Iterator[tuple[Runtime, Session]]:
    """The runtime and a session in one transaction; a refusal rolls it back and exits 2."""
    from dunning.cli import _require_schema, _runtime
    from dunning.errors import Refused
    from dunning.store.db import transaction

    rt = _runtime()
    _require_schema(rt)
    try:
        with transaction(rt.sessions) as session:
            yield rt, session
    except Refused as exc:
        _refused(exc, labels)


def _echo_json(value: Any) -> None:
    """Indented JSON, with each element of a list of objects on one line.

    A preview can list hundreds of thousands of subscribers above the guardrail: the standard
    indented dump runs in pure Python (seconds); one compact dump per element stays in C.
    """
    if isinstance(value, list):  # `list --json`: one migration per line
        rows = ",\n".join(f"  {json.dumps(e)}" for e in value)
        sys.stdout.write(f"[\n{rows}\n]\n" if value else "[]\n")
        sys.stdout.flush()
        return
    lines = ["{"]
    items = list(value.items())
    for i, (key, item) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(item, list) and item and all(isinstance(e, dict) for e in item):
            body = ",\n".join(f"    {json.dumps(e)}" for e in item)
            lines.append(f"  {json.dumps(key)}: [\n{body}\n  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(item)}{comma}")
    lines.append("}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _need_id(migration_id: str | None) -> str:
    from dunning.cli import fail

    if not migration_id:
        fail("ID: required (see `dunning prices list`)")
    return migration_id


@contextmanager
def _working(what: str) -> Iterator[None]:
    """A spinner on stderr while a long statement runs (shown only on a terminal)."""
    from dunning.cli import err

    with err.status(what):
        yield


# -- plan --------------------------------------------------------------------------------------


@prices_app.command("plan")
def plan_command(
    plan: Annotated[str | None, typer.Option("--plan", help="The plan whose price changes.")] = None,
    currency: Annotated[str | None, typer.Option("--currency", metavar="CUR", help="e.g. EUR.")] = None,
    new_amount: Annotated[
        str | None,
        typer.Option("--new-amount", metavar="MINOR", help="New price in minor units (5900 = 59.00)."),
    ] = None,
    effective: Annotated[
        str | None, typer.Option("--effective", metavar="DATE", help="First day the new price may apply.")
    ] = None,
    interval: Annotated[
        str | None, typer.Option("--interval", metavar="month|year", help="Billing interval (default month).")
    ] = None,
    notice_days: Annotated[
        str | None,
        typer.Option(
            "--notice-days",
            metavar="N",
            help="Days of notice (default 30, the policy minimum; at least 7 when given).",
        ),
    ] = None,
    grandfather_months: Annotated[
        str | None,
        typer.Option(
            "--grandfather-months", metavar="N", help="Months on the old price after DATE (default 0)."
        ),
    ] = None,
    offer: Annotated[
        list[str] | None,
        typer.Option(
            "--offer",
            metavar="OFFER",
            help="step-up:PERCENT:MONTHS, annual-lock or downgrade:PLAN:MINOR (repeat).",
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why, in the notice.")
    ] = None,
    guardrail_percent: Annotated[
        str | None,
        typer.Option(
            "--guardrail-percent", metavar="N", help="Increase (%) above which launch asks (default 50)."
        ),
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", metavar="migration.toml", help="The same terms as a TOML file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a draft migration for the subscriptions on a plan, currency and interval; print its id."""
    from dunning.cli import _require_schema, _runtime, console, err, fail
    from dunning.errors import Refused
    from dunning.workflows.price_migrations import terms as terms_module
    from dunning.workflows.price_migrations.members import plan_migration

    options = {
        "plan": plan,
        "currency": currency,
        "new_amount": new_amount,
        "effective": effective,
        "interval": interval,
        "notice_days": notice_days,
        "grandfather_months": grandfather_months,
        "offers": offer,
        "reason": reason,
        "guardrail_percent": guardrail_percent,
    }
    rt = _runtime()
    _require_schema(rt)
    now = rt.clock.now()
    labels: Mapping[str, str] = terms_module.OPTIONS
    prefix = ""
    try:
        if file is not None:
            given = [terms_module.OPTIONS[k] for k, v in options.items() if v is not None]
            if given:
                fail(f"--file: give the terms in the file or as options, not both ({given[0]} given)")
            try:
                source = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                fail(f"--file: cannot read {file}: {type(exc).__name__}")
            labels, prefix = {}, f"{file}: "
            terms = terms_module.from_toml(source, now=now)
        else:
            terms = terms_module.from_options(options, now=now)
    except Refused as exc:
        _refused(exc, labels, prefix)
    with (
        _transaction(labels) as (_rt, session),
        _working(f"planning: selecting the {terms.plan} subscribers"),
    ):
        planned = plan_migration(session, terms, now=now)
    if as_json:
        typer.echo(json.dumps({"id": planned.id}))
        return
    console.print(planned.id, markup=False, highlight=False, soft_wrap=True)
    _plan_summary(err, terms, planned)


def _plan_summary(err: Any, terms: Any, planned: Any) -> None:
    from dunning.workflows.price_migrations.pricing import format_minor
    from dunning.workflows.price_migrations.terms import POLICY_MIN_NOTICE_DAYS

    new = format_minor(terms.new_amount_minor, terms.currency)
    lines = [
        f"planned {planned.id} (draft): {planned.members:,} subscribers on {terms.plan} {terms.currency} "
        f"{terms.interval}ly -> {new}",
        f"  {planned.above_guardrail:,} above the {terms.guardrail_percent} % guardrail; "
        f"{planned.not_raised:,} already pay {new} or more and are left as they are",
    ]
    if terms.short_notice:
        lines.append(
            f"  note: {terms.notice_days} days' notice, below the policy minimum of {POLICY_MIN_NOTICE_DAYS} "
            "(given explicitly)"
        )
    lines.append(f"  next: dunning prices preview {planned.id}")
    for line in lines:
        err.print(line, markup=False, highlight=False, soft_wrap=True)


# -- preview -----------------------------------------------------------------------------------


@prices_app.command("preview")
def preview_command(
    migration_id: IdArg = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="One row per subscriber on stdout, for finance.")
    ] = False,
) -> None:
    """Show the impact before anything is sent: cohorts, MRR before and after, the guardrail."""
    from dunning.cli import console, fail
    from dunning.workflows.price_migrations.reports import CSV_COLUMNS, member_rows, preview

    if as_json and as_csv:
        fail("--csv: give --json or --csv, not both")
    mid = _need_id(migration_id)
    with _transaction() as (rt, session):
        now = rt.clock.now()
        if as_csv:
            rows = member_rows(session, mid, now=now)
            first = next(rows, None)  # a refusal (unknown id) comes before any output
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            if first is not None:
                writer.writerow(first)
                writer.writerows(rows)
            sys.stdout.flush()
            return
        from dunning.commands.prices_view import GUARDRAIL_ROWS, print_preview

        with _working("preview: adding up the cohorts"):
            found = preview(session, mid, now=now, guardrail_rows=None if as_json else GUARDRAIL_ROWS)
    if as_json:
        _echo_json(found)
        return

    print_preview(console, found)


# -- launch ------------------------------------------------------------------------------------


@prices_app.command("launch")
def launch_command(
    migration_id: IdArg = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", metavar="SUB", help="A subscription that keeps its price (repeat)."),
    ] = None,
    override_guardrail: Annotated[
        bool, typer.Option("--override-guardrail", help="Launch even with subscribers above the guardrail.")
    ] = False,
) -> None:
    """Queue the notices; refused while subscribers above the guardrail are neither excluded nor overridden."""
    from dunning.cli import console
    from dunning.workflows.price_migrations.members import launch

    mid = _need_id(migration_id)
    labels = {"exclude": "--exclude"}
    with (
        _transaction(labels) as (rt, session),
        _working(f"launching {mid}: queuing one notice per subscriber"),
    ):
        done = launch(session, mid, now=rt.clock.now(), exclude=exclude or (), override=override_guardrail)
    console.print(
        f"launched {done.id}: {done.notices:,} notices queued (sent at the product's email rate)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for count, what in (
        (done.excluded, "excluded: they keep their price and get nothing"),
        (done.overridden, "above the guardrail, launched with --override-guardrail"),
        (done.skipped, "skipped: they left the plan (or pay the new amount already) since planning"),
    ):
        if count:
            console.print(f"  {count:,} {what}", markup=False, highlight=False, soft_wrap=True)


# -- status, list ------------------------------------------------------------------------------


@prices_app.command("status")
def status_command(migration_id: IdArg = None, as_json: JsonOpt = False) -> None:
    """Counts per state (notified, reminded, applied, skipped, excluded, pending...) and choices."""
    from dunning.cli import console
    from dunning.workflows.price_migrations.reports import status

    mid = _need_id(migration_id)
    with _transaction() as (_rt, session):
        found = status(session, mid)
    if as_json:
        _echo_json(found)
        return
    from dunning.commands.prices_view import print_status

    print_status(console, found)


@prices_app.command("list")
def list_command(as_json: JsonOpt = False) -> None:
    """Every price migration, newest first."""
    from dunning.cli import console
    from dunning.workflows.price_migrations.reports import list_migrations

    with _transaction() as (_rt, session):
        found = list_migrations(session)
    if as_json:
        _echo_json(found)
        return
    from dunning.commands.prices_view import print_list

    print_list(console, found)


# -- pause, resume, cancel ---------------------------------------------------------------------


def _control(name: str, migration_id: str | None) -> None:
    from dunning.cli import console
    from dunning.workflows.price_migrations import controls

    mid = _need_id(migration_id)
    with _transaction() as (rt, session):
        _changed, message = getattr(controls, name)(session, mid, now=rt.clock.now())
    console.print(message, markup=False, highlight=False, soft_wrap=True)


@prices_app.command("pause")
def pause_command(migration_id: IdArg = None) -> None:
    """Hold a launched migration: no notice sent, no price applied, until resume."""
    _control("pause", migration_id)


@prices_app.command("resume")
def resume_command(migration_id: IdArg = None) -> None:
    """Let a paused migration go on (refused for a canceled one)."""
    _control("resume", migration_id)


@prices_app.command("cancel")
def cancel_command(migration_id: IdArg = None) -> None:
    """Cancel what is not applied yet (applied prices stay, and it says so)."""
    _control("cancel", migration_id)
