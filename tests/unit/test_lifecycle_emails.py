"""Rendering of lifecycle notices (renewals, card expiry, annual offer, trials, upgrades) in every language.

The real templates and catalogs from the repository's ``templates/`` folder,
through the same ``Renderer.render`` the failed-payment emails use; nothing is mocked.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dunning.mail import Renderer
from dunning.workflows.lifecycle.notices import KINDS, LINK_PURPOSES, VARIANTS, LifecycleNotice, link_names

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
LANGUAGES = ("en", "fr", "de")
ZONE = "America/Los_Angeles"

# 02:00 UTC on the 13th is still the evening of the 12th in Los Angeles: a date printed in UTC is off by one.
AT = "2027-01-13T02:00:00Z"
NEXT_CHARGE_AT = "2027-02-13T02:00:00Z"

DATE = {"en": "Tuesday, January 12, 2027", "fr": "mardi 12 janvier 2027", "de": "Dienstag, 12. Januar 2027"}
SHORT_DATE = {"en": "January 12, 2027", "fr": "12 janvier 2027", "de": "12. Januar 2027"}
TIME = {
    "en": "6:00 PM (Los Angeles time)",
    "fr": "18:00 (heure de Los Angeles)",
    "de": "18:00 Uhr (Ortszeit Los Angeles)",
}
UTC_DATES = ("January 13, 2027", "13 janvier 2027", "13. Januar 2027")
AMOUNT = {"en": "€49.00", "fr": "49,00 €", "de": "49,00 €"}
CARD = {
    "en": "Your Visa card ending in 4242",
    "fr": "Votre carte Visa se terminant par 4242",
    "de": "Ihre Karte (Visa) mit der Endung 4242",
}
MONTH = {"en": "December 2026", "fr": "décembre 2026", "de": "Dezember 2026"}

LINKS = {
    "manage": "https://acme.example/l/manage?token=m1&step=2",
    "update_card": "https://acme.example/l/card?token=c1&step=2",
    "accept_offer": "https://acme.example/l/offer?token=o1&step=2",
    "resubscribe": "https://acme.example/l/back?token=r1&step=2",
}

_CARD_FACTS = {"card_brand": "visa", "card_last4": "4242"}
_NO_CARD = {"card_brand": None, "card_last4": None}
FACTS: dict[str, dict[str, Any]] = {
    "renewal_notice": {
        "renews_at": AT,
        "amount_minor": 4900,
        "currency": "EUR",
        "plan": "Pro",
        "interval": "year",
        "interval_count": 1,
        **_CARD_FACTS,
    },
    "card_expiring": {
        "expires_at": "2027-01-01T00:00:00Z",
        "exp_month": 12,
        "exp_year": 2026,
        "renews_at": AT,
        "amount_minor": 4900,
        "currency": "EUR",
        **_CARD_FACTS,
    },
    "annual_offer": {
        "plan": "Pro",
        "amount_minor": 4900,
        "currency": "EUR",
        "annual_price_minor": 49980,
        "saving_minor": 8820,
        "discount_percent": 15,
        "months_free": None,
    },
    "annual_switch_confirmed": {
        "plan": "Pro",
        "annual_price_minor": 4900,
        "currency": "EUR",
        "effective_at": AT,
    },
    "trial_reminder": {
        "trial_ends_at": AT,
        "plan": "Pro",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        **_CARD_FACTS,
    },
    "trial_ended": {
        "trial_ended_at": AT,
        "plan": "Pro",
        "amount_minor": 4900,
        "currency": "EUR",
        "next_charge_at": NEXT_CHARGE_AT,
    },
    "upgrade_ending": {
        "upgrade_plan": "Business",
        "revert_to": "Pro",
        "ends_at": AT,
        "price_difference_minor": 4900,
        "currency": "EUR",
    },
    "upgrade_reverted": {"upgrade_plan": "Business", "revert_to": "Pro", "ended_at": AT},
}

# (kind, variant, fact overrides, what the email must show: date, time, amount, card, month)
CASES: list[tuple[str, str | None, dict[str, Any], tuple[str, ...]]] = [
    ("renewal_notice", None, {}, ("date", "short_date", "amount", "card")),
    ("card_expiring", None, {}, ("date", "amount", "card", "month")),
    ("annual_offer", None, {}, ("amount",)),
    ("annual_switch_confirmed", None, {}, ("date", "amount")),
    ("trial_reminder", "card", {}, ("date", "short_date", "time", "amount", "card")),
    ("trial_reminder", "no_card", _NO_CARD, ("date", "short_date", "time", "amount")),
    ("trial_ended", "converted", {}, ("date", "amount")),
    ("trial_ended", "lapsed", {}, ("date", "amount")),
    ("upgrade_ending", None, {}, ("date", "short_date", "time", "amount")),
    ("upgrade_reverted", None, {}, ("date",)),
]
CASE_IDS = [f"{kind}-{variant}" for kind, variant, _, _ in CASES]


def make_notice(kind: str, variant: str | None = None, **overrides: Any) -> LifecycleNotice:
    """A complete notice of ``kind``; ``facts=`` entries are merged into the kind's facts, other fields replace."""
    facts = {**FACTS[kind], **overrides.pop("facts", {})}
    fields: dict[str, Any] = {
        "kind": kind,
        "variant": variant,
        "customer_name": "Ada",
        "customer_email": "ada@example.com",
        "locale": "en",
        "timezone": ZONE,
        "facts": facts,
        "links": {name: LINKS[name] for name in link_names(kind, variant)},
    }
    fields.update(overrides)
    return LifecycleNotice(**fields)


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
@pytest.mark.parametrize(("kind", "variant", "facts", "shows"), CASES, ids=CASE_IDS)
def test_every_kind_renders_local_dates_amounts_card_and_links(
    renderer: Renderer,
    kind: str,
    variant: str | None,
    facts: dict[str, Any],
    shows: tuple[str, ...],
    language: str,
) -> None:
    email = renderer.render(make_notice(kind, variant, locale=language, facts=facts))

    assert email.subject.strip() and "\n" not in email.subject
    text, shown = flat(email.text), html_text(email.html)
    for part in (text, shown):
        assert "Ada" in part
        if "date" in shows:
            assert norm(DATE[language]) in part
        if "time" in shows:
            assert norm(TIME[language]) in part
        if "amount" in shows:
            assert AMOUNT[language] in part
        if "card" in shows:
            assert CARD[language] in part
        else:
            assert "4242" not in part
        if "month" in shows:
            assert MONTH[language] in part
        for utc_date in UTC_DATES:
            assert utc_date not in part, "a date was printed in UTC, not in the customer's zone"
        assert "ada@example.com" in part and "support@example.com" in part
    if "short_date" in shows:
        assert SHORT_DATE[language] in norm(email.subject)
    # One button; every link of the kind is in both bodies (the text one as a URL), and no other link is.
    assert email.html.count('class="button"') == 1
    wanted = link_names(kind, variant)
    assert f'class="button" href="{LINKS[wanted[0]].replace("&", "&amp;")}"' in email.html
    for name, url in LINKS.items():
        if name in wanted:
            assert url in email.text
            assert f'href="{url.replace("&", "&amp;")}"' in email.html
        else:
            assert url not in email.text and url.replace("&", "&amp;") not in email.html


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("kind", "variant", "facts", "shows"), CASES, ids=CASE_IDS)
def test_no_template_syntax_or_missing_values_leak(
    renderer: Renderer,
    kind: str,
    variant: str | None,
    facts: dict[str, Any],
    shows: tuple[str, ...],
    language: str,
) -> None:
    email = renderer.render(make_notice(kind, variant, locale=language, facts=facts))
    for part in (email.subject, email.text, html_text(email.html)):
        # Links and addresses may hold anything; the words around them may not.
        words = re.sub(r"https?://\S+|\S+@example\.com", " ", part)
        for marker in ("{{", "}}", "{%", "%}", "%(", ")s", "None", "Undefined", "_"):
            assert marker not in words, f"{marker!r} leaked into {kind}/{variant} ({language})"
    assert max(len(line) for line in email.text.splitlines() if "://" not in line) <= 76


@pytest.mark.parametrize(("kind", "variant", "facts", "shows"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("language", ["fr", "de"])
def test_translations_differ_from_english(
    renderer: Renderer,
    kind: str,
    variant: str | None,
    facts: dict[str, Any],
    shows: tuple[str, ...],
    language: str,
) -> None:
    english = renderer.render(make_notice(kind, variant, facts=facts))
    other = renderer.render(make_notice(kind, variant, locale=language, facts=facts))
    assert other.subject != english.subject
    assert other.text != english.text and other.html != english.html
    # No English sentence survives in the translation (a missing msgstr falls back to English).
    english_lines = {line for line in english.text.splitlines() if len(line) > 25 and "://" not in line}
    assert not english_lines & set(other.text.splitlines())
    assert f'lang="{language}' in other.html


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("kind", "variant", "facts", "shows"), CASES, ids=CASE_IDS)
def test_html_and_text_say_the_same(
    renderer: Renderer,
    kind: str,
    variant: str | None,
    facts: dict[str, Any],
    shows: tuple[str, ...],
    language: str,
) -> None:
    email = renderer.render(make_notice(kind, variant, locale=language, facts=facts))
    text = flat(email.text)
    paragraphs = re.findall(r"<p(?![^>]*fallback)[^>]*>(.*?)</p>", email.html, flags=re.S)
    assert len(paragraphs) >= 4  # the brand, the greeting, the body, the sign-off
    for paragraph in paragraphs:
        assert html_text(paragraph) in text


def test_renewal_in_english_reads_right(renderer: Renderer) -> None:
    email = renderer.render(make_notice("renewal_notice"))
    text = flat(email.text)
    assert email.subject == "Your Acme subscription renews on January 12, 2027 for €49.00"
    assert "Your Pro plan renews automatically for another year on Tuesday, January 12, 2027." in text
    assert "Your Visa card ending in 4242 will be charged €49.00." in text
    assert (
        "change your plan or cancel, you can do so in your account before Tuesday, January 12, 2027" in text
    )
    assert f"Manage your subscription: {LINKS['manage']}" in text
    assert email.text.startswith("Hi Ada,\n\n")


def test_renewal_without_a_card_says_so(renderer: Renderer) -> None:
    text = flat(renderer.render(make_notice("renewal_notice", facts=_NO_CARD)).text)
    assert "There's no card on file for the renewal payment of €49.00." in text
    assert "Please add one before Tuesday, January 12, 2027" in text
    assert "will be charged" not in text


def test_monthly_renewal_does_not_say_another_year(renderer: Renderer) -> None:
    text = flat(renderer.render(make_notice("renewal_notice", facts={"interval": "month"})).text)
    assert "Your Pro plan renews automatically on Tuesday, January 12, 2027." in text
    assert "year" not in text


def test_renewal_in_french_and_german(renderer: Renderer) -> None:
    fr = renderer.render(make_notice("renewal_notice", locale="fr"))
    assert norm(fr.subject) == "Votre abonnement Acme sera renouvelé le 12 janvier 2027 pour 49,00 €"
    assert "Votre carte Visa se terminant par 4242 sera débitée de 49,00 €." in flat(fr.text)
    de = renderer.render(make_notice("renewal_notice", locale="de"))
    assert "Ihre Karte (Visa) mit der Endung 4242 wird mit 49,00 € belastet." in flat(de.text)
    assert "am Dienstag, 12. Januar 2027" in flat(de.text)


def test_card_expiry_names_the_month_and_the_charge_after_it(renderer: Renderer) -> None:
    email = renderer.render(make_notice("card_expiring"))
    text = flat(email.text)
    assert email.subject == "Your card for Acme expires at the end of December 2026"
    assert "Your Visa card ending in 4242 expires at the end of December 2026." in text
    assert (
        "Your next payment of €49.00 is due on Tuesday, January 12, 2027, after the card has expired" in text
    )
    assert f"Update your card: {LINKS['update_card']}" in text


def test_card_expiry_without_a_known_renewal_leaves_that_sentence_out(renderer: Renderer) -> None:
    text = flat(renderer.render(make_notice("card_expiring", facts={"renews_at": None})).text)
    assert "next payment" not in text
    assert "expires at the end of December 2026" in text
    assert "Please update your card before then" in text


@pytest.mark.parametrize(
    ("language", "saving", "annual", "discount"),
    [
        ("en", "€88.20", "€499.80", "That's 15% off."),
        ("fr", "88,20 €", "499,80 €", "Cela représente une remise de 15 %."),
        ("de", "88,20 €", "499,80 €", "Das sind 15 % Rabatt."),
    ],
)
def test_annual_offer_states_the_saving_in_money(
    renderer: Renderer, language: str, saving: str, annual: str, discount: str
) -> None:
    email = renderer.render(make_notice("annual_offer", locale=language))
    assert saving in norm(email.subject)
    for part in (flat(email.text), html_text(email.html)):
        assert saving in part and annual in part and discount in part


def test_annual_offer_in_english_reads_right(renderer: Renderer) -> None:
    email = renderer.render(make_notice("annual_offer"))
    text = flat(email.text)
    assert email.subject == "Save €88.20 a year on Acme with yearly billing"
    assert "You currently pay €49.00 a month for your Pro plan, which comes to €588.00 a year." in text
    assert "With yearly billing you pay €499.80 once a year instead, and save €88.20. That's 15% off." in text
    assert "at the end of your current billing period" in text
    # The offer is the button; the account is a plain link after it, in the text with its URL.
    assert f"Switch to yearly billing: {LINKS['accept_offer']}" in text
    assert f"Manage your subscription: {LINKS['manage']}" in text
    assert text.index(LINKS["accept_offer"]) < text.index(LINKS["manage"])
    html = email.html
    assert html.index('class="button"') < html.index(LINKS["manage"].replace("&", "&amp;"))


def test_annual_offer_with_months_free(renderer: Renderer) -> None:
    facts = {"discount_percent": None, "months_free": 2, "annual_price_minor": 49000, "saving_minor": 9800}
    text = flat(renderer.render(make_notice("annual_offer", facts=facts)).text)
    assert "pay €490.00 once a year instead, and save €98.00. That's two months free." in text
    assert "%" not in text and " off." not in text


def test_annual_offer_without_an_account_link_still_says_nothing_is_needed(renderer: Renderer) -> None:
    email = renderer.render(make_notice("annual_offer", links={"accept_offer": LINKS["accept_offer"]}))
    assert "Prefer to keep paying monthly? Then there's nothing you need to do." in flat(email.text)
    assert "Manage your subscription" not in email.text
    assert email.html.count('class="button"') == 1


def test_trial_reminder_with_a_card_says_what_will_be_charged(renderer: Renderer) -> None:
    email = renderer.render(make_notice("trial_reminder", "card"))
    text = flat(email.text)
    assert email.subject == "Your Acme trial ends on January 12, 2027, then €49.00 a month"
    assert "ends on Tuesday, January 12, 2027 at 6:00 PM (Los Angeles time)." in text
    assert (
        "Your Visa card ending in 4242 will then be charged €49.00, "
        "and your subscription continues automatically at €49.00 a month." in text
    )


def test_trial_reminder_without_a_card_says_exactly_what_happens(renderer: Renderer) -> None:
    email = renderer.render(make_notice("trial_reminder", "no_card", facts=_NO_CARD))
    text = flat(email.text)
    assert email.subject == "Your Acme trial ends on January 12, 2027: add a card to continue"
    assert "nothing will be charged" in text
    assert "your subscription ends too, and you'll no longer have access to the Pro plan" in text
    assert "add a card before then. It costs €49.00 a month" in text
    assert f"Add a card: {LINKS['update_card']}" in text


@pytest.mark.parametrize(
    ("interval", "count", "phrase"),
    [("year", 1, "€49.00 a year"), ("month", 3, "€49.00 every 3 months"), ("fortnight", 1, "€49.00")],
)
def test_price_names_the_billing_period(renderer: Renderer, interval: str, count: int, phrase: str) -> None:
    facts = {"interval": interval, "interval_count": count}
    text = flat(renderer.render(make_notice("trial_reminder", "card", facts=facts)).text)
    assert f"continues automatically at {phrase}." in text


def test_trial_ended_converted_and_lapsed(renderer: Renderer) -> None:
    converted = flat(renderer.render(make_notice("trial_ended", "converted")).text)
    assert "Your free trial ended on Tuesday, January 12, 2027, and your Pro plan is now active" in converted
    assert "Your next payment of €49.00 is due on Friday, February 12, 2027." in converted
    lapsed_email = renderer.render(make_notice("trial_ended", "lapsed"))
    lapsed = flat(lapsed_email.text)
    assert lapsed_email.subject == "Your Acme trial has ended"
    assert "you have not been charged" in lapsed and "next payment" not in lapsed
    assert f"Subscribe to Pro: {LINKS['resubscribe']}" in lapsed


def test_upgrade_ending_states_the_monthly_difference_when_known(renderer: Renderer) -> None:
    text = flat(renderer.render(make_notice("upgrade_ending")).text)
    assert "Your free upgrade to the Business plan ends on Tuesday, January 12, 2027 at 6:00 PM" in text
    assert "goes back to the Pro plan automatically" in text
    assert "it costs €49.00 a month more than Pro." in text


@pytest.mark.parametrize("difference", [None, 0, -500])
def test_upgrade_ending_without_a_positive_difference_leaves_the_sentence_out(
    renderer: Renderer, difference: int | None
) -> None:
    email = renderer.render(make_notice("upgrade_ending", facts={"price_difference_minor": difference}))
    for part in (flat(email.text), html_text(email.html)):
        assert "If you'd like to keep Business, you can switch in your account." in part
        assert "more than" not in part and "€" not in part


def test_upgrade_reverted_reads_right(renderer: Renderer) -> None:
    email = renderer.render(make_notice("upgrade_reverted"))
    assert email.subject == "Your free Business upgrade has ended"
    assert "ended on Tuesday, January 12, 2027, and your account is back on the Pro plan." in flat(email.text)


def test_annual_switch_confirmed_reads_right(renderer: Renderer) -> None:
    text = flat(renderer.render(make_notice("annual_switch_confirmed")).text)
    assert "Your Pro plan switches to yearly billing on Tuesday, January 12, 2027." in text
    assert "From then on, you pay €49.00 once a year." in text


def test_other_currencies_keep_their_precision(renderer: Renderer) -> None:
    facts = {"currency": "JPY", "amount_minor": 4900, "annual_price_minor": 49980, "saving_minor": 8820}
    text = flat(renderer.render(make_notice("annual_offer", facts=facts)).text)
    assert "¥4,900 a month" in text and "¥8,820" in text and "4,900.00" not in text


def test_naive_and_offset_datetimes_are_read_as_the_same_instant(renderer: Renderer) -> None:
    reference = renderer.render(make_notice("renewal_notice"))
    for value in ("2027-01-13T02:00:00", "2027-01-13T02:00:00+00:00", "2027-01-13T03:00:00+01:00"):
        assert renderer.render(make_notice("renewal_notice", facts={"renews_at": value})) == reference


def test_customer_supplied_text_is_escaped_in_html(renderer: Renderer) -> None:
    email = renderer.render(
        make_notice("upgrade_ending", customer_name="<b>Ada</b>", facts={"revert_to": "<i>x"})
    )
    assert "<b>" not in email.html and "<i>" not in email.html
    assert "&lt;i&gt;x" in email.html


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "payment_failed"}, "kind"),
        ({"kind": "renewal_notice", "variant": "card"}, "variant"),
        ({"kind": "trial_reminder", "variant": None}, "variant"),
        ({"facts": {"renews_at": None}}, "facts.renews_at"),
        ({"facts": {"renews_at": "next tuesday"}}, "facts.renews_at"),
        ({"facts": {"amount_minor": "49.00"}}, "facts.amount_minor"),
        ({"facts": {"amount_minor": True}}, "facts.amount_minor"),
        ({"facts": {"currency": None}}, "facts.currency"),
        ({"links": {"manage": "javascript:alert(1)"}}, "links.manage"),
        ({"links": {"cancel_now": "https://acme.example/"}}, "links.cancel_now"),
    ],
)
def test_programming_errors_are_refused_naming_the_field(
    renderer: Renderer, overrides: dict[str, Any], field: str
) -> None:
    kind = overrides.pop("kind", "renewal_notice")
    variant = overrides.pop("variant", None)
    notice = replace(make_notice("renewal_notice", **overrides), kind=kind, variant=variant)
    with pytest.raises(ValueError, match=re.escape(field)):
        renderer.render(notice)


def test_without_the_primary_link_there_is_no_button(renderer: Renderer) -> None:
    email = renderer.render(make_notice("renewal_notice", links={}))
    assert 'class="button"' not in email.html
    assert "http" not in email.text


def test_kinds_variants_and_links_match_the_spec() -> None:
    assert KINDS == (
        "renewal_notice",
        "card_expiring",
        "annual_offer",
        "annual_switch_confirmed",
        "trial_reminder",
        "trial_ended",
        "upgrade_ending",
        "upgrade_reverted",
    )
    assert VARIANTS == {"trial_reminder": ("card", "no_card"), "trial_ended": ("converted", "lapsed")}
    assert LINK_PURPOSES == {
        "manage": "manage_account",
        "update_card": "update_payment_method",
        "accept_offer": "accept_annual_offer",
        "resubscribe": "manage_account",
    }
    cases = {(kind, variant) for kind, variant, _, _ in CASES}
    assert cases == {(kind, variant) for kind in KINDS for variant in VARIANTS.get(kind, (None,))}
    assert link_names("annual_offer", None) == ("accept_offer", "manage")
    assert link_names("trial_reminder", "no_card") == ("update_card",)
    assert link_names("trial_ended", "lapsed") == ("resubscribe",)
    for kind, variant in cases:
        assert set(link_names(kind, variant)) <= set(LINK_PURPOSES)


def test_every_kind_has_both_templates() -> None:
    for kind in KINDS:
        assert (TEMPLATES / "email" / "lifecycle" / f"{kind}.html").is_file()
        assert (TEMPLATES / "email" / "lifecycle" / f"{kind}.txt").is_file()


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"])
def test_card_expiry_month_is_the_same_in_every_zone(renderer: Renderer, zone: str) -> None:
    """A card is good through the end of its month wherever the customer is: no zone moves the month."""
    email = renderer.render(make_notice("card_expiring", timezone=zone))
    assert "expires at the end of December 2026." in flat(email.text)


def test_missing_profile_locale_and_zone_fall_back_to_english_and_utc(renderer: Renderer) -> None:
    """A customer profile may hold no locale or zone: English, and dates in UTC (the 13th), not a failure."""
    email = renderer.render(make_notice("renewal_notice", locale=None, timezone=None))
    assert email.subject == "Your Acme subscription renews on January 13, 2027 for €49.00"
    assert email.text.startswith("Hi Ada,")
