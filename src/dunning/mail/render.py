"""Render a notice into a localized email (subject, HTML and plain text), for any workflow.

A notice is anything with ``kind``, ``locale``, ``timezone`` and a
``template_values(fmt)`` method (:class:`Renderable`): the workflow says which
variables its templates use, and formats them with the :class:`Formatter` it is
handed (money, dates and times in the customer's locale and timezone, card
phrases, gettext). The renderer owns languages, templates, the layout and CSS
inlining; it knows no workflow.

Templates live in the repository's ``templates/email`` folder (shipped in the
wheel as ``dunning/_templates``); translations are gettext catalogs under
``templates/locale``, compiled in memory when a language is first used so that
no build step (and no committed ``.mo`` file) can go stale.

Everything the templates print is formatted here, once, in the customer's
locale and timezone: the templates only choose sentences.
"""

from __future__ import annotations

import gettext as gettext_module
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import css_inline
from babel import Locale
from babel.dates import format_date, format_time, get_timezone_location
from babel.numbers import format_currency, get_currency_precision
from jinja2 import Environment, TemplateNotFound

import dunning

from .locales import SHIPPED_LANGUAGES, SOURCE_LANGUAGE, resolve_locale
from .templates import SharedBytecode, find_catalogs, make_environment, make_loader, translations_for
from .templates import load_translations as load_translations  # re-exported: its home before templates.py


def N_(message: str) -> str:
    """Mark a string for extraction by pybabel without translating it here."""
    return message


_TEXT_WIDTH = 76
_SIG_SEPARATOR = "-- "

_CARD_BRANDS = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "American Express",
    "american_express": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "diners_club": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
    "cartes_bancaires": "Cartes Bancaires",
    "maestro": "Maestro",
}

# Card phrases are built here rather than in the templates because the HTML and
# text templates both need them; they start a sentence, so they are capitalized.
_CARD_BRAND_LAST4 = N_("Your %(brand)s card ending in %(last4)s")
_CARD_LAST4 = N_("Your card ending in %(last4)s")
_CARD_BRAND = N_("Your %(brand)s card")
_CARD = N_("Your card")
_TIME_CITY = N_("%(time)s (%(city)s time)")
_TIME_ZONE = N_("%(time)s (%(zone)s)")


@dataclass(frozen=True)
class RenderedEmail:
    """A rendered notice: a one-line subject and the two bodies of a multipart/alternative email."""

    subject: str
    html: str
    text: str


def find_templates_dir() -> Path:
    """Locate the built-in ``templates/`` folder: ``$DUNNING_BUILTIN_TEMPLATES``, the wheel's copy, or the source tree's.

    This replaces the shipped templates as a whole (for packagers and development). An operator who
    wants to change some templates sets ``DUNNING_TEMPLATES_DIR`` instead: its files come first and
    the shipped ones fill in the rest. ``DUNNING_TEMPLATES``, the old name of this variable, is read
    too (it was easy to take for the operator's folder, hence the new name).
    """
    env = os.environ.get("DUNNING_BUILTIN_TEMPLATES") or os.environ.get("DUNNING_TEMPLATES")
    if env:
        return Path(env)
    packaged = Path(dunning.__file__).parent / "_templates"
    if packaged.is_dir():
        return packaged
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "templates"
        if (candidate / "email").is_dir():
            return candidate
    raise FileNotFoundError(
        "built-in email templates not found: set DUNNING_BUILTIN_TEMPLATES to the repository's templates/ folder"
    )


def format_money(amount_minor: int, currency: str, locale: Locale | str) -> str:
    """Format an amount in minor units with the currency's own precision (JPY 0 decimals, KWD 3)."""
    code = (currency or "").strip().upper()
    digits = get_currency_precision(code)
    return format_currency(Decimal(amount_minor).scaleb(-digits), code, locale=locale)


@lru_cache(maxsize=1024)
def resolve_timezone(name: str | None) -> tzinfo:
    """The customer's zone, or UTC when the profile holds something unusable."""
    if not name or not isinstance(name, str):
        return UTC
    try:
        return ZoneInfo(name.strip())
    except (KeyError, ValueError, OSError, TypeError):
        # Bad profile data must not stop a payment notice from going out.
        return UTC


def _aware(value: datetime) -> datetime:
    # The contract says UTC-aware; a naive value is read as UTC rather than as server-local time.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _one_line(value: str) -> str:
    # Subjects become headers: no newlines (header injection), no template indentation.
    return " ".join(value.split())


def _tidy_text(value: str) -> str:
    """Normalize template whitespace and wrap long lines for plain-text mail readers."""
    out: list[str] = []
    blank = True  # drop leading blank lines
    for raw_line in value.splitlines():
        line = raw_line if raw_line == _SIG_SEPARATOR else raw_line.rstrip()
        if not line.strip():
            if not blank:
                out.append("")
            blank = True
            continue
        blank = False
        if len(line) > _TEXT_WIDTH:
            out.extend(_wrap(line, _TEXT_WIDTH))
        else:
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def _wrap(line: str, width: int) -> list[str]:
    """Greedy word wrap on ASCII spaces only.

    Unlike ``textwrap`` (several times slower) it leaves no-break spaces alone,
    so French "Rappel :" never splits, and a word longer than the width (a
    URL) stays whole: a broken link is worse than a long line.
    """
    indent = line[: len(line) - len(line.lstrip(" "))]
    lines: list[str] = []
    current = indent
    for word in line[len(indent) :].split(" "):
        if not word:
            continue
        if current.strip() and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = indent + word
        elif current.strip():
            current = f"{current} {word}"
        else:
            current = indent + word
    if current.strip():
        lines.append(current)
    return lines


class Renderer:
    """Renders notices from the Jinja2 templates, one cached environment per language.

    Thread-safe: environments are built once under a lock, and rendering only
    reads shared state.
    """

    def __init__(self, templates_dir: Path | None = None, override_dir: Path | None = None) -> None:
        self.templates_dir = Path(templates_dir) if templates_dir is not None else find_templates_dir()
        email_dir = self.templates_dir / "email"
        if not email_dir.is_dir():
            raise FileNotFoundError(f"no email templates in {email_dir}")
        #: The operator's folder (``DUNNING_TEMPLATES_DIR``): its templates and catalogs come first.
        self.override_dir = Path(override_dir) if override_dir is not None else None
        if self.override_dir is not None and not self.override_dir.is_dir():
            raise FileNotFoundError(f"DUNNING_TEMPLATES_DIR: no such folder {self.override_dir}")
        self.loader = make_loader(self.templates_dir, self.override_dir)
        # Only the shipped languages of our own folder: a stray catalog nobody checks for
        # completeness would mix English and other sentences in one email. An operator may
        # add a language on purpose (their catalog, their responsibility).
        self._catalogs = {
            language: po
            for language, po in find_catalogs(self.templates_dir).items()
            if language in SHIPPED_LANGUAGES
        }
        self._operator_catalogs = find_catalogs(self.override_dir)
        #: Languages with a catalog (shipped or the operator's), and English.
        self.languages: frozenset[str] = frozenset(
            {SOURCE_LANGUAGE, *self._catalogs, *self._operator_catalogs}
        )
        self._envs: dict[str, Environment] = {}
        self._bytecode = SharedBytecode()
        self._translations: dict[str, gettext_module.NullTranslations] = {}
        self._lock = threading.Lock()
        # Remote stylesheets are never fetched: a render must not touch the network.
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False)

    def environment(self, language: str) -> Environment:
        """The Jinja2 environment for a catalog language, built on first use."""
        env = self._envs.get(language)
        if env is not None:
            return env
        with self._lock:
            env = self._envs.get(language)
            if env is None:
                env = self._build_environment(language)
                self._envs[language] = env
        return env

    def _build_environment(self, language: str) -> Environment:
        translations = translations_for(language, self._catalogs, self._operator_catalogs)
        self._translations[language] = translations
        return make_environment(self.loader, translations, self._bytecode)

    def render(self, ctx: Renderable) -> RenderedEmail:
        """Render one notice in the customer's language and timezone."""
        language, locale = resolve_locale(ctx.locale, self.languages)
        env = self.environment(language)
        translations = self._translations[language]
        try:
            text_template = env.get_template(f"{ctx.kind}.txt")
            html_template = env.get_template(f"{ctx.kind}.html")
        except TemplateNotFound as exc:
            raise ValueError(f"kind: unknown notice kind {ctx.kind!r} (no template {exc.name})") from exc
        fmt = Formatter(locale, resolve_timezone(ctx.timezone), translations.gettext)
        territory = f"-{locale.territory}" if locale.territory else ""
        rtl = locale.text_direction == "rtl"
        values = {
            "kind": ctx.kind,
            "lang": f"{locale.language}{territory}",
            # The layout's <html dir> and its text alignment (mail clients ignore CSS "start").
            "direction": "rtl" if rtl else "ltr",
            "align": "right" if rtl else "left",
            **ctx.template_values(fmt),
        }
        action_url = values.get("action_url")
        if action_url is not None and not str(action_url).lower().startswith(("https://", "http://")):
            # Our own signed links are always http(s); anything else in a button is a bug, or worse.
            raise ValueError("action_url: expected an http(s) URL")
        # Subject and button label are defined once per kind (in the text
        # template) and shared with the HTML, so the two bodies cannot disagree.
        block_ctx = text_template.new_context(values)
        try:
            values["subject"] = _one_line("".join(text_template.blocks["subject"](block_ctx)))
            values["action_label"] = _one_line("".join(text_template.blocks["action_label"](block_ctx)))
        except Exception:
            env.handle_exception()  # as Template.render does: the traceback then shows template lines
        text = _tidy_text(text_template.render(values))
        html = self._inliner.inline(html_template.render(values))
        return RenderedEmail(subject=values["subject"], html=html, text=text)


class Renderable(Protocol):
    """What the renderer needs of a notice; each workflow's notice context provides it."""

    kind: str
    locale: str
    timezone: str

    def template_values(self, fmt: Formatter) -> dict[str, Any]:
        """Every variable the notice's templates use (besides ``kind`` and ``lang``), formatted with ``fmt``."""
        ...


@dataclass(frozen=True)
class Formatter:
    """Formats values for one customer: their locale, their timezone, their language's gettext."""

    locale: Locale
    zone: tzinfo
    gettext: Any

    def money(self, amount_minor: int, currency: str) -> str:
        """An amount in minor units, in the customer's locale (``29,00 €``, ``€29.00``)."""
        return format_money(amount_minor, currency, self.locale)

    def date(self, value: datetime | None, width: str = "full") -> str | None:
        """The date of ``value`` in the customer's timezone."""
        if value is None:
            return None
        return format_date(_aware(value).astimezone(self.zone).date(), width, locale=self.locale)

    def time(self, value: datetime | None) -> str | None:
        """The time of ``value`` in the customer's timezone, saying which (city or UTC offset)."""
        if value is None:
            return None
        zone, gettext = self.zone, self.gettext
        local = _aware(value).astimezone(zone)
        clock = format_time(local, "short", tzinfo=zone, locale=self.locale)
        key = getattr(zone, "key", "UTC")
        if "/" in key and not key.startswith("Etc/"):
            city = get_timezone_location(zone, locale=self.locale, return_city=True)
            return gettext(_TIME_CITY) % {"time": clock, "city": city}
        offset = local.utcoffset()
        seconds = int(offset.total_seconds()) if offset is not None else 0
        if seconds == 0:
            label = "UTC"
        else:
            sign = "+" if seconds > 0 else "-"
            hours, minutes = divmod(abs(seconds) // 60, 60)
            label = f"UTC{sign}{hours:02d}:{minutes:02d}"
        return gettext(_TIME_ZONE) % {"time": clock, "zone": label}

    def card(self, brand: str | None, last4: str | None) -> str:
        """'Your Visa card ending in 4242', or as much of it as the profile allows."""
        return _card_phrase(brand, last4, self.gettext)

    @staticmethod
    def one_line(value: str | None) -> str | None:
        """A customer-supplied text on one line (no CR/LF), or None when empty."""
        return _one_line(value or "") or None


def _card_phrase(brand: str | None, last4: str | None, gettext: Any) -> str:
    """'Your Visa card ending in 4242', or as much of it as the profile allows."""
    label = None
    if brand and brand.strip():
        key = brand.strip().lower().replace(" ", "_").replace("-", "_")
        label = _CARD_BRANDS.get(key) or _one_line(brand)[:30]
    digits = last4.strip() if last4 else ""
    if not re.fullmatch(r"\d{2,4}", digits):
        digits = ""  # garbage here would end up in a sentence; leave it out instead
    if label and digits:
        return gettext(_CARD_BRAND_LAST4) % {"brand": label, "last4": digits}
    if digits:
        return gettext(_CARD_LAST4) % {"last4": digits}
    if label:
        return gettext(_CARD_BRAND) % {"brand": label}
    return gettext(_CARD)
