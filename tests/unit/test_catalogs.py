"""Completeness of the translation catalogs: every shipped language, every string, nothing stale.

Fails when a catalog of a shipped language is missing, lacks a msgid of the
``.pot`` or leaves it empty, keeps a fuzzy, unused or obsolete (``#~``) entry,
changes a ``%(name)s`` placeholder or a tag, or when the committed ``.pot`` no
longer matches the strings marked in the templates and the Python code
(re-extracted here with Babel, as ``pybabel extract`` would). How to fix each:
templates/README.md.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from dunning.mail import Renderer
from dunning.mail.locales import SHIPPED_LANGUAGES, SOURCE_LANGUAGE

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
LOCALE_DIR = TEMPLATES / "locale"
TRANSLATED = [language for language in SHIPPED_LANGUAGES if language != SOURCE_LANGUAGE]

# gettext's Plural-Forms for each language (GNU gettext's table; Malay has no plural,
# as in CLDR). No msgid uses ngettext today; the header must still be right for the first one that does.
PLURAL_FORMS = {
    "de": "nplurals=2; plural=(n != 1);",
    "el": "nplurals=2; plural=(n != 1);",
    "es": "nplurals=2; plural=(n != 1);",
    "fi": "nplurals=2; plural=(n != 1);",
    "fr": "nplurals=2; plural=(n > 1);",
    "hu": "nplurals=2; plural=(n != 1);",
    "ms": "nplurals=1; plural=0;",
    "pt": "nplurals=2; plural=(n != 1);",
}

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_TAG = re.compile(r"<[^<>]+>")


def _read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as fh:
        return read_po(fh, locale=locale)


def _po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"


@pytest.fixture(scope="module")
def pot_ids() -> set[str]:
    return {m.id for m in _read(LOCALE_DIR / "messages.pot") if m.id}


def test_the_shipped_languages_are_the_nine_promised() -> None:
    assert sorted(SHIPPED_LANGUAGES) == sorted(["en", "el", "ms", "fi", "pt", "hu", "de", "fr", "es"])
    assert len(set(SHIPPED_LANGUAGES)) == len(SHIPPED_LANGUAGES)
    assert set(PLURAL_FORMS) == set(TRANSLATED)


def test_every_catalog_on_disk_is_a_shipped_language() -> None:
    """A catalog nobody ships is checked by nobody (and the renderer ignores it)."""
    on_disk = {po.parent.parent.name for po in LOCALE_DIR.glob("*/LC_MESSAGES/messages.po")}
    assert on_disk <= set(TRANSLATED), f"not in SHIPPED_LANGUAGES: {sorted(on_disk - set(TRANSLATED))}"


def test_the_renderer_writes_every_shipped_language() -> None:
    assert Renderer(TEMPLATES).languages == frozenset(SHIPPED_LANGUAGES)


def test_the_pot_holds_exactly_the_strings_marked_in_templates_and_code(pot_ids: set[str]) -> None:
    """Re-extracts with templates/babel.cfg in-process and compares with the committed .pot."""
    with (TEMPLATES / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    found = set()
    for _, _, msgid, _, _ in extract_from_dir(REPO, method_map, options_map):
        found.add(msgid if isinstance(msgid, str) else msgid[0])
    assert found, "extraction found nothing: is templates/babel.cfg right?"
    missing, unused = sorted(found - pot_ids), sorted(pot_ids - found)
    assert not missing, f"marked but not in messages.pot (run pybabel extract): {missing}"
    assert not unused, f"in messages.pot but marked nowhere (run pybabel extract): {unused}"


def catalog_problems(language: str, catalog: Catalog, pot_ids: set[str]) -> list[str]:
    """Everything wrong with one language's catalog against the .pot, one line each."""
    problems = []
    if str(catalog.locale) != language:
        problems.append(f"the Language header says {catalog.locale}")
    ids = {m.id for m in catalog if m.id}
    problems += [f"missing (run pybabel update, then translate): {i!r}" for i in sorted(pot_ids - ids)]
    problems += [f"unused (not in the .pot): {i!r}" for i in sorted(ids - pot_ids)]
    problems += [f"obsolete (#~): {i!r}" for i in sorted(catalog.obsolete)]
    for message in catalog:
        if not message.id:
            continue
        text = message.string
        if not isinstance(text, str):
            problems.append(f"unexpected plural entry: {message.id!r}")
            continue
        if not text:
            problems.append(f"untranslated: {message.id!r}")
            continue
        if message.fuzzy:
            problems.append(f"fuzzy (review it, then drop the flag): {message.id!r}")
        if Counter(_PLACEHOLDER.findall(text)) != Counter(_PLACEHOLDER.findall(message.id)):
            problems.append(f"placeholders differ: {message.id!r} -> {text!r}")
        # Any other % breaks gettext's formatting of the whole sentence at render time.
        if "%" in _PLACEHOLDER.sub("", text):
            problems.append(f"stray %: {text!r}")
        if sorted(_TAG.findall(text)) != sorted(_TAG.findall(message.id)):
            problems.append(f"markup differs: {message.id!r} -> {text!r}")
        if text != text.strip() or "\n" in text:
            problems.append(f"stray whitespace: {text!r}")
    return problems


@pytest.mark.parametrize("language", TRANSLATED)
def test_catalog_is_complete_and_exact(language: str, pot_ids: set[str]) -> None:
    """Every msgid translated (not fuzzy), nothing unused or obsolete, placeholders and tags kept."""
    path = _po_path(language)
    assert path.is_file(), f"{language} is shipped but has no catalog at {path.relative_to(REPO)}"
    problems = catalog_problems(language, _read(path, language), pot_ids)
    assert not problems, f"{language}/LC_MESSAGES/messages.po:\n" + "\n".join(problems)


@pytest.mark.parametrize("language", TRANSLATED)
def test_plural_forms_header(language: str) -> None:
    path = _po_path(language)
    assert path.is_file(), f"{language} is shipped but has no catalog"
    headers = dict(_read(path, language).mime_headers)
    assert " ".join(headers.get("Plural-Forms", "").split()) == PLURAL_FORMS[language]


def test_a_broken_catalog_is_caught(pot_ids: set[str]) -> None:
    """Each kind of damage is reported: the check above can fail."""
    catalog = _read(_po_path("fr"), "fr")
    assert catalog_problems("fr", catalog, pot_ids) == []
    ids = sorted(m.id for m in catalog if m.id)
    with_placeholder = [i for i in ids if "%(" in i]
    ids = [i for i in ids if "%(" not in i]
    catalog[ids[0]].flags.add("fuzzy")
    catalog[ids[1]].string = ""
    catalog[with_placeholder[0]].string = "sans variable"
    catalog[with_placeholder[1]].string = "100 % " + with_placeholder[1]
    catalog.add("Not in the template any more", "Plus dans le modèle")
    catalog.obsolete["Gone"] = catalog["Not in the template any more"]
    del catalog[ids[2]]
    catalog[ids[3]].string = catalog[ids[3]].string + "\n"
    problems = "\n".join(catalog_problems("de", catalog, pot_ids))
    for expected in (
        "Language header",
        f"fuzzy (review it, then drop the flag): {ids[0]!r}",
        f"untranslated: {ids[1]!r}",
        f"placeholders differ: {with_placeholder[0]!r}",
        "stray %",
        "stray whitespace",
        "unused (not in the .pot): 'Not in the template any more'",
        "obsolete (#~): 'Gone'",
        f"missing (run pybabel update, then translate): {ids[2]!r}",
    ):
        assert expected in problems
