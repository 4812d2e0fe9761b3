"""The languages customer emails are shipped in, and how a profile's locale string maps onto them.

One list (:data:`SHIPPED_LANGUAGES`) says which languages we promise; the
catalog completeness test (``tests/unit/test_catalogs.py``) fails unless each
of them has a complete catalog under ``templates/locale``, the renderer uses
no other, and the ``dunning_email_locale_fallback_total`` metric counts the
emails whose customer asked for anything else. Pure code: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from babel import Locale, UnknownLocaleError

SOURCE_LANGUAGE = "en"

#: Every language customer emails are written in: English (the source) plus one
#: gettext catalog each. Adding one: see templates/README.md.
SHIPPED_LANGUAGES: tuple[str, ...] = ("en", "el", "ms", "fi", "pt", "hu", "de", "fr", "es")

#: The metric label for a locale string that names no language at all.
INVALID_LABEL = "invalid"

# A language subtag (ISO 639: two or three letters); anything else is not a locale.
_LANGUAGE = re.compile(r"[a-z]{2,3}")


def _split(raw: str | None) -> list[str]:
    """The subtags of ``raw``: BCP 47 (``fr-CA``), POSIX (``fr_CA.UTF-8@euro``) and bare languages alike."""
    if not raw or not isinstance(raw, str):
        return []
    cleaned = raw.strip().split(".")[0].split("@")[0].replace("-", "_")
    return [p for p in cleaned.split("_") if p]


@lru_cache(maxsize=1024)
def resolve_locale(raw: str | None, languages: Iterable[str] = SHIPPED_LANGUAGES) -> tuple[str, Locale]:
    """(catalog language, formatting locale) for a profile's locale string.

    A region falls back to its language's catalog but keeps its own formats
    when Babel knows it (``pt-BR``, ``en-GB``, ``fr_CA`` write dates and times
    their own way). A language without a catalog gets English throughout:
    Finnish numbers around English sentences would read as a bug.
    ``languages`` must be hashable (a tuple or frozenset): results are cached.
    """
    fallback = (SOURCE_LANGUAGE, Locale.parse(SOURCE_LANGUAGE))
    parts = _split(raw)
    if not parts:
        return fallback
    language = parts[0].lower()
    if language not in languages:
        return fallback
    candidates = []
    if len(parts) > 1:
        candidates.append(f"{language}_{parts[-1].upper()}")
    candidates.append(language)
    for candidate in candidates:
        try:
            locale = Locale.parse(candidate)
        except (UnknownLocaleError, ValueError, TypeError):
            continue
        if locale.language == language:
            return language, locale
    return fallback


@lru_cache(maxsize=1024)
def fallback_label(raw: str | None, languages: Iterable[str] = SHIPPED_LANGUAGES) -> str | None:
    """The metric label for an email that fell back to English, or None when it did not.

    None for a locale we ship (any region of it) and for no locale at all
    (English is then the customer's default, not a fallback). Otherwise the
    language part only (``"ja"`` for ``ja-JP``), or :data:`INVALID_LABEL` when
    it is not a language Babel knows: the label's values stay a few hundred
    at most, whatever customers' profiles hold.
    """
    parts = _split(raw)
    if not parts:
        return None if not (raw or "").strip() else INVALID_LABEL
    language = parts[0].lower()
    if language in languages:
        return None
    if not _LANGUAGE.fullmatch(language):
        return INVALID_LABEL
    try:
        Locale.parse(language)
    except (UnknownLocaleError, ValueError, TypeError):
        return INVALID_LABEL
    return language
