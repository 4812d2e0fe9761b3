"""Rendering of customer notices: every kind and variant, in every shipped language.

These run the real templates and catalogs from the repository's ``templates/``
folder; nothing is mocked.
"""

from __future__ import annotations

import html as html_lib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from dunning.mail import Renderer, find_templates_dir, format_money
from dunning.workflows.failed_payments.notices import KINDS, NoticeContext
from dunning.workflows.failed_payments.reasons import GENERIC_REASON, REASONS, describe_reason

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
LANGUAGES = ("en", "fr", "de")

# 23:30 UTC is already the next morning in Tokyo: a date printed in UTC would be off by one.
SUSPEND_AT = datetime(2026, 3, 5, 23, 30, tzinfo=UTC)
NEXT_RETRY_AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
END_AT = datetime(2026, 3, 19, 20, 0, tzinfo=UTC)

AMOUNT = {"en": "€49.00", "fr": "49,00 €", "de": "49,00 €"}
SUSPEND_DATE = {"en": "March 6, 2026", "fr": "6 mars 2026", "de": "6. März 2026"}
RETRY_DATE = {"en": "March 3, 2026", "fr": "3 mars 2026", "de": "3. März 2026"}
END_DATE = {"en": "March 20, 2026", "fr": "20 mars 2026", "de": "20. März 2026"}
UTC_DATES = ("March 5, 2026", "March 2, 2026", "March 19, 2026")

# (kind, variant id, context fields, which dates the email must name)
CASES: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    (
        "payment_failed",
        "soft",
        {"decline_class": "soft", "decline_reason": "insufficient_funds"},
        ("suspend", "retry"),
    ),
    ("payment_failed", "hard", {"decline_class": "hard", "decline_reason": "stolen_card"}, ("suspend",)),
    (
        "payment_failed",
        "expired",
        {"decline_class": "expired", "decline_reason": "expired_card"},
        ("suspend",),
    ),
    ("payment_failed", "no_payment_method", {"decline_class": "no_payment_method"}, ("suspend",)),
    (
        "payment_failed",
        "action_required",
        {"decline_class": "action_required", "decline_reason": "authentication_required"},
        ("suspend",),
    ),
    (
        "payment_failed",
        "unknown_class",
        {"decline_class": "mystery", "decline_reason": "weird"},
        ("suspend",),
    ),
    ("payment_reminder", "default", {}, ("suspend", "retry")),
    ("final_notice", "default", {}, ("suspend", "retry")),
    ("access_suspended", "cancel", {"end_action": "cancel"}, ("suspend", "end")),
    (
        "access_suspended",
        "downgrade",
        {"end_action": "downgrade", "downgrade_plan": "Free", "downgrade_amount_minor": 0},
        ("suspend", "end"),
    ),
    ("payment_recovered", "active", {}, ()),
    ("payment_recovered", "restored", {"was_suspended": True}, ()),
    ("subscription_ended", "cancel", {"end_action": "cancel"}, ("end",)),
    (
        "subscription_ended",
        "downgrade",
        {"end_action": "downgrade", "downgrade_plan": "Basic", "downgrade_amount_minor": 900},
        ("end",),
    ),
]
CASE_IDS = [f"{kind}-{variant}" for kind, variant, _, _ in CASES]


def make_ctx(kind: str, **fields: Any) -> NoticeContext:
    """A complete context for ``kind``; the per-kind fields the templates need are left to ``fields``."""
    base: dict[str, Any] = {
        "kind": kind,
        "customer_name": "Ada",
        "customer_email": "ada@example.com",
        "locale": "en",
        "timezone": "Asia/Tokyo",
        "plan": "Pro",
        "amount_minor": 4900,
        "currency": "EUR",
        "next_retry_at": NEXT_RETRY_AT,
        "suspend_at": SUSPEND_AT,
        "end_at": END_AT,
        "action_url": "https://acme.example/billing/update?token=abc&step=2",
        "card_brand": "visa",
        "card_last4": "4242",
    }
    base.update(fields)
    return NoticeContext(**base)


def norm(value: str) -> str:
    """Babel uses no-break spaces in money and times; compare with plain spaces."""
    return value.replace("\u00a0", " ").replace("\u202f", " ")


def html_text(value: str) -> str:
    """The visible text of an HTML email, whitespace collapsed."""
    body = re.sub(r"<(style|title)[^>]*>.*?</\1>", " ", value, flags=re.S)
    body = re.sub(r"</?(a|b|strong|em|span)\b[^>]*>", "", body)  # inline: no word break
    return " ".join(norm(html_lib.unescape(re.sub(r"<[^>]+>", " ", body))).split())


def flat(value: str) -> str:
    return " ".join(norm(value).split())


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("kind", "variant", "fields", "dates"), CASES, ids=CASE_IDS)
def test_every_kind_renders_with_amount_and_local_dates(
    renderer: Renderer, kind: str, variant: str, fields: dict[str, Any], dates: tuple[str, ...], language: str
) -> None:
    email = renderer.render(make_ctx(kind, locale=language, **fields))

    assert email.subject.strip() and "\n" not in email.subject
    assert email.html.strip() and email.text.strip()
    text, shown = flat(email.text), html_text(email.html)
    for part in (text, shown):
        assert AMOUNT[language] in part
        assert "Ada" in part
        if "suspend" in dates:
            assert SUSPEND_DATE[language] in part
        if "retry" in dates:
            assert RETRY_DATE[language] in part
        if "end" in dates:
            assert END_DATE[language] in part
        if language == "en":
            for utc_date in UTC_DATES:
                assert utc_date not in part, "a date was printed in UTC, not in the customer's zone"
    # One obvious action: the link is there, once as a button (plus its copy-paste fallback).
    assert email.html.count('class="button"') == 1
    assert "https://acme.example/billing/update?token=abc&step=2" in email.text
    assert 'href="https://acme.example/billing/update?token=abc&amp;step=2"' in email.html
    # The footer says why they got it.
    assert "ada@example.com" in text and "support@example.com" in text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("kind", "variant", "fields", "dates"), CASES, ids=CASE_IDS)
def test_no_template_syntax_or_missing_values_leak(
    renderer: Renderer, kind: str, variant: str, fields: dict[str, Any], dates: tuple[str, ...], language: str
) -> None:
    email = renderer.render(make_ctx(kind, locale=language, **fields))
    for part in (email.subject, email.text, html_text(email.html)):
        for marker in ("{{", "}}", "{%", "%}", "%(", ")s", "None", "Undefined"):
            assert marker not in part, f"{marker!r} leaked into {kind}/{variant} ({language})"
    # A reason code is for machines; customers read words.
    assert "_" not in email.subject
    if fields.get("decline_reason"):
        assert fields["decline_reason"] not in email.text


@pytest.mark.parametrize(("kind", "variant", "fields", "dates"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("language", ["fr", "de"])
def test_translations_differ_from_english(
    renderer: Renderer, kind: str, variant: str, fields: dict[str, Any], dates: tuple[str, ...], language: str
) -> None:
    english = renderer.render(make_ctx(kind, **fields))
    other = renderer.render(make_ctx(kind, locale=language, **fields))
    assert other.subject != english.subject
    # No English sentence survives in the translation (a missing msgstr falls back to English).
    english_lines = {line for line in english.text.splitlines() if len(line) > 25 and "://" not in line}
    assert not english_lines & set(other.text.splitlines())
    assert f'lang="{language}' in other.html


@pytest.mark.parametrize(("kind", "variant", "fields", "dates"), CASES, ids=CASE_IDS)
def test_html_and_text_say_the_same(
    renderer: Renderer, kind: str, variant: str, fields: dict[str, Any], dates: tuple[str, ...]
) -> None:
    email = renderer.render(make_ctx(kind, locale="fr", **fields))
    text = flat(email.text)
    paragraphs = re.findall(r"<p(?![^>]*fallback)[^>]*>(.*?)</p>", email.html, flags=re.S)
    assert len(paragraphs) >= 4
    for paragraph in paragraphs:
        assert html_text(paragraph) in text


@pytest.mark.parametrize("language", ["fr", "de"])
def test_every_msgid_is_translated(language: str) -> None:
    """Each catalog entry has a translation, and it keeps exactly the msgid's placeholders."""
    with (TEMPLATES / "locale" / language / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalog = read_po(fh, locale=language)
    entries = [m for m in catalog if m.id]
    assert len(entries) > 50
    for message in entries:
        assert message.string, f"untranslated in {language}: {message.id!r}"
        assert not message.fuzzy, f"fuzzy in {language}: {message.id!r}"
        placeholders = sorted(re.findall(r"%\(\w+\)s", message.id))
        assert sorted(re.findall(r"%\(\w+\)s", message.string)) == placeholders, message.id


def test_catalogs_cover_every_string_in_the_templates() -> None:
    """The .pot (and so the catalogs) is up to date with the templates and reason phrases."""
    with (TEMPLATES / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    found = {msgid for _, _, msgid, _, _ in extract_from_dir(REPO, method_map, options_map)}
    found = {m if isinstance(m, str) else m[0] for m in found}
    for name in ("messages.pot", "fr/LC_MESSAGES/messages.po", "de/LC_MESSAGES/messages.po"):
        with (TEMPLATES / "locale" / name).open("rb") as fh:
            ids = {m.id for m in read_po(fh) if m.id}
        assert found <= ids, f"{name} lacks {sorted(found - ids)}: run pybabel extract/update"


def test_soft_decline_in_english_reads_right(renderer: Renderer) -> None:
    email = renderer.render(
        make_ctx("payment_failed", decline_class="soft", decline_reason="insufficient_funds")
    )
    text = flat(email.text)
    assert email.subject == "Your payment of €49.00 for Acme didn't go through"
    assert "We couldn't collect your payment of €49.00 for your Pro plan." in text
    assert "Your bank declined it (insufficient funds)." in text
    assert "We'll try again automatically on Tuesday, March 3, 2026." in text
    assert "your access will be suspended" in text
    assert "Update payment method: https://acme.example/" in text
    assert email.text.startswith("Hi Ada,\n\n")
    assert max(len(line) for line in email.text.splitlines() if "://" not in line) <= 76


def test_french_amount_and_date(renderer: Renderer) -> None:
    email = renderer.render(make_ctx("payment_failed", locale="fr", decline_class="soft"))
    text = flat(email.text)
    assert "49,00 €" in text
    assert "le mardi 3 mars 2026" in text
    assert email.text.startswith("Bonjour Ada,")


def test_hard_decline_does_not_reveal_a_fraud_flag(renderer: Renderer) -> None:
    email = renderer.render(make_ctx("payment_failed", decline_class="hard", decline_reason="stolen_card"))
    text = flat(email.text)
    assert "stolen" not in text.lower()
    assert "Your Visa card ending in 4242 can't be charged (the card has been blocked by the bank)" in text
    assert "Please use another card" in text


def test_no_payment_method_is_not_a_failed_payment_email(renderer: Renderer) -> None:
    """A customer with no card on file was never charged: don't tell them a payment failed."""
    email = renderer.render(make_ctx("payment_failed", decline_class="no_payment_method", card_brand=None))
    text = flat(email.text).lower()
    assert "declined" not in text and "couldn't collect" not in text and "didn't go through" not in text
    assert "no payment method on file" in text
    assert email.subject == "Add a payment method: your payment of €49.00 for Acme is due"


@pytest.mark.parametrize(
    ("language", "expected_time"),
    [
        ("en", "Friday, March 6, 2026 at 8:30 AM (Tokyo time)"),
        ("fr", "vendredi 6 mars 2026 à 08:30 (heure de Tokyo)"),
        ("de", "Freitag, 6. März 2026 um 08:30 Uhr (Ortszeit Tokio)"),
    ],
)
def test_final_notice_names_exact_suspension_moment(
    renderer: Renderer, language: str, expected_time: str
) -> None:
    email = renderer.render(make_ctx("final_notice", locale=language))
    assert expected_time in flat(email.text)
    assert expected_time in html_text(email.html)
    assert SUSPEND_DATE[language] in norm(email.subject)


def test_final_notice_in_utc_names_utc(renderer: Renderer) -> None:
    email = renderer.render(make_ctx("final_notice", timezone="UTC"))
    assert "Thursday, March 5, 2026 at 11:30 PM (UTC)" in flat(email.text)


@pytest.mark.parametrize(
    ("currency", "minor", "expected", "absent"),
    [
        ("JPY", 4900, "¥4,900", "4,900.00"),
        ("jpy", 4900, "¥4,900", "49.00"),
        ("KWD", 12345, "12.345", "123.45"),
        ("USD", 1999, "$19.99", None),
    ],
)
def test_currency_precision(
    renderer: Renderer, currency: str, minor: int, expected: str, absent: str | None
) -> None:
    email = renderer.render(make_ctx("payment_recovered", currency=currency, amount_minor=minor))
    text = flat(email.text)
    assert expected in text
    if absent:
        assert absent not in text


def test_format_money_uses_minor_units() -> None:
    assert norm(format_money(4900, "EUR", "fr")) == "49,00 €"
    assert format_money(4900, "JPY", "en") == "¥4,900"
    assert format_money(5, "EUR", "en") == "€0.05"


def test_customer_name_is_escaped_in_html(renderer: Renderer) -> None:
    email = renderer.render(make_ctx("payment_failed", customer_name="<script>alert(1)</script>"))
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "<script>" not in email.subject


def test_hostile_card_data_is_dropped_or_escaped(renderer: Renderer) -> None:
    email = renderer.render(
        make_ctx("payment_failed", decline_class="expired", card_brand="<b>x</b>", card_last4="12<img>")
    )
    assert "<b>" not in email.html and "<img>" not in email.html
    assert "12<img>" not in email.text


@pytest.mark.parametrize("locale", ["xx-YY", "", "klingon", "zz_ZZ", "12"])
def test_unknown_locale_falls_back_to_english(renderer: Renderer, locale: str) -> None:
    english = renderer.render(make_ctx("payment_reminder"))
    assert renderer.render(make_ctx("payment_reminder", locale=locale)) == english


@pytest.mark.parametrize(
    ("locale", "greeting"), [("fr-FR", "Bonjour"), ("FR", "Bonjour"), ("de_AT", "Hallo")]
)
def test_locale_spellings_are_understood(renderer: Renderer, locale: str, greeting: str) -> None:
    assert renderer.render(make_ctx("payment_reminder", locale=locale)).text.startswith(f"{greeting} Ada,")


def test_supported_language_keeps_its_territory_formats(renderer: Renderer) -> None:
    """fr_CA formats times its own way while using the French catalog."""
    email = renderer.render(make_ctx("final_notice", locale="fr_CA"))
    assert "08 h 30 (heure de Tokyo)" in flat(email.text)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../../etc/passwd", "Europe", " "])
def test_unknown_timezone_falls_back_to_utc(renderer: Renderer, zone: str) -> None:
    utc = renderer.render(make_ctx("final_notice", timezone="UTC"))
    assert renderer.render(make_ctx("final_notice", timezone=zone)) == utc


def test_naive_datetimes_are_read_as_utc(renderer: Renderer) -> None:
    aware = renderer.render(make_ctx("final_notice"))
    naive = renderer.render(make_ctx("final_notice", suspend_at=SUSPEND_AT.replace(tzinfo=None)))
    assert naive == aware


def test_missing_name_and_optional_dates(renderer: Renderer) -> None:
    email = renderer.render(
        make_ctx(
            "payment_failed", customer_name="  ", decline_class="soft", next_retry_at=None, suspend_at=None
        )
    )
    assert email.text.startswith("Hello,\n")
    assert "suspended" not in email.text
    assert "Please update your payment method" in email.text


def test_without_action_url_there_is_no_button(renderer: Renderer) -> None:
    email = renderer.render(make_ctx("payment_recovered", action_url=None))
    assert 'class="button"' not in email.html
    assert "http" not in email.text


def test_recovered_mentions_restoration_only_when_suspended(renderer: Renderer) -> None:
    active = renderer.render(make_ctx("payment_recovered"))
    restored = renderer.render(make_ctx("payment_recovered", was_suspended=True))
    assert "restored" not in active.text and "restored" in restored.text
    assert restored.subject == "Your Acme access is restored: your payment of €49.00 went through"


def test_downgrade_says_the_new_price_and_that_nothing_is_lost(renderer: Renderer) -> None:
    email = renderer.render(
        make_ctx(
            "subscription_ended", end_action="downgrade", downgrade_plan="Basic", downgrade_amount_minor=900
        )
    )
    text = flat(email.text)
    assert "moved to the Basic plan on Friday, March 20, 2026" in text
    assert "The Basic plan costs €9.00." in text
    assert "Nothing is lost" in text
    assert "Switch back to Pro: https://" in text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "renewal_notice"}, "kind"),
        ({"kind": "subscription_ended"}, "end_action"),
        ({"kind": "access_suspended", "end_action": "delete"}, "end_action"),
        ({"kind": "access_suspended", "end_action": "downgrade"}, "downgrade_plan"),
        ({"kind": "payment_reminder", "action_url": "javascript:alert(1)"}, "action_url"),
    ],
)
def test_programming_errors_are_refused_naming_the_field(
    renderer: Renderer, fields: dict[str, Any], field: str
) -> None:
    ctx = make_ctx("payment_reminder")
    with pytest.raises(ValueError, match=field):
        renderer.render(replace(ctx, **fields))


def test_reason_words() -> None:
    assert describe_reason("insufficient_funds") == "insufficient funds"
    assert describe_reason("Insufficient-Funds") == "insufficient funds"
    assert describe_reason("something_new") == GENERIC_REASON
    assert describe_reason(None) is None
    assert describe_reason("") is None
    assert all(phrase == phrase.strip() and phrase[0].islower() for phrase in REASONS.values())


def test_every_kind_has_both_templates() -> None:
    # Each workflow's templates live in a folder named after it (templates/email/<workflow>/).
    for kind in KINDS:
        assert (TEMPLATES / "email" / "failed_payments" / f"{kind}.html").is_file()
        assert (TEMPLATES / "email" / "failed_payments" / f"{kind}.txt").is_file()


def test_templates_dir_discovery(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DUNNING_BUILTIN_TEMPLATES", raising=False)
    monkeypatch.delenv("DUNNING_TEMPLATES", raising=False)
    assert find_templates_dir().resolve() == TEMPLATES
    monkeypatch.setenv("DUNNING_BUILTIN_TEMPLATES", str(tmp_path))
    assert find_templates_dir() == tmp_path
    with pytest.raises(FileNotFoundError):
        Renderer()  # the folder has no email/ templates
    # The old name still works, and the new one wins over it.
    monkeypatch.delenv("DUNNING_BUILTIN_TEMPLATES")
    monkeypatch.setenv("DUNNING_TEMPLATES", str(tmp_path / "old"))
    assert find_templates_dir() == tmp_path / "old"
    monkeypatch.setenv("DUNNING_BUILTIN_TEMPLATES", str(tmp_path))
    assert find_templates_dir() == tmp_path


def test_concurrent_first_use_is_safe() -> None:
    fresh = Renderer(TEMPLATES)
    contexts = [make_ctx("payment_reminder", locale=lang) for lang in LANGUAGES * 8]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(fresh.render, contexts))
    reference = {
        lang: Renderer(TEMPLATES).render(make_ctx("payment_reminder", locale=lang)) for lang in LANGUAGES
    }
    assert all(result == reference[ctx.locale] for result, ctx in zip(results, contexts, strict=True))


def test_rendering_is_fast(renderer: Renderer) -> None:
    """Environments and templates are cached: a render costs well under a millisecond (generous bound for CI)."""
    ctx = make_ctx("payment_failed", locale="de", decline_class="soft")
    renderer.render(ctx)
    count = 300
    start = time.perf_counter()
    for _ in range(count):
        renderer.render(ctx)
    per_email_ms = (time.perf_counter() - start) / count * 1000
    assert per_email_ms < 5, f"{per_email_ms:.2f} ms per email"


def test_a_template_compiles_once_for_every_language_and_each_keeps_its_own() -> None:
    """The environments of the languages share compiled templates, not translations."""
    fresh = Renderer(TEMPLATES)
    compiled: list[str] = []
    for language in ("en", "fr", "de"):
        fresh.environment(language).compile = _counting(fresh.environment(language).compile, compiled)
    english = fresh.render(make_ctx("payment_failed", locale="en", decline_class="soft"))
    after_english = len(compiled)
    french = fresh.render(make_ctx("payment_failed", locale="fr", decline_class="soft"))
    german = fresh.render(make_ctx("payment_failed", locale="de", decline_class="soft"))
    assert after_english >= 2  # the kind's text and HTML templates (and the layouts they extend)
    assert len(compiled) == after_english  # French and German reused them
    assert english.text.startswith("Hi Ada,")
    assert french.text.startswith("Bonjour Ada,")
    assert "49,00 €" in flat(german.text) and "3. März 2026" in flat(german.text)


def _counting(compile_: Any, calls: list[str]) -> Any:
    def wrapped(source: Any, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(name))
        return compile_(source, name, *args, **kwargs)

    return wrapped
