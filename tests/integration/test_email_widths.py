"""Every email fits a phone and a desktop window: no sideways scrolling at 320 px or at 800 px.

Each kind's sample in every language with a catalog is written to an HTML
file and opened in Debian's headless Chromium (``/usr/bin/chromium``, driven
by Playwright for Python; Playwright downloads no browser of its own). The
test fails when the document is wider than the window. Screenshots of English
and Finnish land in ``artifacts/screenshots/`` (git-ignored) for a human look.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
WIDTHS = (320, 800)
# Every language is measured; screenshots (most of the test's time) only of English and of
# Finnish, whose long compound words are the likeliest to push a layout wide.
SCREENSHOT_LANGUAGES = ("en", "fi")
# Everything a headless run needs and nothing that phones home.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_MEASURE = "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does it)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            headless=True,
            args=FLAGS,
            viewport={"width": WIDTHS[0], "height": 640},
        )
        try:
            yield context
        finally:
            context.close()


def widths_of(page: Any, path: Path, width: int) -> tuple[int, int]:
    """(widest scroll width of the document, window width) with ``path`` open at ``width`` px."""
    page.set_viewport_size({"width": width, "height": 640})
    page.goto(path.as_uri())
    doc, body, inner = page.evaluate(_MEASURE)
    return max(doc, body), inner


def test_the_measure_sees_an_overflow(browser: Any, tmp_path: Path) -> None:
    wide = tmp_path / "wide.html"
    wide.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta name="viewport" content="width=device-width">'
        '</head><body><table width="600"><tr><td>too wide for a phone</td></tr></table></body></html>',
        encoding="utf-8",
    )
    page = browser.new_page()
    scroll, inner = widths_of(page, wide, 320)
    page.close()
    assert inner == 320 and scroll > inner


def test_no_email_scrolls_sideways_on_a_phone_or_a_desktop(browser: Any, tmp_path: Path) -> None:
    from dunning.engine.registry import sample_notice, workflows
    from dunning.mail import Renderer

    renderer = Renderer(REPO / "templates")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    too_wide: list[str] = []
    seen = 0
    for kind in (k for w in workflows() for k in w.notice_kinds):
        for language in sorted(renderer.languages):
            path = tmp_path / f"{kind}-{language}.html"
            path.write_text(renderer.render(sample_notice(kind, language)).html, encoding="utf-8")
            for width in WIDTHS:
                scroll, inner = widths_of(page, path, width)
                seen += 1
                if scroll > inner:
                    too_wide.append(f"{kind} ({language}) at {width}px: {scroll}px wide")
                if language in SCREENSHOT_LANGUAGES:
                    page.screenshot(path=str(SCREENSHOTS / f"{kind}-{language}-{width}.png"), full_page=True)
    page.close()
    assert seen == 17 * len(renderer.languages) * len(WIDTHS)
    assert not too_wide, "\n".join(too_wide)
