"""The email gallery: every notice kind in every language with a catalog, as the customer would see it.

The demo writes it beside its outbox (``outbox/gallery/index.html``): the
outbox shows the emails the simulated customers got, the gallery shows every
email there is, from each kind's sample notice, through the workers' renderer.
"""

from __future__ import annotations

import html
from pathlib import Path

from dunning.engine.registry import sample_notice, workflows
from dunning.mail.render import Renderer


def write_gallery(renderer: Renderer, directory: Path) -> Path:
    """Write ``<kind>-<lang>.html`` and ``.txt`` for every kind and language, and an ``index.html``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    languages = sorted(renderer.languages)
    rows = []
    for workflow in workflows():
        for kind in workflow.notice_kinds:
            cells = []
            for language in languages:
                email = renderer.render(sample_notice(kind, language))
                stem = f"{kind}-{language}"
                (directory / f"{stem}.html").write_text(email.html, encoding="utf-8")
                (directory / f"{stem}.txt").write_text(
                    f"Subject: {email.subject}\n\n{email.text}", encoding="utf-8"
                )
                cells.append(
                    f'<td><a href="{stem}.html">{html.escape(email.subject)}</a> '
                    f'<a class="txt" href="{stem}.txt">text</a></td>'
                )
            kind_type = "prompt" if kind in workflow.prompt_kinds else "transactional"
            rows.append(
                f"<tr><th>{kind}<br><small>{workflow.name}, {kind_type}</small></th>{''.join(cells)}</tr>"
            )
    head = "".join(f"<th>{language}</th>" for language in languages)
    page = _PAGE.format(count=len(rows), languages=", ".join(languages), head=head, rows="\n".join(rows))
    index = directory / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Email gallery ({count} kinds)</title>
<style>
  body {{ font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px; color: #1f2937; }}
  table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
  th, td {{ text-align: left; padding: 6px 10px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }}
  thead th {{ background: #f3f4f6; }}
  small {{ font-weight: normal; color: #4b5563; }}
  .txt {{ font-size: 12px; color: #4b5563; }}
</style>
</head>
<body>
<h1>Email gallery</h1>
<p>Every notice kind ({count}) in every language with a catalog ({languages}), rendered from sample data
by the workers' renderer. Open a subject for the HTML email, or "text" for its plain-text part.</p>
<table>
<thead><tr><th>Kind</th>{head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
