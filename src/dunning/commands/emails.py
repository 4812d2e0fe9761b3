"""``dunning emails``: the customer emails as they are, without sending one.

``list`` shows every notice kind (its workflow, whether it informs or invites,
its templates and languages); ``preview KIND`` renders the kind's sample
notice through the renderer and the message builder the workers use, so what
it prints is what a customer gets. The start-up check of the templates
(:func:`refuse_bad_templates`, run by ``dunning worker`` and ``dunning serve``)
lives here too: it renders the same samples.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from email.message import EmailMessage

    from dunning.mail.render import Renderer
    from dunning.settings import Settings

emails_app = typer.Typer(
    help="Customer emails: list the kinds, preview one with sample data.", no_args_is_help=True
)


def _settings() -> Settings:
    from dunning.cli import fail
    from dunning.settings import load_settings

    try:
        return load_settings()
    except ValueError as exc:
        fail(str(exc))


def _renderer(settings: Settings) -> Renderer:
    from dunning.cli import fail
    from dunning.mail.render import Renderer

    try:
        return Renderer(override_dir=settings.templates_dir)
    except FileNotFoundError as exc:
        fail(str(exc))


def all_kinds() -> list[tuple[str, str, bool]]:
    """``(kind, workflow, is a prompt)`` for every notice kind, in registry order."""
    from dunning.engine.registry import workflows

    return [(kind, w.name, kind in w.prompt_kinds) for w in workflows() for kind in w.notice_kinds]


def sample_message(renderer: Renderer, settings: Settings, kind: str, locale: str) -> EmailMessage:
    """The sample email of ``kind`` in ``locale``, rendered and built exactly as a worker sends it."""
    from dunning.engine.outbox import outbox_message
    from dunning.engine.registry import sample_notice
    from dunning.mail import samples
    from dunning.mail.message import message_id_for
    from dunning.store.models import Outbox

    rendered = renderer.render(sample_notice(kind, locale))
    key = f"{kind}:sample:{locale}"
    row = Outbox(
        key=key,
        kind=kind,
        to_email=samples.EMAIL,
        locale=locale,
        message_id=message_id_for(key),
        send_after=samples.SENT_AT,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
    )
    return outbox_message(settings, row)


def message_json(msg: EmailMessage) -> dict[str, Any]:
    """Headers, subject and both bodies of a built message, for ``--json``."""
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    return {
        "headers": {name: str(value) for name, value in msg.items()},
        "subject": str(msg["Subject"]),
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
    }


@emails_app.command("list")
def emails_list() -> None:
    """Every notice kind: workflow, transactional or prompt, templates, languages with a catalog."""
    from rich.table import Table

    from dunning.cli import console
    from dunning.mail.templates import template_folders

    settings = _settings()
    renderer = _renderer(settings)
    names = set(renderer.loader.list_templates())
    ours = (
        {p.name for d in template_folders(settings.templates_dir) for p in d.iterdir()}
        if (settings.templates_dir)
        else set()
    )
    languages = ", ".join(sorted(renderer.languages))
    table = Table(title=f"Customer emails ({len(all_kinds())} kinds; languages: {languages})")
    table.add_column("kind", no_wrap=True)
    for col in ("workflow", "type", "templates", *(("operator's",) if ours else ())):
        table.add_column(col, overflow="fold")
    for kind, workflow, prompt in all_kinds():
        files = [f"{kind}.{ext}" for ext in ("txt", "html")]
        row = [
            kind,
            workflow,
            "prompt" if prompt else "transactional",
            ", ".join(f.rsplit(".", 1)[1] for f in files if f in names) or "missing",
        ]
        if ours:
            row.append(", ".join(f.rsplit(".", 1)[1] for f in files if f in ours))
        table.add_row(*row)
    console.print(table)
    if settings.templates_dir:
        console.print(f"operator's templates: {settings.templates_dir}", markup=False, highlight=False)


@emails_app.command("preview")
def emails_preview(
    kind: Annotated[str, typer.Argument(help="A notice kind (see `dunning emails list`).")],
    locale: Annotated[
        str, typer.Option("--locale", help="The customer's locale (a language with a catalog).")
    ] = "en",
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML part to this file.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The whole message (headers, subject, text, html).")
    ] = False,
) -> None:
    """Render KIND with sample data as a worker would send it; print its subject and plain text."""
    from dunning.cli import fail

    kinds = [k for k, _, _ in all_kinds()]
    if kind not in kinds:
        fail(f"KIND: unknown notice kind {kind!r}; kinds: {', '.join(kinds)}")
    settings = _settings()
    renderer = _renderer(settings)
    language = locale.strip().replace("-", "_").split("_")[0].lower()
    if language not in renderer.languages:
        fail(
            f"--locale: no catalog for {locale!r} (a customer with it gets English); "
            f"languages: {', '.join(sorted(renderer.languages))}"
        )
    try:
        msg = sample_message(renderer, settings, kind, locale)
    except Exception as exc:
        from dunning.mail.check import describe

        fail(describe(exc))
    data = message_json(msg)
    if html is not None:
        html.write_text(data["html"] or "", encoding="utf-8")
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(f"Subject: {data['subject']}\n\n{data['text']}")


def serving_runtime() -> Any:
    """The runtime of ``dunning worker`` and ``dunning serve``: schema current, every email template renders."""
    from dunning.cli import _require_schema, _runtime

    rt = _runtime()
    _require_schema(rt)
    refuse_bad_templates(rt.renderer)
    return rt


def refuse_bad_templates(renderer: Renderer) -> None:
    """Exit non-zero naming each broken template and line, before a worker or the HTTP app starts."""
    from rich.markup import escape

    from dunning.cli import err, fail
    from dunning.engine.registry import sample_notice
    from dunning.mail.check import check_templates

    problems = check_templates(renderer, [k for k, _, _ in all_kinds()], sample_notice)
    if problems:
        for line in problems[:-1]:
            err.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        fail(problems[-1], code=1)
