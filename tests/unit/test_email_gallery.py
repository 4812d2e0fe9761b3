"""The demo's email gallery: every kind in every language with a catalog, linked from one page."""

from __future__ import annotations

import re
from pathlib import Path

from dunning.devtools.gallery import write_gallery
from dunning.engine.registry import sample_notice, workflows
from dunning.mail import Renderer

REPO = Path(__file__).resolve().parents[2]


def test_the_gallery_has_every_kind_in_every_language(tmp_path: Path) -> None:
    renderer = Renderer(REPO / "templates")
    index = write_gallery(renderer, tmp_path / "gallery")
    page = index.read_text(encoding="utf-8")
    links = set(re.findall(r'href="([^"]+)"', page))
    kinds = [k for w in workflows() for k in w.notice_kinds]
    assert len(kinds) == 17 and {"de", "en", "fr"} <= renderer.languages
    for kind in kinds:
        for language in renderer.languages:
            stem = f"{kind}-{language}"
            assert {f"{stem}.html", f"{stem}.txt"} <= links
            email = renderer.render(sample_notice(kind, language))
            assert (tmp_path / "gallery" / f"{stem}.html").read_text(encoding="utf-8") == email.html
    assert len(links) == 17 * len(renderer.languages) * 2
    assert "annual_offer<br><small>lifecycle, prompt</small>" in page
