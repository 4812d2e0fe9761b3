"""Operator overrides (``DUNNING_TEMPLATES_DIR``), the template sandbox and the start-up check of the templates.

Real templates and catalogs; an operator folder written under ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError

from dunning.engine.registry import sample_notice, workflows
from dunning.mail import Renderer
from dunning.mail.check import check_templates
from dunning.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "templates"
KINDS = [kind for w in workflows() for kind in w.notice_kinds]
LANGUAGES = ", ".join(sorted(Renderer(SHIPPED).languages))

_PO_HEADER = """msgid ""
msgstr ""
"Language: {lang}\\n"
"Content-Type: text/plain; charset=utf-8\\n"

"""


def operator_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "operator"
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    (root / "email").mkdir(parents=True, exist_ok=True)
    return root


def po(lang: str, entries: dict[str, str]) -> str:
    body = "".join(f'msgid "{k}"\nmsgstr "{v}"\n\n' for k, v in entries.items())
    return _PO_HEADER.format(lang=lang) + body


def test_shipped_templates_pass_the_check() -> None:
    renderer = Renderer(SHIPPED)
    assert len(KINDS) == 17
    assert check_templates(renderer, KINDS, sample_notice) == []


def test_every_kind_has_a_sample_and_a_kind_without_one_is_reported() -> None:
    for workflow in workflows():
        assert workflow.sample is not None, workflow.name
        for kind in workflow.notice_kinds:
            assert workflow.sample(kind, "en").kind == kind
        with pytest.raises(KeyError):
            workflow.sample("no_such_kind", "en")
    problems = check_templates(Renderer(SHIPPED), ["payment_failed", "no_such_kind"], sample_notice)
    assert problems == [
        "templates: no sample notice of no_such_kind to check it with (its workflow's samples)"
    ]


def test_an_operator_template_replaces_the_shipped_one_and_only_that(tmp_path: Path) -> None:
    shipped_txt = (SHIPPED / "email/lifecycle/annual_offer.txt").read_text(encoding="utf-8")
    mine = shipped_txt.replace("{% block body %}", "{% block body %}\nOur own words about {{ plan }}.\n")
    root = operator_dir(tmp_path, {"email/annual_offer.txt": mine})
    renderer = Renderer(SHIPPED, override_dir=root)
    offer = renderer.render(sample_notice("annual_offer", "en"))
    assert "Our own words about Pro." in offer.text
    assert "Our own words" not in Renderer(SHIPPED).render(sample_notice("annual_offer", "en")).text
    # Another kind still comes from the shipped folder.
    assert renderer.render(sample_notice("trial_ended", "en")) == Renderer(SHIPPED).render(
        sample_notice("trial_ended", "en")
    )


def test_an_operator_layout_applies_to_every_kind(tmp_path: Path) -> None:
    layout = (SHIPPED / "email/layout.html").read_text(encoding="utf-8")
    mine = layout.replace(
        '<p class="brand">{{ product }}</p>', '<p class="brand">{{ product }} Billing Desk</p>'
    )
    assert mine != layout
    renderer = Renderer(SHIPPED, override_dir=operator_dir(tmp_path, {"email/layout.html": mine}))
    for kind in ("payment_failed", "renewal_notice", "price_change_notice"):
        assert "Acme Billing Desk" in renderer.render(sample_notice(kind, "fr")).html


def test_an_operator_catalog_overrides_some_sentences_and_keeps_ours(tmp_path: Path) -> None:
    root = operator_dir(
        tmp_path, {"locale/fr/LC_MESSAGES/messages.po": po("fr", {"Best regards,": "Bien à vous,"})}
    )
    text = Renderer(SHIPPED, override_dir=root).render(sample_notice("payment_failed", "fr")).text
    assert "Bien à vous," in text
    assert "Bien cordialement," not in text
    assert "Bonjour Ada Lovelace," in text  # every other sentence: our translation


def test_an_operator_catalog_adds_a_language(tmp_path: Path) -> None:
    root = operator_dir(
        tmp_path, {"locale/es/LC_MESSAGES/messages.po": po("es", {"Best regards,": "Saludos cordiales,"})}
    )
    renderer = Renderer(SHIPPED, override_dir=root)
    assert "es" in renderer.languages
    assert "Saludos cordiales," in renderer.render(sample_notice("renewal_notice", "es")).text


def test_the_sandbox_refuses_python_internals(tmp_path: Path) -> None:
    evil = (
        '{% extends "layout.html" %}\n{% block body %}\n'
        "<p>{{ plan.__class__.__mro__[1].__subclasses__() }}</p>\n{% endblock %}\n"
    )
    renderer = Renderer(SHIPPED, override_dir=operator_dir(tmp_path, {"email/trial_ended.html": evil}))
    with pytest.raises(SecurityError):
        renderer.render(sample_notice("trial_ended", "en"))
    problems = check_templates(renderer, KINDS, sample_notice)
    assert problems == [
        "templates: trial_ended.html line 3: SecurityError: access to attribute '__class__' of 'str' "
        f"object is unsafe. (trial_ended in {LANGUAGES})"
    ]


def test_the_check_names_the_template_and_line(tmp_path: Path) -> None:
    broken_syntax = '{% extends "layout.txt" %}\n{% block subject %}\nHi {% if %}\n{% endblock %}\n'
    missing_value = (
        '{% extends "layout.html" %}\n{% block body %}\n<p>{{ plan }}</p>\n\n<p>{{ no_such_value }}</p>\n'
        "{% endblock %}\n"
    )
    root = operator_dir(
        tmp_path,
        {
            "email/upgrade_reverted.txt": broken_syntax,
            "email/price_migrations/price_change_notice.html": missing_value,
        },
    )
    problems = check_templates(Renderer(SHIPPED, override_dir=root), KINDS, sample_notice)
    assert problems == [
        "templates: upgrade_reverted.txt line 3: Expected an expression, got 'end of statement block'",
        "templates: price_change_notice.html line 5: UndefinedError: 'no_such_value' is undefined "
        f"(price_change_notice in {LANGUAGES})",
    ]


def test_settings_read_the_operator_folder(tmp_path: Path) -> None:
    home = {"DUNNING_HOME": str(tmp_path / "home")}
    assert load_settings(home).templates_dir is None
    assert load_settings({**home, "DUNNING_TEMPLATES_DIR": str(tmp_path)}).templates_dir == tmp_path.resolve()
    with pytest.raises(ValueError, match="DUNNING_TEMPLATES_DIR: no such folder"):
        load_settings({**home, "DUNNING_TEMPLATES_DIR": str(tmp_path / "missing")})
