"""The start-up check of the email templates: every template compiles, every kind renders in every language.

A worker that finds a broken template when a customer's email comes due has
already failed that customer; ``dunning worker`` and ``dunning serve`` run this
first and refuse to start, naming the template and its line
(``templates: price_change_notice.html line 12: ...``). It matters most with an
operator's folder (``DUNNING_TEMPLATES_DIR``), whose templates we never tested.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError

from .render import Renderer
from .templates import template_names

_TEMPLATE_SUFFIXES = (".html", ".txt")


def check_templates(renderer: Renderer, kinds: Iterable[str], sample: Callable[[str, str], Any]) -> list[str]:
    """Problems found (empty: all good), one line each, the template's name and line first.

    Compiles every template the renderer can load (an operator's spare file included),
    then renders ``sample(kind, language)`` for every kind in every language with a catalog.
    """
    problems: list[str] = []
    env = renderer.environment("en")
    for name in template_names(renderer.loader):
        if name.endswith(_TEMPLATE_SUFFIXES):
            try:
                env.get_template(name)
            except TemplateSyntaxError as exc:
                problems.append(describe(exc))
    broken = {p.split(" ")[1] for p in problems}
    for kind in kinds:
        if {f"{kind}.txt", f"{kind}.html"} & broken:
            continue  # said once above, not once per language
        failed: dict[str, list[str]] = {}  # one line per problem, naming the languages it breaks
        for language in sorted(renderer.languages):
            try:
                notice = sample(kind, language)
            except KeyError:
                problems.append(
                    f"templates: no sample notice of {kind} to check it with (its workflow's samples)"
                )
                break
            try:
                renderer.render(notice)
            except Exception as exc:
                failed.setdefault(describe(exc), []).append(language)
        problems.extend(f"{line} ({kind} in {', '.join(langs)})" for line, langs in failed.items())
    return problems


def describe(exc: BaseException) -> str:
    """``templates: <file> line <n>: <what>`` for an error raised while loading or rendering a template."""
    if isinstance(exc, TemplateSyntaxError):
        name = Path(exc.filename or exc.name or "?").name
        return f"templates: {name} line {exc.lineno}: {exc.message}"
    # Jinja rewrites tracebacks so that template frames carry the template's file and line.
    where = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(_TEMPLATE_SUFFIXES):
            where = frame
    what = f"{type(exc).__name__}: {exc}"
    if where is None:
        return f"templates: {what}"
    return f"templates: {Path(where.filename).name} line {where.lineno}: {what}"
