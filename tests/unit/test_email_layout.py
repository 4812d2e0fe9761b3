"""The HTML of every email: valid (html5lib, strict), one button, lang/dir, alt text, readable colours.

Every kind's sample (:func:`dunning.engine.registry.sample_notice`) in every
language with a catalog, through the real renderer. The colour test reads the
shared layout's ``<style>`` block, so a new colour is checked without editing it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import html5lib
import pytest
from html5lib.html5parser import ParseError

from dunning.engine.registry import sample_notice, workflows
from dunning.mail import Renderer

REPO = Path(__file__).resolve().parents[2]
LAYOUT = REPO / "templates" / "email" / "layout.html"
KINDS = [kind for w in workflows() for kind in w.notice_kinds]
RENDERER = Renderer(REPO / "templates")
LANGUAGES = sorted(RENDERER.languages)
WCAG_AA = 4.5


class _Tags(HTMLParser):
    """Start tags with their attributes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], str]:
    return {(k, lang): RENDERER.render(sample_notice(k, lang)).html for k in KINDS for lang in LANGUAGES}


def test_every_email_parses_without_a_single_html_error(rendered: dict[tuple[str, str], str]) -> None:
    parser = html5lib.HTMLParser(strict=True)
    for (kind, lang), html in rendered.items():
        try:
            parser.parse(html)
        except ParseError as exc:
            pytest.fail(f"{kind} ({lang}): {exc} {parser.errors[:3]}")
    assert len(rendered) == 17 * len(LANGUAGES)


def test_the_strict_parser_does_catch_bad_html() -> None:
    with pytest.raises(ParseError):
        html5lib.HTMLParser(strict=True).parse("<!DOCTYPE html><html><body><p>a</b></body></html>")


def test_exactly_one_button_per_email(rendered: dict[tuple[str, str], str]) -> None:
    for (kind, lang), html in rendered.items():
        buttons = [a for t, a in tags(html) if t == "a" and "button" in (a.get("class") or "").split()]
        assert len(buttons) == 1, f"{kind} ({lang}): {len(buttons)} buttons"
        assert (buttons[0].get("href") or "").startswith("https://")


def test_html_lang_dir_tables_and_alt_text(rendered: dict[tuple[str, str], str]) -> None:
    for (kind, lang), html in rendered.items():
        found = tags(html)
        assert found[0] == ("html", {"lang": lang, "dir": "ltr"}), kind
        layout_tables = [a for t, a in found if t == "table"]
        assert layout_tables and all(a.get("role") == "presentation" for a in layout_tables), kind
        assert not any(t in ("div", "section", "flex") for t, _ in found), f"{kind}: layout by tables only"
        for tag, attrs in found:
            if tag == "img":
                assert (attrs.get("alt") or "").strip(), f"{kind} ({lang}): an image without alt text"


def test_a_right_to_left_language_gets_dir_rtl_and_right_alignment(tmp_path: Path) -> None:
    po = tmp_path / "locale" / "ar" / "LC_MESSAGES" / "messages.po"
    po.parent.mkdir(parents=True)
    po.write_text(
        'msgid ""\nmsgstr ""\n"Language: ar\\n"\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Best regards,"\nmsgstr "مع أطيب التحيات،"\n',
        encoding="utf-8",
    )
    html = (
        Renderer(REPO / "templates", override_dir=tmp_path).render(sample_notice("trial_reminder", "ar")).html
    )
    assert tags(html)[0] == ("html", {"lang": "ar", "dir": "rtl"})
    assert "text-align: right" in html and "text-align: left" not in html
    assert "مع أطيب التحيات،" in html


def _luminance(hex_colour: str) -> float:
    value = hex_colour.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """The WCAG 2 contrast ratio of two ``#rrggbb`` colours."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_formula_matches_wcag_examples() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic just-too-light grey


def test_every_text_colour_reads_on_every_background_of_the_layout() -> None:
    """WCAG AA (4.5:1) for every text colour in the layout's CSS.

    A rule that sets its own background (the button) is checked against it; every
    other text colour against every page background (rules with a background and no
    text colour: the grey page, the white card), since the text may sit on either.
    """
    style = re.search(r"<style>(.*?)</style>", LAYOUT.read_text(encoding="utf-8"), re.S)
    assert style is not None
    rules = re.findall(r"([^{}]+)\{([^}]*)\}", style.group(1))
    pages: list[str] = []
    checks: list[tuple[str, str, list[str]]] = []
    for selector, body in rules:
        text = re.search(r"(?<![-\w])color:\s*(#[0-9a-fA-F]{3,6})", body)
        background = re.search(r"background-color:\s*(#[0-9a-fA-F]{3,6})", body)
        if background and not text:
            pages.append(background.group(1))
        elif text:
            own = [background.group(1)] if background else []
            checks.append((selector.strip(), text.group(1), own))
    assert len(pages) >= 2 and len(checks) >= 5, "the layout's colours were not found"
    for selector, colour, own in checks:
        for bg in own or pages:
            ratio = contrast(colour, bg)
            assert ratio >= WCAG_AA, f"{selector}: {colour} on {bg} is {ratio:.2f}:1"
