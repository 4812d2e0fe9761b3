"""Rendering of the price-migration emails (notice, reminder, choice confirmation) in every language.

The real templates and catalogs, through the same ``Renderer.render`` every
workflow uses; nothing is mocked.
"""

from __future__ import annotations

import html as html_lib
import re
from pathlib import Path
from typing import Any

import pytest

from dunning.mail import Renderer
from dunning.workflows.price_migrations.notices import CONFIRMED, KINDS, NOTICE, REMINDER, PriceNotice

REPO = Path(__file__).resolve().parents[2]
LANGUAGES = ("en", "fr", "de")
ZONE = "America/Los_Angeles"
# 02:00 UTC on Mar 2 is still Mar 1 in Los Angeles: a date printed in UTC is off by one.
APPLIES = "2027-03-02T02:00:00Z"
DATE = {"en": "Monday, March 1, 2027", "fr": "lundi 1 mars 2027", "de": "Montag, 1. März 2027"}
SHORT_DATE = {"en": "March 1, 2027", "fr": "1 mars 2027", "de": "1. März 2027"}
UTC_DATES = ("March 2, 2027", "2 mars 2027", "2. März 2027")
OLD = {"en": "€49.00 a month", "fr": "49,00 € par mois", "de": "49,00 € pro Monat"}
NEW = {"en": "€59.00 a month", "fr": "59,00 € par mois", "de": "59,00 € pro Monat"}
STEP = {"en": "€53.10 a month", "fr": "53,10 € par mois", "de": "53,10 € pro Monat"}
MONTHS = {"en": "3 months", "fr": "3 mois", "de": "3 Monate"}
REASON = "New reporting & a 24/7 <support> line"
LINKS = {
    "manage": "https://acme.example/l/manage?t=1&x=2",
    "step_up": "https://acme.example/l/step?t=2&x=2",
    "annual_lock": "https://acme.example/l/annual?t=3&x=2",
    "downgrade": "https://acme.example/l/down?t=4&x=2",
    "none": "https://acme.example/l/keep?t=5&x=2",
}
FACTS: dict[str, Any] = {
    "plan": "Pro",
    "currency": "EUR",
    "interval": "month",
    "interval_count": 1,
    "old_amount_minor": 4900,
    "new_amount_minor": 5900,
    "applies_at": APPLIES,
    "reason": REASON,
    "choice": None,
    "offers": {
        "step_up": {"amount_minor": 5310, "percent": 10, "months": 3},
        "annual_lock": {"amount_minor": 49980},
        "downgrade": {"plan": "Basic", "amount_minor": 3900},
    },
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(REPO / "templates")


def make(kind: str, locale: str = "en", links: dict[str, str] | None = None, **facts: Any) -> PriceNotice:
    if links is None:
        links = dict(LINKS) if kind != CONFIRMED else {"manage": LINKS["manage"]}
    choice = facts.pop("choice", "step_up" if kind == CONFIRMED else None)
    return PriceNotice(
        kind=kind,
        customer_name="Ada",
        customer_email="ada@example.com",
        locale=locale,
        timezone=ZONE,
        facts={**FACTS, "choice": choice, **facts},
        links=links,
    )


def norm(value: str) -> str:
    return value.replace("\u00a0", " ").replace("\u202f", " ")


def flat(value: str) -> str:
    return " ".join(norm(value).split())


def html_text(value: str) -> str:
    body = re.sub(r"<(style|title)[^>]*>.*?</\1>", " ", value, flags=re.S)
    body = re.sub(r"</?(a|b|strong|em|span)\b[^>]*>", "", body)
    return " ".join(norm(html_lib.unescape(re.sub(r"<[^>]+>", " ", body))).split())


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_email_shows_prices_the_local_date_and_its_links_in_both_bodies(
    renderer: Renderer, kind: str, language: str
) -> None:
    email = renderer.render(make(kind, language))
    assert email.subject.strip() and "\n" not in email.subject
    for part in (flat(email.text), html_text(email.html)):
        assert norm(DATE[language]) in part
        assert NEW[language] in part and STEP[language] in part if kind != REMINDER else NEW[language] in part
        for utc_date in UTC_DATES:
            assert utc_date not in part, "a date was printed in UTC, not in the customer's zone"
        assert "ada@example.com" in part
        if kind != CONFIRMED:
            assert OLD[language] in part or kind == REMINDER
            assert REASON in part  # the operator's words, as written
    # One button (the account); every choice link in both bodies, as plain links.
    assert email.html.count('class="button"') == 1
    assert f'class="button" href="{LINKS["manage"].replace("&", "&amp;")}"' in email.html
    shown = {name for name, url in LINKS.items() if url in email.text}
    assert shown == (set(LINKS) if kind != CONFIRMED else {"manage"})
    for name in shown:
        assert f'href="{LINKS[name].replace("&", "&amp;")}"' in email.html
    # The reason is escaped in HTML (an operator's "<support>" is text, not a tag).
    if kind != CONFIRMED:
        assert "&lt;support&gt;" in email.html and "<support>" not in email.html


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_no_template_syntax_or_missing_values_leak_and_lines_wrap(
    renderer: Renderer, kind: str, language: str
) -> None:
    email = renderer.render(make(kind, language))
    for part in (email.subject, email.text, html_text(email.html)):
        words = re.sub(r"https?://\S+|\S+@example\.com", " ", part)
        for marker in ("{{", "}}", "{%", "%}", "%(", ")s", "None", "Undefined", "_"):
            assert marker not in words, f"{marker!r} leaked into {kind} ({language})"
    assert max(len(line) for line in email.text.splitlines() if "://" not in line) <= 76


@pytest.mark.parametrize("language", ["fr", "de"])
@pytest.mark.parametrize("kind", KINDS)
def test_translations_differ_from_english(renderer: Renderer, kind: str, language: str) -> None:
    english = renderer.render(make(kind))
    other = renderer.render(make(kind, language))
    assert other.subject != english.subject
    english_lines = {line for line in english.text.splitlines() if len(line) > 25 and "://" not in line}
    english_lines.discard(f"Why: {REASON}")
    assert not english_lines & set(other.text.splitlines())
    assert f'lang="{language}' in other.html


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("choice", [None, "step_up", "annual_lock", "downgrade", "none"])
def test_html_and_text_say_the_same(renderer: Renderer, kind: str, language: str, choice: str | None) -> None:
    if kind == CONFIRMED and choice is None:
        return
    email = renderer.render(make(kind, language, choice=choice))
    text = flat(email.text)
    paragraphs = re.findall(r"<p(?![^>]*fallback)[^>]*>(.*?)</p>", email.html, flags=re.S)
    assert len(paragraphs) >= 4
    for paragraph in paragraphs:
        # A choice's link label (its text counterpart is "label: URL" on the next line).
        body = re.sub(r'<a [^>]*href="https://acme\.example/l/[^"]*"[^>]*>.*?</a>', "", paragraph, flags=re.S)
        assert html_text(body) in text


def test_the_notice_in_english_reads_right(renderer: Renderer) -> None:
    email = renderer.render(make(NOTICE))
    text = flat(email.text)
    assert email.subject == "The price of your Acme Pro plan changes to €59.00 a month on March 1, 2027"
    assert (
        "We're changing the price of the Pro plan. You currently pay €49.00 a month. "
        "From Monday, March 1, 2027, you'll pay €59.00 a month." in text
    )
    assert f"Why: {REASON}" in text
    assert "Step up gradually: pay €53.10 a month for 3 months, then €59.00 a month." in text
    assert "Keep today's price by switching to yearly billing: €499.80 a year." in text
    assert "Move to the Basic plan at €39.00 a month." in text
    assert "If you do nothing, that's what happens." in text
    assert f"Choose the step-up: {LINKS['step_up']}" in text


def test_a_notice_without_offers_only_informs(renderer: Renderer) -> None:
    email = renderer.render(make(NOTICE, links={"manage": LINKS["manage"]}, offers={}))
    text = flat(email.text)
    assert "There's nothing you need to do." in text
    assert "Prefer another option" not in text and "Step up" not in text


@pytest.mark.parametrize(
    ("choice", "sentence"),
    [
        ("step_up", "As you chose, you'll pay €53.10 a month for 3 months, then €59.00 a month."),
        ("annual_lock", "As you chose, you'll switch to yearly billing at €499.80 a year."),
        ("downgrade", "As you chose, you'll move to the Basic plan at €39.00 a month."),
        ("none", "From then on, you'll pay €59.00 a month instead of €49.00 a month."),
        (None, "From then on, you'll pay €59.00 a month instead of €49.00 a month."),
    ],
)
def test_the_reminder_states_the_choice_made(renderer: Renderer, choice: str | None, sentence: str) -> None:
    email = renderer.render(make(REMINDER, choice=choice))
    text = flat(email.text)
    assert email.subject == "Reminder: your Acme price changes to €59.00 a month on March 1, 2027"
    assert sentence in text
    assert ("Changed your mind?" in text) == (choice not in (None, "none"))


@pytest.mark.parametrize(
    ("choice", "sentence"),
    [
        ("step_up", "Thank you! From Monday, March 1, 2027, you'll pay €53.10 a month for 3 months"),
        ("annual_lock", "your plan is billed yearly at €499.80 a year."),
        ("downgrade", "you'll be on the Basic plan at €39.00 a month."),
        ("none", "your Pro plan costs €59.00 a month."),
    ],
)
def test_the_confirmation_states_the_choice(renderer: Renderer, choice: str, sentence: str) -> None:
    email = renderer.render(make(CONFIRMED, choice=choice))
    assert sentence in flat(email.text)
    assert email.subject == "Your choice for your Acme subscription is confirmed"


@pytest.mark.parametrize(
    ("currency", "old", "new"), [("JPY", "¥4,900", "¥5,900"), ("BHD", "BHD4.900", "BHD5.900")]
)
def test_amounts_use_each_currencys_exponent(renderer: Renderer, currency: str, old: str, new: str) -> None:
    text = flat(renderer.render(make(NOTICE, currency=currency)).text)
    assert f"{old} a month" in text and f"{new} a month" in text


def test_french_and_german_read_right(renderer: Renderer) -> None:
    fr = flat(renderer.render(make(NOTICE, "fr")).text)
    assert "À partir du lundi 1 mars 2027, vous paierez 59,00 € par mois." in fr
    assert "payez 53,10 € par mois pendant 3 mois, puis 59,00 € par mois." in fr
    de = flat(renderer.render(make(NOTICE, "de")).text)
    assert "Ab Montag, 1. März 2027 zahlen Sie 59,00 € pro Monat." in de
    assert "Sie zahlen 3 Monate lang 53,10 € pro Monat, danach 59,00 € pro Monat." in de


@pytest.mark.parametrize(
    ("notice", "field"),
    [
        (dict(kind="price_nope"), "kind"),
        (dict(facts={**FACTS, "applies_at": None}), "facts.applies_at"),
        (dict(facts={**FACTS, "old_amount_minor": "49"}), "facts.old_amount_minor"),
        (dict(facts={**FACTS, "choice": "free_lunch"}), "facts.choice"),
        (dict(facts={**FACTS, "offers": {}}), "facts.offers.step_up"),
        (
            dict(facts={**FACTS, "offers": {**FACTS["offers"], "step_up": {"months": 3}}}),
            "facts.offers.step_up",
        ),
        (dict(links={"manage": "javascript:alert(1)"}), "links.manage"),
        (dict(links={"free": "https://x.example"}), "links.free"),
    ],
)
def test_a_notice_that_cannot_be_written_is_refused_naming_the_field(
    renderer: Renderer, notice: dict[str, Any], field: str
) -> None:
    fields: dict[str, Any] = {
        "kind": NOTICE,
        "customer_name": "Ada",
        "customer_email": "ada@example.com",
        "facts": FACTS,
        "links": LINKS,
        **notice,
    }
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}"):
        renderer.render(PriceNotice(**fields))
    assert CONFIRMED in KINDS


@pytest.mark.parametrize(
    ("locale", "expected"), [("en", "3 months"), ("pt", "3 meses"), ("pt_BR", "3 meses")]
)
def test_step_up_duration_is_words_in_every_language(locale: str, expected: str) -> None:
    """CLDR lacks the long form of "months" in Portuguese: Babel would print "3 duration-month"."""
    from babel import Locale

    from dunning.workflows.price_migrations.notices import _months

    assert _months(3, Locale.parse(locale)) == expected
