"""Every notice in every shipped language: no English sentence leaks; regions and unknown locales.

The notices are the sample ones the per-workflow email tests render
(``test_mail_render``, ``test_lifecycle_emails``, ``test_price_migration_emails``),
through the real templates and catalogs; nothing is mocked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import test_lifecycle_emails as lifecycle
import test_mail_render as failed_payments
import test_price_migration_emails as prices
from babel import Locale

from dunning.mail import Renderer
from dunning.mail.locales import INVALID_LABEL, SHIPPED_LANGUAGES, fallback_label, resolve_locale
from dunning.mail.render import Formatter, RenderedEmail
from dunning.workflows.price_migrations.notices import CONFIRMED
from dunning.workflows.price_migrations.notices import KINDS as PRICE_KINDS

TRANSLATED = [language for language in SHIPPED_LANGUAGES if language != "en"]

# Each sample notice, as a function of the locale.
SAMPLES: dict[str, Callable[[str], Any]] = {}
for _kind, _variant, _fields, _ in failed_payments.CASES:
    SAMPLES[f"{_kind}-{_variant}"] = lambda loc, k=_kind, f=_fields: failed_payments.make_ctx(
        k, locale=loc, **f
    )
for _kind, _variant, _facts, _ in lifecycle.CASES:
    SAMPLES[f"{_kind}-{_variant}"] = lambda loc, k=_kind, v=_variant, f=_facts: lifecycle.make_notice(
        k, v, locale=loc, facts=f
    )
for _kind in PRICE_KINDS:
    for _choice in (None, "step_up", "annual_lock", "downgrade", "none"):
        if _kind != CONFIRMED or _choice is not None:
            SAMPLES[f"{_kind}-{_choice}"] = lambda loc, k=_kind, c=_choice: prices.make(k, loc, choice=c)

_LINK = re.compile(r"https?://\S+|\S+@example\.com")
_SENTENCE_END = re.compile(r"(?<=[.!?:,])\s+")


def visible(email: RenderedEmail) -> list[str]:
    """The subject and both bodies as plain text, whitespace collapsed, links and the operator's text masked."""
    parts = [email.subject, failed_payments.flat(email.text), failed_payments.html_text(email.html)]
    return [_LINK.sub("<link>", part).replace(prices.REASON, "<reason>") for part in parts]


def english_sentences(email: RenderedEmail) -> set[str]:
    """Sentences (and clauses) of the English email with at least three words of letters."""
    found = set()
    for part in visible(email):
        for piece in _SENTENCE_END.split(part):
            if len(re.findall(r"[A-Za-z]{2,}", piece)) >= 3:
                found.add(piece)
    return found


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(failed_payments.TEMPLATES)


def test_every_kind_has_a_sample() -> None:
    kinds = {name.rsplit("-", 1)[0] for name in SAMPLES}
    shown = set(failed_payments.KINDS) | set(lifecycle.KINDS) | set(PRICE_KINDS)
    assert kinds == shown
    assert len(SAMPLES) >= 30


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_no_english_sentence_leaks(renderer: Renderer, sample: str, language: str) -> None:
    """A msgstr missing from a catalog shows as English: any English sentence in the output is one."""
    english = renderer.render(SAMPLES[sample]("en"))
    other = renderer.render(SAMPLES[sample](language))
    assert f'lang="{language}' in other.html, f"{language} rendered in another language (no catalog?)"
    assert other.subject != english.subject
    leaked = {
        sentence for sentence in english_sentences(english) for part in visible(other) if sentence in part
    }
    assert not leaked, f"English in {sample} ({language}): {sorted(leaked)}"
    for part in visible(other):
        for marker in ("{{", "{%", "%(", "duration-", "None", "Undefined"):
            assert marker not in part, f"{marker!r} leaked into {sample} ({language})"


def test_the_leak_check_sees_a_missing_translation(renderer: Renderer) -> None:
    """An English sentence inside otherwise translated output is found (the check above can fail)."""
    english = renderer.render(SAMPLES["payment_failed-soft"]("en"))
    french = renderer.render(SAMPLES["payment_failed-soft"]("fr"))
    sentence = "Your bank declined it (insufficient funds)."
    assert sentence in english_sentences(english)
    patched = RenderedEmail(french.subject, french.html, french.text + "\n" + sentence + "\n")
    assert any(sentence in part for part in visible(patched))
    assert not any(sentence in part for part in visible(french))


@pytest.mark.parametrize(
    ("raw", "language", "formats"),
    [
        ("pt-BR", "pt", "pt_BR"),
        ("en-GB", "en", "en_GB"),
        ("fi_FI", "fi", "fi_FI"),
        ("el_GR.UTF-8", "el", "el_GR"),
        ("HU", "hu", "hu"),
        ("es-419", "es", "es_419"),
        ("ms-MY", "ms", "ms_MY"),
        ("de-XX", "de", "de"),  # a region Babel doesn't know: the language's own formats
        ("ja-JP", "en", "en"),  # no catalog: English throughout, formats included
        ("", "en", "en"),
        (None, "en", "en"),
    ],
)
def test_regions_use_their_languages_catalog_and_their_own_formats(
    raw: str | None, language: str, formats: str
) -> None:
    assert resolve_locale(raw) == (language, Locale.parse(formats))


def test_a_region_formats_dates_its_own_way(renderer: Renderer) -> None:
    us = renderer.render(failed_payments.make_ctx("final_notice", locale="en-US"))
    gb = renderer.render(failed_payments.make_ctx("final_notice", locale="en-GB"))
    assert "Friday, March 6, 2026" in failed_payments.flat(us.text)
    assert "Friday, 6 March 2026" in failed_payments.flat(gb.text)
    assert 'lang="en-GB"' in gb.html


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("ja-JP", "ja"),
        ("JA", "ja"),
        ("zh_Hant_TW", "zh"),
        ("xx-YY", INVALID_LABEL),  # shaped like a language, but none
        ("klingon", INVALID_LABEL),
        ("12", INVALID_LABEL),
        ("  -  ", INVALID_LABEL),
        ("pt-BR", None),  # a region of a shipped language is no fallback
        ("fi", None),
        ("en_GB", None),
        ("", None),  # no locale: English is the default, not a fallback
        (None, None),
    ],
)
def test_fallback_label_is_the_language_only(raw: str | None, label: str | None) -> None:
    assert fallback_label(raw) == label


def test_fallback_labels_stay_bounded() -> None:
    """Whatever profiles hold, the label is a known language code or "invalid"."""
    labels = {fallback_label(f"{a}{b}-{a}{b}{a}") for a in "abcdefghijklmnopqrstuvwxyz" for b in "aeiouxz"}
    assert INVALID_LABEL in labels
    assert all(label is None or label == INVALID_LABEL or Locale.parse(label) for label in labels)


@pytest.mark.parametrize(
    ("locale", "amount"),
    [
        ("en", "€29.00"),
        ("en_GB", "€29.00"),
        ("fi", "29,00 €"),
        ("fi_FI", "29,00 €"),
        ("el", "29,00 €"),
        ("hu", "29,00 EUR"),
        ("de", "29,00 €"),
        ("es", "29,00 €"),
    ],
)
def test_money_in_the_customers_locale(locale: str, amount: str) -> None:
    fmt = Formatter(Locale.parse(locale), UTC, lambda message: message)
    assert failed_payments.norm(fmt.money(2900, "EUR")) == amount


def test_finnish_dates_and_times() -> None:
    fmt = Formatter(Locale.parse("fi"), UTC, lambda message: message)
    at = datetime(2026, 3, 6, 8, 30, tzinfo=UTC)
    assert fmt.date(at) == "perjantai 6. maaliskuuta 2026"
    assert failed_payments.norm(fmt.date(at, "long") or "") == "6. maaliskuuta 2026"


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_html_and_text_say_the_same_and_lines_wrap(renderer: Renderer, sample: str, language: str) -> None:
    email = renderer.render(SAMPLES[sample](language))
    text = failed_payments.flat(email.text)
    paragraphs = re.findall(r"<p(?![^>]*fallback)[^>]*>(.*?)</p>", email.html, flags=re.S)
    assert len(paragraphs) >= 4
    for paragraph in paragraphs:
        # A price choice's link label: its text counterpart is "label: URL" on a line of its own.
        body = re.sub(r'<a [^>]*href="https://acme\.example/l/[^"]*"[^>]*>.*?</a>', "", paragraph, flags=re.S)
        assert failed_payments.html_text(body) in text
    assert max(len(line) for line in email.text.splitlines() if "://" not in line) <= 76
