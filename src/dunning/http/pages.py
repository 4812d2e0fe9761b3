"""HTML pages of ``dunning serve`` (ops page, customer-link pages), from Jinja2 templates with autoescaping.

The templates live beside this module (``templates/``), so every value a page
shows is escaped by Jinja2, not by hand.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


@cache
def environment() -> Environment:
    """The pages' Jinja2 environment (built once per process)."""
    return Environment(
        loader=PackageLoader("dunning.http", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **values: Any) -> str:
    """One page as HTML text."""
    return environment().get_template(template).render(**values)
